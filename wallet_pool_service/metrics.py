"""The wallet pool's gauges, refreshed by a background loop from the database."""

import logging

from prometheus_client import Gauge

from wallet_pool_service.domain import NetworkStats

log = logging.getLogger(__name__)

WALLETS = Gauge("wallet_pool_wallets", "Wallets by network and state.", ["network", "state"])
QUEUE_LENGTH = Gauge("wallet_pool_queue_length", "Orders waiting for a wallet.", ["network"])
BELOW_LOW_WATER = Gauge(
    "wallet_pool_below_low_water_mark",
    "1 while a network's available wallets are below the low-water mark.",
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
