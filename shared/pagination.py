"""Page sizes and opaque keyset page tokens shared by the List RPCs."""

import base64
import binascii
import json
from typing import Any

from shared.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
# Tokens this service issues are far shorter; the cap keeps hostile ones cheap to refuse.
MAX_PAGE_TOKEN_LENGTH = 512


def page_size(requested: int) -> int:
    """0 means the default; larger than the maximum is capped to it."""
    if requested < 0:
        raise InvalidArgument("page_size", "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_page_token(position: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode()


def foreign_page_token() -> InvalidArgument:
    return InvalidArgument("page_token", "is not a token this service issued")


def decode_page_token(token: str) -> dict[str, Any]:
    """The position a token encodes; its values are the caller's to check."""
    if len(token) > MAX_PAGE_TOKEN_LENGTH:
        raise foreign_page_token()
    try:
        position = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, binascii.Error, RecursionError):
        position = None
    if not isinstance(position, dict):
        raise foreign_page_token()
    return position
