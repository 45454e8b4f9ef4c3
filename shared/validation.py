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
