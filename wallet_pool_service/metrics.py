"""The wallet pool's gauges, refreshed by a background loop from the database."""

import logging

from prometheus_client import Counter, Gauge

from wallet_pool_service.domain import NetworkStats

log = logging.getLogger(__name__)

WALLETS = Gauge("wallet_pool_wallets", "Wallets by network and state.", ["network", "state"])
QUEUE_LENGTH = Gauge("wallet_pool_queue_length", "Orders waiting for a wallet.", ["network"])
BELOW_LOW_WATER = Gauge(
    "wallet_pool_below_low_water_mark",
    "1 while a network's available wallets are below the low-water mark.",
    ["network"],
)

HELD_BY_WATERMARK = Gauge(
    "wallet_pool_held_by_watermark",
    "Released wallets the watermark guard holds back (the watcher has not scanned far enough "
    "past their release, or never reported).",
    ["network"],
)
WATCHER_SCANNED_HEIGHT = Gauge(
    "wallet_pool_watcher_scanned_height",
    "The height the network's chain watcher has scanned up to (absent: never reported).",
    ["network"],
)
WATCHER_LAST_REPORT = Gauge(
    "wallet_pool_watcher_last_report_timestamp_seconds",
    "When the network's chain watcher last reported (0: never): a silent watcher stops reuse.",
    ["network"],
)
DEPOSITS_RECORDED = Counter(
    "wallet_pool_deposits_recorded",
    "Deposits recorded from watcher reports, by attribution (on_time, late, unattributed) "
    "and disposition (counted, dust, unknown_asset, wrong_asset; only counted ones hold a "
    "wallet out or count toward a payment).",
    ["network", "attribution", "disposition"],
)
DEPOSITS_REVERTED = Counter(
    "wallet_pool_deposits_reverted",
    "Deposits a watcher retracted (a reorganisation, a replacement, a double spend).",
    ["network"],
)
FINALITY_VIOLATIONS = Counter(
    "wallet_pool_finality_violations",
    "Confirmed deposits retracted at or below the network's finalized height: never expected "
    "(alert WalletPoolFinalityViolation).",
    ["network"],
)


class PoolGauges:
    """Publishes stats as gauges; logs once when a network falls below its low-water mark."""

    def __init__(self) -> None:
        self._below: set[str] = set()

    def publish(self, stats: list[NetworkStats]) -> None:
        for s in stats:
            for state, count in [
                ("available", s.available),
                ("allocated", s.allocated),
                ("disabled", s.disabled),
                ("cooling", s.cooling),
            ]:
                WALLETS.labels(s.network, state).set(count)
            QUEUE_LENGTH.labels(s.network).set(s.queued)
            # Counted from 0 from the start, so that an alert on their increase sees the first.
            DEPOSITS_REVERTED.labels(s.network)
            FINALITY_VIOLATIONS.labels(s.network)
            HELD_BY_WATERMARK.labels(s.network).set(s.held_by_watermark)
            if s.scanned_height is not None:
                WATCHER_SCANNED_HEIGHT.labels(s.network).set(s.scanned_height)
            report_time = s.watcher_report_time
            WATCHER_LAST_REPORT.labels(s.network).set(report_time.timestamp() if report_time else 0)
            BELOW_LOW_WATER.labels(s.network).set(1 if s.below_low_water_mark else 0)
            if s.below_low_water_mark and s.network not in self._below:
                log.warning(
                    "available wallets below the low-water mark",
                    extra={
                        "network": s.network,
                        "available": s.available,
                        "low_water_mark": s.low_water_mark,
                    },
                )
                self._below.add(s.network)
            elif not s.below_low_water_mark and s.network in self._below:
                log.info(
                    "available wallets back above the low-water mark", extra={"network": s.network}
                )
                self._below.discard(s.network)
