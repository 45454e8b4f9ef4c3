"""Network codes both services accept."""

import re

from shared.errors import InvalidArgument

DEFAULT_NETWORKS = ("BTC", "ETH", "TRON")
_NETWORK_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,15}$")


def parse_network(value: str, supported: tuple[str, ...], field: str = "network") -> str:
    """The network code in canonical (upper) case, if it is one of `supported`."""
    code = value.strip().upper()
    if not code:
        raise InvalidArgument(field, "is required")
    if not _NETWORK_CODE.match(code):
        raise InvalidArgument(field, f"{value[:32]!r} is not a network code")
    if code not in supported:
        raise InvalidArgument(
            field, f"unsupported network {code!r}; supported: {', '.join(supported)}"
        )
    return code
