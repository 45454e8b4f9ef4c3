"""The wallet pool service's settings, read once from the environment at start-up."""

import re
from collections.abc import Mapping
from dataclasses import dataclass

from shared import config
from shared.auth import OPERATOR, SERVICE, WATCHER, require_credentials
from shared.settings import ServiceSettings, service_settings

# Roles the service cannot do its job without, and why: start-up refuses without a credential
# for each. Other roles (client) are optional.
REQUIRED_ROLES = {
    SERVICE: "only the order service allocates and releases wallets",
    OPERATOR: "only operators add wallets",
}
WATCHER_NEEDED = (
    "released wallets of guarded networks are reused only after a watcher reports its "
    "scanned height; or turn the guard off with WALLET_REUSE_CONFIRMATIONS=off"
)

# Blocks a watcher must scan past a wallet's release before the wallet is reused: a few
# minutes to an hour of each chain, enough for a late payer's transaction in flight to be
# seen (BTC ~10 min blocks, ETH 12 s slots (two epochs, finality), TRON 3 s blocks).
DEFAULT_REUSE_CONFIRMATIONS = {"BTC": 6, "ETH": 64, "TRON": 20}
_REUSE_VARIABLE = "WALLET_REUSE_CONFIRMATIONS"
# More than any chain needs (a day of ETH slots is 7200; finality takes 64), and far below
# what the reuse height (a bigint) could overflow at.
MAX_REUSE_CONFIRMATIONS = 10_000
_DIGITS = re.compile(r"[0-9]+")


def parse_reuse_confirmations(
    raw: str, networks: tuple[str, ...], defaults: Mapping[str, int] = DEFAULT_REUSE_CONFIRMATIONS
) -> dict[str, int | None]:
    """Per network, the watermark guard's confirmations, or None where it is off. `raw`:
    empty (the defaults), `off` or a number for every network, or `NET:N` / `NET:off`
    entries, comma-separated, over the defaults."""

    def value(text: str, where: str) -> int | None:
        if text.lower() == "off":
            return None
        # ASCII digits only (str.isdigit takes '²', which int refuses), and a bound far
        # below what would overflow the release height plus confirmations in the database.
        if not _DIGITS.fullmatch(text) or int(text) > MAX_REUSE_CONFIRMATIONS:
            raise config.ConfigError(
                f"{_REUSE_VARIABLE}: {where} must be a whole number from 0 to "
                f"{MAX_REUSE_CONFIRMATIONS} or off, got {text!r}"
            )
        return int(text)

    result: dict[str, int | None] = {n: defaults.get(n, 0) for n in networks}
    text = raw.strip()
    if not text:
        return result
    if ":" not in text:
        every = value(text, "the value")
        return dict.fromkeys(networks, every)
    for entry in text.split(","):
        network, _, setting = entry.strip().partition(":")
        network = network.strip().upper()
        if network not in networks:
            raise config.ConfigError(
                f"{_REUSE_VARIABLE}: {network!r} is not one of the supported networks "
                f"({', '.join(networks)})"
            )
        result[network] = value(setting.strip(), network)
    return result


@dataclass(frozen=True)
class PoolSettings(ServiceSettings):
    demo_wallets_per_network: int
    low_water_mark: int
    wallet_cooldown_seconds: float
    # Per network: the watermark guard's confirmations (None: off).
    reuse_confirmations: dict[str, int | None]
    hand_off_sweep_seconds: float
    metrics_refresh_seconds: float

    @classmethod
    def from_env(cls) -> "PoolSettings":
        # At least two connections: one listens for hand-offs for as long as the service runs.
        common = service_settings(
            "WALLET_POOL", "127.0.0.1:50052", "127.0.0.1:9452", min_pool_size=2
        )
        settings = cls(
            **common,
            demo_wallets_per_network=config.env_int("DEMO_WALLETS_PER_NETWORK", 5, maximum=1000),
            low_water_mark=config.env_int("POOL_LOW_WATER_MARK", 2, maximum=1_000_000),
            wallet_cooldown_seconds=config.env_float(
                "WALLET_COOLDOWN_SECONDS", 0.0, maximum=30 * 86400.0
            ),
            reuse_confirmations=parse_reuse_confirmations(
                config.env_str(_REUSE_VARIABLE, ""), common["networks"]
            ),
            hand_off_sweep_seconds=config.env_float(
                "HAND_OFF_SWEEP_SECONDS", 1.0, minimum=0.05, maximum=3600.0
            ),
            metrics_refresh_seconds=config.env_float(
                "METRICS_REFRESH_SECONDS", 5.0, minimum=0.1, maximum=3600.0
            ),
        )
        needed = dict(REQUIRED_ROLES)
        if any(c is not None for c in settings.reuse_confirmations.values()):
            needed[WATCHER] = WATCHER_NEEDED
        require_credentials(settings.tokens, needed)
        return settings
