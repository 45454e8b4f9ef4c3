"""The order service's settings, read once from the environment at start-up."""

from dataclasses import dataclass

from order_service.payment import OVER_VARIABLE, UNDER_VARIABLE, TolerancePolicy
from shared import config
from shared.assets import AssetTable, assets_from_env
from shared.auth import OPERATOR, Principal, load_tokens, require_credentials
from shared.embedded_db import DEFAULT_DATA_DIR
from shared.networks import supported_networks
from shared.tls import ClientTls, ServerTls
from shared.tracing import TracingSettings, tracing_settings

# Roles the service cannot do its job without, and why: start-up refuses without a credential
# for each. Other roles (client) are optional.
REQUIRED_ROLES = {OPERATOR: "only operators move orders to a final status"}
MISSING_SERVICE_TOKEN = (
    "SERVICE_TOKEN is required: the wallet pool accepts "
    "AllocateWallet and ReleaseWallet only from the 'service' role, so without it no order "
    "gets a wallet and no release is delivered (set the same value on the wallet pool)"
)


def credential_problems(service_token: str | None) -> list[str]:
    """What the order service's own credential towards the pool lacks (in any environment:
    the pool always requires the service role, so without it no order gets a wallet)."""
    return [] if service_token else [MISSING_SERVICE_TOKEN]


def _env_switch(name: str) -> bool:
    """`true` or `false` (default false); anything else stops the service naming it."""
    value = config.env_str(name, "false").lower()
    if value not in ("true", "false"):
        raise config.ConfigError(f"{name} must be true or false, got {value!r}")
    return value == "true"


@dataclass(frozen=True)
class OrderSettings:
    environment: str
    database_url: str | None
    # A connection of its own for LISTEN (None: one of the pool's connections listens).
    listen_database_url: str | None
    statement_cache_size: int
    address: str
    wallet_pool_target: str
    wallet_pool_timeout_seconds: float
    tokens: dict[str, Principal]
    # The order service's own credential towards the wallet pool.
    service_token: str | None
    networks: tuple[str, ...]
    # The networks' coins and tokens (ASSETS over the built-in ones, as the pool reads it).
    assets: AssetTable
    # The payment tolerances, snapshotted on each order at creation.
    tolerance: TolerancePolicy
    # COMPLETED requires PAID or OVERPAID unless the operator gives a reason.
    completion_requires_payment: bool
    allocation_sync_seconds: float
    deposit_sync_seconds: float
    order_ttl_seconds: float
    expiry_check_seconds: float
    release_retry_seconds: float
    release_retry_max_backoff_seconds: float
    db_pool_size: int
    metrics_addr: str | None
    health_check_seconds: float
    tls: ServerTls | None
    wallet_pool_tls: ClientTls | None
    embedded_data_dir: str
    shutdown_grace_seconds: float
    shutdown_drain_seconds: float
    event_retention_seconds: float
    event_sequencer_seconds: float
    max_watch_streams: int
    # None: tracing off (the OTEL_* variables do not ask for it).
    tracing: TracingSettings | None

    @classmethod
    def from_env(cls) -> "OrderSettings":
        networks = supported_networks()
        assets = assets_from_env(networks)
        settings = cls(
            environment=config.environment(),
            database_url=config.env_database_url("ORDER_DATABASE_URL", "DATABASE_URL"),
            listen_database_url=config.env_database_url("ORDER_LISTEN_DATABASE_URL"),
            statement_cache_size=config.env_int(
                "DATABASE_STATEMENT_CACHE_SIZE", 100, maximum=10_000
            ),
            address=config.env_listen_address("ORDER_SERVICE_ADDR", "127.0.0.1:50051"),
            wallet_pool_target=config.env_str("WALLET_POOL_TARGET", "localhost:50052"),
            wallet_pool_timeout_seconds=config.env_float(
                "WALLET_POOL_TIMEOUT_SECONDS", 2.0, minimum=0.05, maximum=300.0
            ),
            tokens=load_tokens(),
            service_token=config.env_optional("SERVICE_TOKEN"),
            networks=networks,
            assets=assets,
            completion_requires_payment=_env_switch("COMPLETE_REQUIRES_PAYMENT"),
            tolerance=TolerancePolicy.parse(
                config.env_str(UNDER_VARIABLE, ""), config.env_str(OVER_VARIABLE, ""), assets
            ),
            allocation_sync_seconds=config.env_float(
                "ALLOCATION_SYNC_SECONDS", 0.5, minimum=0.05, maximum=3600.0
            ),
            deposit_sync_seconds=config.env_float(
                "DEPOSIT_SYNC_SECONDS", 1.0, minimum=0.05, maximum=3600.0
            ),
            order_ttl_seconds=config.env_float("ORDER_TTL_SECONDS", 1800.0, maximum=365 * 86400.0),
            expiry_check_seconds=config.env_float(
                "EXPIRY_CHECK_SECONDS", 1.0, minimum=0.05, maximum=3600.0
            ),
            release_retry_seconds=config.env_float(
                "RELEASE_RETRY_SECONDS", 1.0, minimum=0.05, maximum=3600.0
            ),
            release_retry_max_backoff_seconds=config.env_float(
                "RELEASE_RETRY_MAX_BACKOFF_SECONDS", 10.0, minimum=0.1, maximum=86400.0
            ),
            db_pool_size=config.env_int("ORDER_DB_POOL_SIZE", 8, minimum=1, maximum=1000),
            metrics_addr=config.env_address("ORDER_METRICS_ADDR", "127.0.0.1:9451"),
            health_check_seconds=config.env_float(
                "HEALTH_CHECK_SECONDS", 2.0, minimum=0.1, maximum=3600.0
            ),
            tls=ServerTls.from_env(),
            wallet_pool_tls=ClientTls.from_env(),
            embedded_data_dir=config.env_str("EMBEDDED_PG_DIR", DEFAULT_DATA_DIR),
            shutdown_grace_seconds=config.env_float("SHUTDOWN_GRACE_SECONDS", 10.0, maximum=3600.0),
            shutdown_drain_seconds=config.env_float("SHUTDOWN_DRAIN_SECONDS", 1.0, maximum=3600.0),
            event_retention_seconds=config.env_float(
                "EVENT_RETENTION_SECONDS", 7 * 86400.0, minimum=1.0, maximum=3650 * 86400.0
            ),
            event_sequencer_seconds=config.env_float(
                "EVENT_SEQUENCER_SECONDS", 1.0, minimum=0.05, maximum=3600.0
            ),
            max_watch_streams=config.env_int(
                "MAX_WATCH_STREAMS", 10_000, minimum=1, maximum=1_000_000
            ),
            tracing=tracing_settings(),
        )
        require_credentials(
            settings.tokens,
            REQUIRED_ROLES,
            credential_problems(settings.service_token),
        )
        return settings
