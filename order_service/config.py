"""The order service's settings, read once from the environment at start-up."""

from dataclasses import dataclass
from typing import Any

from order_service.payment import OVER_VARIABLE, UNDER_VARIABLE, TolerancePolicy
from shared import config
from shared.auth import OPERATOR, require_credentials
from shared.settings import ServiceSettings, service_settings
from shared.tls import ClientTls

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
class OrderSettings(ServiceSettings):
    wallet_pool_target: str
    wallet_pool_timeout_seconds: float
    # The order service's own credential towards the wallet pool.
    service_token: str | None
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
    wallet_pool_tls: ClientTls | None
    event_retention_seconds: float
    event_sequencer_seconds: float
    max_watch_streams: int

    @classmethod
    def from_env(cls) -> "OrderSettings":
        common = service_settings("ORDER", "127.0.0.1:50051", "127.0.0.1:9451")
        settings = cls(
            **common,
            wallet_pool_target=config.env_str("WALLET_POOL_TARGET", "localhost:50052"),
            wallet_pool_timeout_seconds=config.env_float(
                "WALLET_POOL_TIMEOUT_SECONDS", 2.0, minimum=0.05, maximum=300.0
            ),
            service_token=config.env_optional("SERVICE_TOKEN"),
            completion_requires_payment=_env_switch("COMPLETE_REQUIRES_PAYMENT"),
            tolerance=TolerancePolicy.parse(
                config.env_str(UNDER_VARIABLE, ""),
                config.env_str(OVER_VARIABLE, ""),
                common["assets"],
            ),
            wallet_pool_tls=ClientTls.from_env(),
            max_watch_streams=config.env_int(
                "MAX_WATCH_STREAMS", 10_000, minimum=1, maximum=1_000_000
            ),
            **_periods(),
        )
        require_credentials(
            settings.tokens,
            REQUIRED_ROLES,
            credential_problems(settings.service_token),
        )
        return settings


def _periods() -> dict[str, Any]:
    """The order service's intervals, timeouts and retention, in seconds."""
    return {
        "allocation_sync_seconds": config.env_float(
            "ALLOCATION_SYNC_SECONDS", 0.5, minimum=0.05, maximum=3600.0
        ),
        "deposit_sync_seconds": config.env_float(
            "DEPOSIT_SYNC_SECONDS", 1.0, minimum=0.05, maximum=3600.0
        ),
        "order_ttl_seconds": config.env_float("ORDER_TTL_SECONDS", 1800.0, maximum=365 * 86400.0),
        "expiry_check_seconds": config.env_float(
            "EXPIRY_CHECK_SECONDS", 1.0, minimum=0.05, maximum=3600.0
        ),
        "release_retry_seconds": config.env_float(
            "RELEASE_RETRY_SECONDS", 1.0, minimum=0.05, maximum=3600.0
        ),
        "release_retry_max_backoff_seconds": config.env_float(
            "RELEASE_RETRY_MAX_BACKOFF_SECONDS", 10.0, minimum=0.1, maximum=86400.0
        ),
        "event_retention_seconds": config.env_float(
            "EVENT_RETENTION_SECONDS", 7 * 86400.0, minimum=1.0, maximum=3650 * 86400.0
        ),
        "event_sequencer_seconds": config.env_float(
            "EVENT_SEQUENCER_SECONDS", 1.0, minimum=0.05, maximum=3600.0
        ),
    }
