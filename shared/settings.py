"""The settings both services read alike: the database, the listening address and its
credentials and TLS, networks and assets, metrics, health, shutdown and tracing. Each
service's settings extend these and read them with `service_settings`."""

from dataclasses import dataclass
from typing import Any

from shared import config
from shared.assets import AssetTable, assets_from_env
from shared.auth import Principal, load_tokens
from shared.embedded_db import DEFAULT_DATA_DIR
from shared.networks import supported_networks
from shared.tls import ServerTls
from shared.tracing import TracingSettings, tracing_settings


@dataclass(frozen=True)
class ServiceSettings:
    environment: str
    database_url: str | None
    # A connection of its own for LISTEN (None: one of the pool's connections listens).
    listen_database_url: str | None
    statement_cache_size: int
    address: str
    tokens: dict[str, Principal]
    networks: tuple[str, ...]
    # The networks' coins and tokens (ASSETS over the built-in ones).
    assets: AssetTable
    db_pool_size: int
    metrics_addr: str | None
    health_check_seconds: float
    tls: ServerTls | None
    embedded_data_dir: str
    shutdown_grace_seconds: float
    shutdown_drain_seconds: float
    # None: tracing off (the OTEL_* variables do not ask for it).
    tracing: TracingSettings | None


def service_settings(
    prefix: str, address: str, metrics_addr: str, min_pool_size: int = 1
) -> dict[str, Any]:
    """The ServiceSettings fields from the environment; the service's own variables are
    named `prefix`_DATABASE_URL, `prefix`_SERVICE_ADDR and so on, with these defaults."""
    networks = supported_networks()
    return {
        "environment": config.environment(),
        "database_url": config.env_database_url(f"{prefix}_DATABASE_URL", "DATABASE_URL"),
        "listen_database_url": config.env_database_url(f"{prefix}_LISTEN_DATABASE_URL"),
        "statement_cache_size": config.env_int(
            "DATABASE_STATEMENT_CACHE_SIZE", 100, maximum=10_000
        ),
        "address": config.env_listen_address(f"{prefix}_SERVICE_ADDR", address),
        "tokens": load_tokens(),
        "networks": networks,
        "assets": assets_from_env(networks),
        "db_pool_size": config.env_int(
            f"{prefix}_DB_POOL_SIZE", 8, minimum=min_pool_size, maximum=1000
        ),
        "metrics_addr": config.env_address(f"{prefix}_METRICS_ADDR", metrics_addr),
        "health_check_seconds": config.env_float(
            "HEALTH_CHECK_SECONDS", 2.0, minimum=0.1, maximum=3600.0
        ),
        "tls": ServerTls.from_env(),
        "embedded_data_dir": config.env_str("EMBEDDED_PG_DIR", DEFAULT_DATA_DIR),
        "shutdown_grace_seconds": config.env_float("SHUTDOWN_GRACE_SECONDS", 10.0, maximum=3600.0),
        "shutdown_drain_seconds": config.env_float("SHUTDOWN_DRAIN_SECONDS", 1.0, maximum=3600.0),
        "tracing": tracing_settings(),
    }
