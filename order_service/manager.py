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

import uuid
from collections.abc import AsyncIterator, Collection
from decimal import Decimal

import asyncpg

from order_service import domain
from order_service.allocation import AllocationSync
from order_service.deposit_sync import DepositSync
from order_service.domain import (
    Order,
    OrderFilter,
    OrderScope,
    OrderStatus,
    StatusChange,
    WalletRelease,
)
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


class OrderManager:
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
        self.feed = OrderFeed(max_watch_streams, self.sequence_events)
        self._events = EventLog(self._store, self.feed, event_retention_seconds)
        self._releases = ReleaseDelivery(self._store, wallet_pool, self.feed, release_policy)
        self._allocation = AllocationSync(self._store, wallet_pool, self.feed, sync_lease_seconds)
        self._deposits = DepositSync(pool, wallet_pool, self.feed)
        self._lifecycle = OrderLifecycle(
            self._store,
            self.feed,
            self._allocation,
            self._releases,
            self.assets,
            tolerance,
            completion_requires_payment,
        )
        self._expiry = OrderExpiry(
            self._store,
            self.feed,
            self._lifecycle,
            self._releases,
            self._deposits,
            order_ttl_seconds,
        )

    # The order's life (lifecycle.py).

    async def create_order(
        self,
        network: str,
        amount: Decimal,
        request_id: str | None,
        actor: str,
        asset: str = "",
    ) -> Order:
        return await self._lifecycle.create_order(network, amount, request_id, actor, asset)

    async def get_order(self, order_id: uuid.UUID, scope: OrderScope) -> Order:
        return await self._lifecycle.get_order(order_id, scope)

    async def list_orders(
        self,
        filters: OrderFilter,
        requested_size: int,
        page_token: str,
        scope: OrderScope,
    ) -> tuple[list[Order], str]:
        return await self._lifecycle.list_orders(filters, requested_size, page_token, scope)

    async def get_order_with_deposits(
        self, order_id: uuid.UUID, scope: OrderScope
    ) -> tuple[Order, list[domain.OrderDeposit]]:
        return await self._lifecycle.get_order_with_deposits(order_id, scope)

    async def get_history(self, order_id: uuid.UUID, scope: OrderScope) -> list[StatusChange]:
        return await self._lifecycle.get_history(order_id, scope)

    async def update_status(
        self, order_id: uuid.UUID, status: OrderStatus, reason: str, actor: str
    ) -> tuple[Order, WalletRelease]:
        return await self._lifecycle.update_status(order_id, status, reason, actor)

    def watch_order(self, order_id: uuid.UUID, scope: OrderScope) -> AsyncIterator[Order]:
        return self._lifecycle.watch_order(order_id, scope)

    # The loops' steps.

    async def sync_waiting_orders(self) -> bool:
        return await self._allocation.sync_waiting_orders()

    async def follow_hand_offs(self) -> bool:
        return await self._allocation.follow_hand_offs()

    async def deliver_due_releases(self) -> bool:
        return await self._releases.deliver_due()

    async def count_pending_releases(self) -> int:
        return await self._releases.count_pending()

    async def sync_deposits(self) -> bool:
        return await self._deposits.sync()

    async def expire_stale_orders(self) -> bool:
        return await self._expiry.expire_stale_orders()

    # The event log (event_log.py).

    async def list_events(
        self,
        after_sequence: int,
        requested_size: int,
        order_id: uuid.UUID | None,
        types: frozenset[domain.EventType],
    ) -> tuple[list[domain.OrderEvent], int]:
        return await self._events.list_events(after_sequence, requested_size, order_id, types)

    def watch_events(self, after_sequence: int) -> AsyncIterator[domain.OrderEvent]:
        return self._events.watch_events(after_sequence)

    async def sequence_events(self, announce: Collection[uuid.UUID] = ()) -> bool:
        return await self._events.sequence_events(announce)

    async def expire_events(self) -> bool:
        return await self._events.expire_events()

    async def database_ready(self) -> bool:
        """The database answers and takes writes."""
        return await self._store.ready()
