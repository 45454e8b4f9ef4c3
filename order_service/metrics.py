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
WATCH_STREAMS = Gauge(
    "order_watch_streams",
    "Open watch streams on this replica, by RPC (WatchOrder, WatchOrderEvents); at most "
    "MAX_WATCH_STREAMS in all.",
    ["rpc"],
)
EVENTS_SEQUENCED = Counter(
    "order_events_sequenced_total", "Events of the order event log numbered by this replica."
)
EVENTS_DELETED = Counter(
    "order_events_deleted_total", "Events of the order event log deleted by retention."
)
