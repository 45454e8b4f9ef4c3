"""The wallet pool service's settings, read once from the environment at start-up."""

from dataclasses import dataclass

from shared import config
from shared.auth import OPERATOR, SERVICE, Principal, load_tokens, require_credentials
from shared.embedded_db import DEFAULT_DATA_DIR
from shared.networks import supported_networks
from shared.tls import ServerTls
from shared.tracing import TracingSettings, tracing_settings

# Roles the service cannot do its job without, and why: start-up refuses without a credential
# for each. Other roles (client) are optional.
REQUIRED_ROLES = {
    SERVICE: "only the order service allocates and releases wallets",
    OPERATOR: "only operators add wallets",
}


@dataclass(frozen=True)
class PoolSettings:
    environment: str
    database_url: str | None
    # A connection of its own for LISTEN (None: one of the pool's connections listens).
    listen_database_url: str | None
    statement_cache_size: int
    address: str
    tokens: dict[str, Principal]
    networks: tuple[str, ...]
    demo_wallets_per_network: int
    low_water_mark: int
    wallet_cooldown_seconds: float
    hand_off_sweep_seconds: float
    db_pool_size: int
    metrics_addr: str | None
    metrics_refresh_seconds: float
    health_check_seconds: float
    tls: ServerTls | None
    embedded_data_dir: str
    shutdown_grace_seconds: float
    shutdown_drain_seconds: float
    # None: tracing off (the OTEL_* variables do not ask for it).
    tracing: TracingSettings | None

    @classmethod
    def from_env(cls) -> "PoolSettings":
        settings = cls(
            environment=config.environment(),
            database_url=config.env_optional("WALLET_POOL_DATABASE_URL", "DATABASE_URL"),
            listen_database_url=config.env_optional("WALLET_POOL_LISTEN_DATABASE_URL"),
            statement_cache_size=config.env_int("DATABASE_STATEMENT_CACHE_SIZE", 100),
            address=config.env_str("WALLET_POOL_SERVICE_ADDR", "127.0.0.1:50052"),
            tokens=load_tokens(),
            networks=supported_networks(),
            demo_wallets_per_network=config.env_int("DEMO_WALLETS_PER_NETWORK", 5),
            low_water_mark=config.env_int("POOL_LOW_WATER_MARK", 2),
            wallet_cooldown_seconds=config.env_float("WALLET_COOLDOWN_SECONDS", 0.0),
            hand_off_sweep_seconds=config.env_float("HAND_OFF_SWEEP_SECONDS", 1.0, minimum=0.05),
            # One connection listens for hand-offs for as long as the service runs.
            db_pool_size=config.env_int("WALLET_POOL_DB_POOL_SIZE", 8, minimum=2),
            metrics_addr=config.env_address("WALLET_POOL_METRICS_ADDR", "127.0.0.1:9452"),
            metrics_refresh_seconds=config.env_float("METRICS_REFRESH_SECONDS", 5.0, minimum=0.1),
            health_check_seconds=config.env_float("HEALTH_CHECK_SECONDS", 2.0, minimum=0.1),
            tls=ServerTls.from_env(),
            embedded_data_dir=config.env_str("EMBEDDED_PG_DIR", DEFAULT_DATA_DIR),
            shutdown_grace_seconds=config.env_float("SHUTDOWN_GRACE_SECONDS", 10.0),
            shutdown_drain_seconds=config.env_float("SHUTDOWN_DRAIN_SECONDS", 1.0),
            tracing=tracing_settings(),
        )
        require_credentials(settings.tokens, REQUIRED_ROLES)
        return settings
