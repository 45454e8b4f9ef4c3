"""Parsing request fields into domain values, with errors that name the field."""

import re
import uuid
from decimal import Decimal

from shared.errors import InvalidArgument

_AMOUNT = re.compile(r"^([0-9]{1,24})(\.[0-9]{1,18})?$")


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


def parse_decimal_amount(text: str, field: str) -> Decimal:
    """A positive plain decimal ("0.015"); no signs, exponents or separators."""
    value = text.strip()
    if not value:
        raise InvalidArgument(field, "is required")
    if not _AMOUNT.match(value):
        raise InvalidArgument(
            field, f"{value[:40]!r} is not a plain decimal like 0.015 (up to 18 decimals)"
        )
    amount = Decimal(value)
    if amount <= 0:
        raise InvalidArgument(field, "must be greater than zero")
    return amount
