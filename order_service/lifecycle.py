"""An order's life: its creation (and the pool's wallet for it), reads, status changes with
the release a final status owes, and watching one order."""

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

from order_service import domain
from order_service.allocation import AllocationSync
from order_service.domain import (
    Order,
    OrderFilter,
    OrderScope,
    OrderStatus,
    StatusChange,
    WalletRelease,
)
from order_service.feed import OrderFeed
from order_service.payment import (
    PaymentRequired,
    PaymentStatus,
    TolerancePolicy,
    required_payment,
)
from order_service.releases import ReleaseDelivery
from order_service.repository import PostgresOrderRepository
from order_service.store import OrderStore, after_commit
from shared.assets import AssetTable, check_scale
from shared.errors import Unavailable
from shared.pagination import decode_page_token, encode_page_token, foreign_page_token, page_size


class OrderLifecycle:
    def __init__(
        self,
        store: OrderStore,
        feed: OrderFeed,
        allocation: AllocationSync,
        releases: ReleaseDelivery,
        assets: AssetTable,
        tolerance: TolerancePolicy,
        completion_requires_payment: bool,
    ) -> None:
        self._store = store
        self._feed = feed
        self._allocation = allocation
        self._releases = releases
        self._assets = assets
        # The payment tolerances; each order keeps the snapshot of its creation.
        self._tolerance = tolerance
        # COMPLETE_REQUIRES_PAYMENT: COMPLETED needs PAID or OVERPAID, or a reason.
        self._completion_gate = completion_requires_payment

    async def create_order(
        self,
        network: str,
        amount: Decimal,
        request_id: str | None,
        actor: str,
        asset: str = "",
    ) -> Order:
        """Record the order, then ask the pool for its wallet (or queue place). `asset`: an
        asset code of the network ('' or the coin's symbol: the coin); the amount may have
        no more decimals than the asset (InvalidArgument otherwise).

        The order is committed first, so a wallet is never allocated to an order that does
        not exist; if the pool cannot be reached, the allocation loop asks again later.
        """
        expected = self._assets.order_asset(network, asset)
        check_scale(amount, expected, "amount")
        async with self._store.statement() as orders:
            order = await orders.create(
                uuid.uuid4(),
                network,
                amount,
                request_id,
                actor,
                expected.code,
                self._tolerance.for_asset(network, expected.code),
                self._allocation.lease_seconds,
            )
            if order is None:
                assert request_id is not None
                existing = await orders.by_request_id(actor, request_id)
                assert existing is not None
                if not domain.same_request(existing, network, amount, expected.code):
                    raise domain.RequestIdReused()
                return existing
        self._feed.changed(order.id)
        async with after_commit("order allocation", order.id):
            synced = await self._allocation.sync_order(order.id, order.network, order.asset)
            return synced or await self.get_order(order.id, OrderScope.created_by(actor))
        return order

    async def get_order(self, order_id: uuid.UUID, scope: OrderScope) -> Order:
        """The order, if `scope` sees it; OrderNotFound alike for unknown and unseen ones."""
        async with self._store.statement() as orders:
            return scope.require_visible(order_id, await orders.get(order_id))

    async def list_orders(
        self,
        filters: OrderFilter,
        requested_size: int,
        page_token: str,
        scope: OrderScope,
    ) -> tuple[list[Order], str]:
        """The orders `scope` sees, newest first. Returns the page and the token of the next
        one ('' on the last)."""
        size = page_size(requested_size)
        after = decode_order_page_token(page_token) if page_token else None
        async with self._store.statement() as orders:
            page = await orders.page(scope, filters, after, size + 1)
        if len(page) <= size:
            return page, ""
        return page[:size], order_page_token(page[size - 1])

    async def get_order_with_deposits(
        self, order_id: uuid.UUID, scope: OrderScope
    ) -> tuple[Order, list[domain.OrderDeposit]]:
        """The order and the deposits the pool attributed to it, if `scope` sees it: read in
        one snapshot, so the payment status shown has taken in every deposit shown (the
        deposit sync commits both at once, and could land between two reads)."""
        async with self._store.snapshot() as orders:
            order = scope.require_visible(order_id, await orders.get(order_id))
            return order, await orders.deposits(order_id)

    async def get_history(self, order_id: uuid.UUID, scope: OrderScope) -> list[StatusChange]:
        """The order's status changes, if `scope` sees the order (else OrderNotFound)."""
        async with self._store.transaction() as orders:
            scope.require_visible(order_id, await orders.get(order_id))
            return await orders.history(order_id)

    async def update_status(
        self, order_id: uuid.UUID, status: OrderStatus, reason: str, actor: str
    ) -> tuple[Order, WalletRelease]:
        """Move the order to `status`; on a final status, give its wallet back to the pool.

        The status, its history row and the owed release commit together. The release is
        then attempted at once; if the pool is unreachable the update still succeeds and
        the release is retried in the background until the pool accepts it.
        """
        # A status with one possible predecessor is tried from it at once (one round trip);
        # anything else (a repeat, an illegal move, a lost race) reads the order and decides.
        source = domain.only_source(status)
        if source is not None:
            async with self._store.statement() as orders:
                order = await self.record_change(orders, order_id, source, status, reason, actor)
            if order is not None:
                self._feed.changed(order.id)
                return order, await self._release_after(order)
        # Statuses only move forward, so a change can lose the race at most once per status.
        for _ in OrderStatus:
            async with self._store.statement() as orders:
                current = await orders.get(order_id)
                if current is None:
                    raise domain.OrderNotFound(order_id)
                if not domain.needs_change(current.status, status):
                    pending = domain.is_final_status(status) and await orders.release_pending(
                        order_id
                    )
                    outcome = WalletRelease.PENDING if pending else WalletRelease.NOT_NEEDED
                    return current, outcome
                required = self._required_payment(status, reason)
                if required is not None and current.payment_status not in required:
                    raise PaymentRequired(
                        current.id,
                        current.payment_status,
                        current.received_confirmed,
                        current.amount,
                    )
                order = await self.record_change(
                    orders, order_id, current.status, status, reason, actor
                )
            if order is not None:
                self._feed.changed(order.id)
                return order, await self._release_after(order)
            # another change came first: decide again on what it left
        raise AssertionError("an order changed status more often than it has statuses")

    def _required_payment(
        self, status: OrderStatus, reason: str
    ) -> frozenset[PaymentStatus] | None:
        return required_payment(status is OrderStatus.COMPLETED, reason, self._completion_gate)

    async def _release_after(self, order: Order) -> WalletRelease:
        """The release a change to `order.status` owes, attempted at once."""
        if not domain.is_final_status(order.status):
            return WalletRelease.NOT_NEEDED
        released = await self._releases.deliver(domain.PendingRelease.of(order), "inline")
        return WalletRelease.RELEASED if released else WalletRelease.PENDING

    async def record_change(
        self,
        orders: PostgresOrderRepository,
        order_id: uuid.UUID,
        current: OrderStatus,
        status: OrderStatus,
        reason: str,
        actor: str,
    ) -> Order | None:
        """Status, history row and (on a final status) the owed release, in one statement;
        None if the order does not have `current` (any more), or not the payment status the
        change requires (COMPLETE_REQUIRES_PAYMENT)."""
        lease = self._releases.policy.lease_seconds if domain.is_final_status(status) else None
        required = self._required_payment(status, reason)
        return await orders.change_status(order_id, current, status, reason, actor, lease, required)

    async def watch_order(self, order_id: uuid.UUID, scope: OrderScope) -> AsyncIterator[Order]:
        """The order now, then each time it changes, until nothing more will change."""
        with self._feed.watch_order(order_id) as changed:
            shown = None
            while True:
                changed.clear()
                order = await self.get_order(order_id, scope)
                if order != shown:
                    yield order
                    shown = order
                if domain.watch_is_over(order):
                    return
                await changed.wait()
                if self._feed.closed:
                    raise Unavailable("the service is stopping; watch again")


def order_page_token(order: Order) -> str:
    return encode_page_token({"t": order.create_time.isoformat(), "id": str(order.id)})


def decode_order_page_token(token: str) -> tuple[datetime, uuid.UUID]:
    position = decode_page_token(token)
    created, order_id = position.get("t"), position.get("id")
    if not isinstance(created, str) or not isinstance(order_id, str):
        raise foreign_page_token()
    try:
        created_time = datetime.fromisoformat(created)
        if created_time.tzinfo is None:
            raise ValueError("a naive time")
        return created_time.astimezone(UTC), uuid.UUID(order_id)
    except (ValueError, OverflowError):
        raise foreign_page_token() from None
