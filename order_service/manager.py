"""Order use cases over the order repository (each one transaction, or a single statement
that is atomic on its own), plus calls to the pool."""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg

from order_service import domain
from order_service.deposit_sync import DepositSync
from order_service.domain import (
    Order,
    OrderFilter,
    OrderScope,
    OrderStatus,
    StatusChange,
    WalletRelease,
)
from order_service.feed import OrderFeed
from order_service.metrics import EVENTS_DELETED, EVENTS_SEQUENCED, RELEASE_ATTEMPTS
from order_service.payment import (
    NO_TOLERANCES,
    PaymentRequired,
    PaymentStatus,
    TolerancePolicy,
    required_payment,
)
from order_service.repository import OrderRepository, PostgresOrderRepository
from order_service.wallet_pool_client import WalletPoolError, WalletPoolGateway
from shared.assets import AssetTable, check_scale, parse_assets
from shared.db import accepts_writes, connection, is_database_outage
from shared.errors import Unavailable
from shared.pagination import decode_page_token, encode_page_token, foreign_page_token, page_size

log = logging.getLogger(__name__)

_RETRY_BATCH = 50
_SYNC_BATCH = 100
_EXPIRY_BATCH = 50
_EVENT_PAGE = 500
_SEQUENCE_BATCH = 5000
# How long a sequencer run waits for the synchronous standby to confirm what it numbered:
# it usually has it at once, or within a WAL flush of the primary.
_CONFIRM_TRIES = 100
_CONFIRM_PAUSE_SECONDS = 0.005
_EVENT_EXPIRY_BATCH = 1000


@dataclass(frozen=True)
class ReleasePolicy:
    # How long an attempt in progress keeps other attempts (loop, replicas) off its record.
    lease_seconds: float = 10.0
    backoff_base_seconds: float = 0.5
    backoff_cap_seconds: float = 10.0


