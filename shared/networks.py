"""Network codes both services accept."""

import re

from shared import config
from shared.errors import InvalidArgument

# The networks whose addresses the wallet pool can check (shared/addresses.py,
# kept in step by a unit test). SUPPORTED_NETWORKS may only name these.
KNOWN_NETWORKS = ("BTC", "ETH", "TRON")
_NETWORK_CODE = re.compile(r"^[A-Z][A-Z0-9_]{1,15}$")


def supported_networks() -> tuple[str, ...]:
    """SUPPORTED_NETWORKS, read the same way by both services: any network without an
    address check is a configuration error, so the two cannot disagree at run time."""
    networks = tuple(dict.fromkeys(config.env_list("SUPPORTED_NETWORKS", KNOWN_NETWORKS)))
    known = ", ".join(KNOWN_NETWORKS)
    if not networks:
        raise config.ConfigError(f"SUPPORTED_NETWORKS names no network; known: {known}")
    unknown = [network for network in networks if network not in KNOWN_NETWORKS]
    if unknown:
        raise config.ConfigError(
            f"SUPPORTED_NETWORKS: no address check for {', '.join(unknown)}; known: {known}"
        )
    return networks


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
