"""Parsing request fields into domain values, with errors that name the field."""

import uuid

from shared.errors import InvalidArgument


def parse_uuid(value: str, field: str) -> uuid.UUID:
    if not value:
        raise InvalidArgument(field, "is required")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(field, f"{value[:64]!r} is not a UUID") from None


def parse_text(value: str, field: str, max_length: int, *, required: bool = False) -> str:
    """Stripped, printable text of bounded length (PostgreSQL text cannot hold NUL)."""
    text = value.strip()
    if required and not text:
        raise InvalidArgument(field, "is required")
    if len(text) > max_length:
        raise InvalidArgument(field, f"longer than {max_length} characters")
    if not text.isprintable():
        raise InvalidArgument(field, "contains control characters")
    return text