class OrderManager:
    def __init__(
        self,
        pool: asyncpg.Pool,
        wallet_pool: WalletPoolGateway,
        networks: tuple[str, ...],
        release_policy: ReleasePolicy = ReleasePolicy(),
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
        at once."""
        self._pool = pool
        self._wallet_pool = wallet_pool
        self.networks = networks
        # The networks' assets (the built-in ones by default), as the pool has them.
        self.assets = assets or parse_assets("", networks)
        # The payment tolerances; each order keeps the snapshot of its creation.
        self._tolerance = tolerance
        # COMPLETE_REQUIRES_PAYMENT: COMPLETED needs PAID or OVERPAID, or a reason.
        self._completion_gate = completion_requires_payment
        self._release_policy = release_policy
        self._sync_lease_seconds = sync_lease_seconds
        self._order_ttl_seconds = order_ttl_seconds
        self.order_ttl_seconds = order_ttl_seconds
        self._event_retention_seconds = event_retention_seconds
        self.feed = OrderFeed(max_watch_streams, self.sequence_events)
        self._deposits = DepositSync(pool, wallet_pool, self.feed)

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[OrderRepository]:
        async with connection(self._pool) as conn, conn.transaction():
            yield PostgresOrderRepository(conn)

    @contextlib.asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[OrderRepository]:
        """For reads of several statements that must agree with each other: one read-only
        REPEATABLE READ transaction, whose statements all see the database as of its first."""
        async with (
            connection(self._pool) as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            yield PostgresOrderRepository(conn)

    @contextlib.asynccontextmanager
    async def _statement(self) -> AsyncIterator[OrderRepository]:
        """For a use case of one statement, atomic on its own: no BEGIN/COMMIT round trips."""
        async with connection(self._pool) as conn:
            yield PostgresOrderRepository(conn)

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
        expected = self.assets.order_asset(network, asset)
        check_scale(amount, expected, "amount")
        async with self._statement() as orders:
            order = await orders.create(
                uuid.uuid4(),
                network,
                amount,
                request_id,
                actor,
                expected.code,
                self._tolerance.for_asset(network, expected.code),
            )
            if order is None:
                assert request_id is not None
                existing = await orders.by_request_id(actor, request_id)
                assert existing is not None
                if not domain.same_request(existing, network, amount, expected.code):
                    raise domain.RequestIdReused()
                return existing
        self.feed.changed(order.id)
        async with _after_commit("order allocation", order.id):
            synced = await self._sync_allocation(order.id, order.network, order.asset)
            return synced or await self.get_order(order.id, OrderScope.created_by(actor))
        return order

    async def get_order(self, order_id: uuid.UUID, scope: OrderScope) -> Order:
        """The order, if `scope` sees it; OrderNotFound alike for unknown and unseen ones."""
        async with self._statement() as orders:
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
        async with self._statement() as orders:
            page = await orders.page(scope, filters, after, size + 1)
        if len(page) <= size:
            return page, ""
        return page[:size], order_page_token(page[size - 1])

    async def get_order_with_deposits(
        self, order_id: uuid.UUID, scope: OrderScope
    ) -> tuple[Order, list[domain.OrderDeposit]]:
        """The order and the deposits the pool attributed to it, if `scope` sees it."""
        async with self._statement() as orders:
            order = scope.require_visible(order_id, await orders.get(order_id))
            return order, await orders.deposits(order_id)

    async def sync_deposits(self) -> bool:
        """Deposit-sync step (order_service/deposit_sync.py). True if a full page."""
        return await self._deposits.sync()

    async def get_history(self, order_id: uuid.UUID, scope: OrderScope) -> list[StatusChange]:
        """The order's status changes, if `scope` sees the order (else OrderNotFound)."""
        async with self._transaction() as orders:
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
            async with self._statement() as orders:
                order = await self._record_change(orders, order_id, source, status, reason, actor)
            if order is not None:
                self.feed.changed(order.id)
                return order, await self._release_after(order)
        # Statuses only move forward, so a change can lose the race at most once per status.
        for _ in OrderStatus:
            async with self._statement() as orders:
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
                order = await self._record_change(
                    orders, order_id, current.status, status, reason, actor
                )
            if order is not None:
                self.feed.changed(order.id)
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
        released = await self._deliver_release(domain.PendingRelease.of(order), "inline")
        return WalletRelease.RELEASED if released else WalletRelease.PENDING

    async def _record_change(
        self,
        orders: OrderRepository,
        order_id: uuid.UUID,
        current: OrderStatus,
        status: OrderStatus,
        reason: str,
        actor: str,
    ) -> Order | None:
        """Status, history row and (on a final status) the owed release, in one statement;
        None if the order does not have `current` (any more), or not the payment status the
        change requires (COMPLETE_REQUIRES_PAYMENT)."""
        lease = self._release_policy.lease_seconds if domain.is_final_status(status) else None
        required = self._required_payment(status, reason)
        return await orders.change_status(order_id, current, status, reason, actor, lease, required)

    async def expire_stale_orders(self) -> bool:
        """Expiry-loop step: cancel PENDING orders whose payment window (the TTL from when
        they were shown their address) is over with nothing received, as the system, and
        release what they hold. An order with a counted deposit, confirming or confirmed,
        or underpaid, is never expired: it stays PENDING with its payment status for the
        operator. True if a full batch (more may be waiting)."""
        if not self._order_ttl_seconds:
            return False
        async with self._statement() as orders:
            due = await orders.expiry_due(self._order_ttl_seconds)
        if not due:
            return False
        # A payment the pool recorded but this service has not copied yet keeps its order:
        # copy what there is first (not under the orders' locks, which the copy takes).
        while await self.sync_deposits():
            pass
        async with self._transaction() as orders:
            stale = await orders.claim_expired(self._order_ttl_seconds, _EXPIRY_BATCH)
            changed = [
                await self._record_change(
                    orders,
                    order.id,
                    order.status,
                    OrderStatus.CANCELLED,
                    domain.EXPIRED_REASON,
                    domain.SYSTEM_ACTOR,
                )
                for order in stale
            ]
        # The orders are locked, so each change is made.
        expired = [order for order in changed if order is not None]
        self.feed.changed(*(order.id for order in expired))
        for order in expired:
            log.info("order expired", extra={"order_id": str(order.id)})
        await asyncio.gather(
            *(self._deliver_release(domain.PendingRelease.of(order), "expiry") for order in expired)
        )
        return len(stale) == _EXPIRY_BATCH

    async def _deliver_release(self, release: domain.PendingRelease, path: str) -> bool:
        """One attempt to hand a release to the pool; records the outcome."""
        try:
            await self._wallet_pool.release(release.order_id, release.address, release.final_time)
        except WalletPoolError as exc:
            RELEASE_ATTEMPTS.labels(path, "failed").inc()
            attempts = release.attempts + 1
            delay = domain.retry_delay(
                attempts,
                self._release_policy.backoff_base_seconds,
                self._release_policy.backoff_cap_seconds,
            )
            # A refusal is a disagreement with the pool that retrying alone will not mend.
            log.log(
                logging.ERROR if exc.refused else logging.WARNING,
                "wallet release failed; will retry",
                extra={
                    "order_id": str(release.order_id),
                    "address": release.address,
                    "code": exc.code,
                    "attempt": attempts,
                    "retry_in_seconds": round(delay, 2),
                },
            )
            async with (
                _after_commit("release attempt", release.order_id),
                self._statement() as orders,
            ):
                await orders.postpone_release(release.order_id, delay, str(exc)[:500])
            return False
        RELEASE_ATTEMPTS.labels(path, "released").inc()
        async with (
            _after_commit("delivered release", release.order_id),
            self._statement() as orders,
        ):
            await orders.mark_release_done(release.order_id)
        self.feed.changed(release.order_id)
        log.info(
            "wallet released",
            extra={"order_id": str(release.order_id), "address": release.address},
        )
        return True

    async def deliver_due_releases(self) -> bool:
        """Retry-loop step: deliver releases whose next attempt is due. True if a full batch."""
        async with self._statement() as orders:
            due = await orders.claim_due_releases(_RETRY_BATCH, self._release_policy.lease_seconds)
        await asyncio.gather(*(self._deliver_release(release, "retry") for release in due))
        return len(due) == _RETRY_BATCH

    async def sync_waiting_orders(self) -> bool:
        """Allocation-loop step: learn the wallets (or queue places) of waiting orders."""
        async with self._statement() as orders:
            waiting = await orders.claim_waiting(_SYNC_BATCH, self._sync_lease_seconds)
        await asyncio.gather(
            *(self._sync_allocation(oid, net, asset) for oid, net, asset in waiting)
        )
        return False

    async def _sync_allocation(self, order_id: uuid.UUID, network: str, asset: str) -> Order | None:
        """Ask the pool (idempotently) what the order holds and copy it onto the order;
        returns the order if that changed it."""
        try:
            allocation = await self._wallet_pool.allocate(order_id, network, asset)
        except WalletPoolError as exc:
            level = logging.INFO if exc.refused else logging.WARNING
            log.log(
                level,
                "allocation not obtained",
                extra={"order_id": str(order_id), "code": exc.code},
            )
            return None
        if allocation.address is not None:
            return await self._assign(order_id, allocation.address)
        if allocation.queue_position is not None:
            async with self._statement() as orders:
                moved = await orders.set_queue_position(order_id, allocation.queue_position)
            if moved:
                self.feed.changed(order_id)
            return moved
        return None

    async def _assign(self, order_id: uuid.UUID, address: str) -> Order | None:
        """Copy the wallet the pool gave a waiting order onto it (once; None after)."""
        async with self._statement() as orders:
            assigned = await orders.set_wallet(order_id, address)
        if assigned:
            self.feed.changed(order_id)
            log.info("wallet assigned", extra={"order_id": str(order_id), "address": address})
        return assigned

    async def follow_hand_offs(self) -> bool:
        """Push-channel step: copy each hand-off onto its order as the pool reports it, until
        the stream ends. The allocation sync covers what a broken stream misses."""
        try:
            async for order_id, address in self._wallet_pool.watch_hand_offs():
                await self._assign(order_id, address)
        except WalletPoolError as exc:
            log.info("hand-off watch interrupted; reconnecting", extra={"code": exc.code})
        return False

    async def watch_order(self, order_id: uuid.UUID, scope: OrderScope) -> AsyncIterator[Order]:
        """The order now, then each time it changes, until nothing more will change."""
        with self.feed.watch_order(order_id) as changed:
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
                if self.feed.closed:
                    raise Unavailable("the service is stopping; watch again")

    async def list_events(
        self,
        after_sequence: int,
        requested_size: int,
        order_id: uuid.UUID | None,
        types: frozenset[domain.EventType],
    ) -> tuple[list[domain.OrderEvent], int]:
        """A page of the log after `after_sequence`, and the log's last sequence. Every event
        committed before the call is numbered first, so a caller reads its own changes."""
        await self.sequence_events()
        # One snapshot: the page is exactly what is kept after the retention mark it was
        # checked against (a deletion committed between two reads would be skipped, OK).
        async with self._snapshot() as orders:
            log_ = await orders.event_log()
            after_sequence = domain.start_of_reading(
                after_sequence, log_.last_sequence, log_.deleted_through
            )
            page = await orders.events_after(
                after_sequence, page_size(requested_size), order_id, types
            )
        return page, log_.confirmed_through

    async def watch_events(self, after_sequence: int) -> AsyncIterator[domain.OrderEvent]:
        """Every event after `after_sequence`, in sequence order, then each as it is
        numbered; the stream ends only with an error (retention passed the consumer, or
        the service is stopping). 0 starts at the oldest event kept when a page is read,
        until the stream has sent one: it is never behind retention."""
        cursor: int | None = None
        if after_sequence:
            async with self._statement() as orders:
                log_ = await orders.event_log()
            # Against what is numbered: after a failover a cursor may be past what the new
            # primary shows yet, never past what it numbered.
            cursor = domain.start_of_reading(
                after_sequence, log_.last_sequence, log_.deleted_through
            )
        with self.feed.watch_log() as grew:
            while True:
                grew.clear()
                page = await self._events_to_watch(cursor)
                for event in page:
                    yield event
                    cursor = event.sequence
                if len(page) < _EVENT_PAGE:
                    await grew.wait()
                    if self.feed.closed:
                        raise Unavailable("the service is stopping; watch again")

    async def _events_to_watch(self, cursor: int | None) -> list[domain.OrderEvent]:
        """The next page of a watch after `cursor` (None: from the oldest event kept)."""
        if cursor is None:
            async with self._snapshot() as orders:
                deleted = (await orders.event_log()).deleted_through
                return await orders.events_after(deleted, _EVENT_PAGE, None, frozenset())
        async with self._statement() as orders:
            page = await orders.events_after(cursor, _EVENT_PAGE, None, frozenset())
            if page and page[0].sequence != cursor + 1:
                # Sequences are dense: only retention leaves a hole before a page.
                deleted = (await orders.event_log()).deleted_through
                raise domain.EventsDeleted(cursor, deleted)
        return page

    async def sequence_events(self, announce: Collection[uuid.UUID] = ()) -> bool:
        """Sequencer step: number the committed events that have no sequence yet, and
        announce their orders and `announce` to every replica."""
        while True:
            async with self._statement() as orders:
                numbered = await orders.sequence_events(_SEQUENCE_BATCH, announce)
            EVENTS_SEQUENCED.inc(numbered)
            if numbered < _SEQUENCE_BATCH:
                break
            announce = ()
        await self._confirm_events()
        return False

    async def _confirm_events(self) -> None:
        """Show what is numbered once the synchronous standby has it (at once without one).
        It usually has it already: the numbering's commit waited for it. The next run of the
        sequencer (at the latest its safety-net loop) tries again when it still lags."""
        for _ in range(_CONFIRM_TRIES):
            async with self._statement() as orders:
                if await orders.confirm_events() == 0:
                    return
            await asyncio.sleep(_CONFIRM_PAUSE_SECONDS)
        log.warning("numbered events wait for the synchronous standby to confirm them")

    async def expire_events(self) -> bool:
        """Retention-loop step: delete events older than the retention. True if a full batch."""
        async with self._statement() as orders:
            deleted = await orders.expire_events(self._event_retention_seconds, _EVENT_EXPIRY_BATCH)
        EVENTS_DELETED.inc(deleted)
        return deleted == _EVENT_EXPIRY_BATCH

    async def count_pending_releases(self) -> int:
        async with self._statement() as orders:
            return await orders.count_pending_releases()

    async def database_ready(self) -> bool:
        """The database answers and takes writes."""
        return await accepts_writes(self._pool)


@contextlib.asynccontextmanager
async def _after_commit(what: str, order_id: uuid.UUID) -> AsyncIterator[None]:
    """Around the bookkeeping that follows a committed change: a database outage there must
    not answer the committed change with an error. What it would have recorded is done again
    later (a release stays owed and is delivered again; a waiting order is asked about
    again), so it is logged and the change answered as committed."""
    try:
        yield
    except Exception as exc:
        if not is_database_outage(exc):
            raise
        log.warning(
            f"{what} not recorded: database unavailable; it will be done again",
            extra={"order_id": str(order_id)},
        )


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
