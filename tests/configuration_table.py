"""README's configuration table, and for each of its variables a value the services must refuse
at start (or why no value can be refused there): shared by the tests that walk the table."""

import re
from dataclasses import dataclass, field

from tests.databases import ROOT

ORDER, POOL, HEALTHCHECK = "order_service", "wallet_pool_service", "shared.healthcheck"
BOTH = (ORDER, POOL)
# A file that exists (any content: the settings only read it at start).
READABLE = str(ROOT / "README.md")


def table_rows() -> dict[str, str]:
    """Variable -> its row, of the table under `## Configuration` (not the test suite's)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1]
    table = section.split("| Variable | Default | Meaning |", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|(.*)$", table, re.MULTILINE)
    return dict(rows)


@dataclass(frozen=True)
class DocumentedRange:
    minimum: float
    maximum: float
    whole: bool


def documented_ranges() -> dict[str, DocumentedRange]:
    """`Range: [whole numbers ]MIN to MAX` in the table's rows."""
    ranges = {}
    for name, row in table_rows().items():
        found = re.search(r"Range: (whole numbers )?([0-9.]+) to ([0-9.]+)", row)
        if found:
            ranges[name] = DocumentedRange(
                float(found.group(2)), float(found.group(3)), bool(found.group(1))
            )
    return ranges


@dataclass(frozen=True)
class Bad:
    """`value` for `variable` stops each of `modules` at start; the one line it prints
    names the variable and shows `shown` (the value itself unless given; None: the value is
    a secret and must not be shown)."""

    variable: str
    value: str
    modules: tuple[str, ...]
    shown: str | None = ""
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def expected_fragment(self) -> str | None:
        return self.value if self.shown == "" else self.shown


