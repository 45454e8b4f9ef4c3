"""The order service's own metrics (RPC metrics are shared)."""

from prometheus_client import Counter, Gauge

PENDING_RELEASES = Gauge(
    "order_pending_releases", "Wallet releases owed to the pool and not yet delivered."
)
RELEASE_ATTEMPTS = Counter(
    "order_release_attempts_total",
    "Attempts to deliver a wallet release: path inline (right after the status update) or "
    "retry (the background loop); outcome released or failed.",
    ["path", "outcome"],
)
