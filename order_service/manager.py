"""The order service's use cases in one place for the servicer and the loops: a facade over
the modules that hold them by concern (each one transaction, or a single statement that is
atomic on its own, plus calls to the pool):

- lifecycle.py: creating, reading and changing orders, watching one order;
- allocation.py: the pool's wallets (or queue places) copied onto waiting orders;
- releases.py: the wallets of finished orders handed back, with retries;
- deposit_sync.py: the pool's deposits copied onto orders;
- expiry.py: stale PENDING orders cancelled;
- event_log.py: the sequencer, reading and watching the log, its retention.
"""

import asyncpg

from order_service.allocation import AllocationSync
from order_service.deposit_sync import DepositSync
from order_service.event_log import EventLog
from order_service.expiry import OrderExpiry
from order_service.feed import OrderFeed
from order_service.lifecycle import OrderLifecycle
from order_service.payment import NO_TOLERANCES, TolerancePolicy
from order_service.releases import ReleaseDelivery, ReleasePolicy
from order_service.store import OrderStore
from order_service.wallet_pool_client import WalletPoolGateway
from shared.assets import AssetTable, parse_assets

__all__ = ["OrderManager", "ReleasePolicy"]

_DEFAULT_RELEASE_POLICY = ReleasePolicy()


class OrderManager(OrderLifecycle):
    """The order's life (lifecycle.py, inherited), and the other concerns as attributes:
    `events`, `releases`, `allocation`, `deposits`, `expiry`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        wallet_pool: WalletPoolGateway,
        networks: tuple[str, ...],
        release_policy: ReleasePolicy = _DEFAULT_RELEASE_POLICY,
        *,
        sync_lease_seconds: float = 0.5,
        order_ttl_seconds: float = 0.0,
        event_retention_seconds: float = 7 * 86400.0,
        max_watch_streams: int = 10_000,
        assets: AssetTable | None = None,
        tolerance: TolerancePolicy = NO_TOLERANCES,
        completion_requires_payment: bool = False,
    ) -> None:
        """`sync_lease_seconds`: how long one replica keeps a waiting order to itself when it
        asks the pool about it (longer than a call's deadline, so that replicas do not ask at
        once; also how often a waiting order is asked about again). `order_ttl_seconds`:
        PENDING orders older than this expire (0: never). `event_retention_seconds`: how long
        the event log keeps events. `max_watch_streams`: watch streams this replica serves
        at once. `tolerance`: the payment tolerances; `completion_requires_payment`:
        COMPLETED needs PAID or OVERPAID, or a reason."""
        self.networks = networks
        # The networks' assets (the built-in ones by default), as the pool has them.
        self.assets = assets or parse_assets("", networks)
        self.order_ttl_seconds = order_ttl_seconds
        self._store = OrderStore(pool)
        # The feed runs the sequencer after each change; the sequencer wakes the feed.
        self.feed = OrderFeed(max_watch_streams, lambda orders: self.events.sequence_events(orders))
        # The concerns beside the lifecycle, each the steps of its loops.
        self.events = EventLog(self._store, self.feed, event_retention_seconds)
        self.releases = ReleaseDelivery(self._store, wallet_pool, self.feed, release_policy)
        self.allocation = AllocationSync(self._store, wallet_pool, self.feed, sync_lease_seconds)
        self.deposits = DepositSync(pool, wallet_pool, self.feed)
        super().__init__(
            self._store,
            self.feed,
            self.allocation,
            self.releases,
            self.assets,
            tolerance,
            completion_requires_payment,
        )
        self.expiry = OrderExpiry(
            self._store, self.feed, self, self.releases, self.deposits, order_ttl_seconds
        )

    async def database_ready(self) -> bool:
        """The database answers and takes writes."""
        return await self._store.ready()