BAD_VALUES = [
    Bad("APP_ENV", "staging", BOTH),
    Bad("DATABASE_URL", "postgresql://db/exchange?connect_timeout=soon", BOTH, "soon"),
    Bad("ORDER_DATABASE_URL", "mysql://db/exchange", (ORDER,), "mysql"),
    Bad("WALLET_POOL_DATABASE_URL", "db.internal:5432", (POOL,), "db.internal:"),
    Bad("ORDER_LISTEN_DATABASE_URL", "postgresql://db/x?connect_timeout=x1", (ORDER,), "x1"),
    Bad("WALLET_POOL_LISTEN_DATABASE_URL", "http://db/x", (POOL,), "http"),
    Bad("DATABASE_STATEMENT_CACHE_SIZE", "10001", BOTH),
    Bad("ORDER_SERVICE_ADDR", "127.0.0.1:70000", (ORDER,)),
    Bad("WALLET_POOL_SERVICE_ADDR", "localhost", (POOL,)),
    Bad("WALLET_POOL_TIMEOUT_SECONDS", "301", (ORDER,)),
    Bad("EVENT_RETENTION_SECONDS", "0.5", (ORDER,)),
    Bad("EVENT_SEQUENCER_SECONDS", "nan", (ORDER,)),
    Bad("MAX_WATCH_STREAMS", "1_000", (ORDER,)),
    # A secret: named, never shown.
    Bad("AUTH_TOKENS", "nobody-secret-token", BOTH, None),
    Bad("AUTH_TOKENS_FILE", "/nonexistent/tokens", BOTH),
    Bad("TLS_CERT_FILE", "/nonexistent/cert.pem", BOTH, extra={"TLS_KEY_FILE": READABLE}),
    Bad("TLS_KEY_FILE", "/nonexistent/key.pem", BOTH, extra={"TLS_CERT_FILE": READABLE}),
    Bad("WALLET_POOL_TLS", "maybe", (ORDER,)),
    Bad("WALLET_POOL_TLS_CA_FILE", "/nonexistent/ca.pem", (ORDER,)),
    Bad("HEALTHCHECK_TLS_CA_FILE", "/nonexistent/ca.pem", (HEALTHCHECK,)),
    Bad("ORDER_METRICS_ADDR", "9451", (ORDER,)),
    Bad("WALLET_POOL_METRICS_ADDR", "0.0.0.0:99999", (POOL,)),
    Bad("METRICS_REFRESH_SECONDS", "inf", (POOL,)),
    Bad("HEALTH_CHECK_SECONDS", "0.01", BOTH),
    Bad("POOL_LOW_WATER_MARK", "-1", (POOL,)),
    Bad("SUPPORTED_NETWORKS", "BTC,DOGE", BOTH, "DOGE"),
    Bad("DEMO_WALLETS_PER_NETWORK", "1001", (POOL,)),
    Bad("ALLOCATION_SYNC_SECONDS", "0", (ORDER,)),
    Bad("DEPOSIT_SYNC_SECONDS", "3601", (ORDER,)),
    Bad("ORDER_TTL_SECONDS", "1e9", (ORDER,)),
    # ARABIC-INDIC DIGIT ONE: float() takes it.
    Bad("EXPIRY_CHECK_SECONDS", "\u0661", (ORDER,)),
    Bad("WALLET_COOLDOWN_SECONDS", "2592001", (POOL,)),
    # Past the documented bound, and far past a bigint: each must stop the pool.
    Bad("WALLET_REUSE_CONFIRMATIONS", "ETH:5000000000000000000", (POOL,), "5000000000000000000"),
    Bad("WALLET_REUSE_CONFIRMATIONS", "ETH:99999999999999999999", (POOL,), "99999999999999999999"),
    Bad("WALLET_REUSE_CONFIRMATIONS", "ETH:\u00b2", (POOL,), "\u00b2"),
    Bad("WALLET_REUSE_CONFIRMATIONS", "10001", (POOL,)),
    Bad("COMPLETE_REQUIRES_PAYMENT", "maybe", (ORDER,)),
    Bad("PAYMENT_UNDERPAY_TOLERANCE", "150%", (ORDER,)),
    Bad("PAYMENT_OVERPAY_TOLERANCE", "1000%", (ORDER,)),
    Bad("ASSETS", "ETH:USDX:0xdAC17F958D2ee523a2206206994597C13D831ec7:19:1:64", BOTH),
    # A contract that is no address of its network: both read ASSETS with the pool's check.
    Bad("ASSETS", "ETH:USDX:0xnot-an-address:6:1:64", BOTH),
    Bad("RELEASE_RETRY_SECONDS", "0.01", (ORDER,)),
    Bad("RELEASE_RETRY_MAX_BACKOFF_SECONDS", "86401", (ORDER,)),
    Bad("HAND_OFF_SWEEP_SECONDS", "3601", (POOL,)),
    Bad("ORDER_DB_POOL_SIZE", "0", (ORDER,)),
    Bad("WALLET_POOL_DB_POOL_SIZE", "1", (POOL,)),
    Bad("SHUTDOWN_DRAIN_SECONDS", "3601", BOTH),
    Bad("SHUTDOWN_GRACE_SECONDS", "-1", BOTH),
    Bad("LOG_LEVEL", "LOUD", BOTH),
    Bad("OTEL_TRACES_EXPORTER", "jaeger", BOTH),
    Bad(
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "http/protobuf",
        BOTH,
        extra={"OTEL_TRACES_EXPORTER": "otlp"},
    ),
    Bad(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "http/json",
        BOTH,
        extra={"OTEL_TRACES_EXPORTER": "otlp"},
    ),
]

# Variables no value of which can be refused at start, and why.
FREE_FORM = {
    "WALLET_POOL_TARGET": "any gRPC target; one that does not answer makes calls UNAVAILABLE",
    "OPERATOR_TOKEN": "a secret: any string (a missing one is refused, tests/e2e/test_startup.py)",
    "CLIENT_TOKEN": "a secret: any string",
    "SERVICE_TOKEN": "a secret: any string (a missing one is refused, tests/e2e/test_startup.py)",
    "SUBSCRIBER_TOKEN": "a secret: any string",
    "WATCHER_TOKEN": "a secret: any string",
    "WALLET_POOL_TLS_SERVER_NAME": "any name the pool's certificate may carry",
    "HEALTHCHECK_TLS_SERVER_NAME": "any name the service's certificate may carry",
    "EMBEDDED_PG_DIR": "any directory; it is created when the embedded database starts",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "read by the exporter, which retries a collector that is away",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "as OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_SERVICE_NAME": "any name",
    "OTEL_TRACES_SAMPLER": "read by the OpenTelemetry SDK, as it documents",
    "OTEL_SDK_DISABLED": "only `true` disables, as the OpenTelemetry SDK reads it",
}
