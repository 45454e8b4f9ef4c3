"""The order repository: PostgreSQL, SQL only, bound to one connection."""

import functools
import logging
import uuid
from collections.abc import Callable, Collection
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from order_service import domain
from order_service.domain import (
    EventType,
    Order,
    OrderEvent,
    OrderFilter,
    OrderScope,
    OrderStatus,
    PendingRelease,
    StatusChange,
)
from order_service.payment import NO_TOLERANCE, Payment, PaymentStatus, Tolerance
from shared.db import Connection, is_database_outage, is_read_only
from shared.errors import OutcomeUnknown
from shared.sql import load_queries

log = logging.getLogger(__name__)


class EventLog(NamedTuple):
    # The last sequence given, the last one retention deleted, and the last one shown: the
    # synchronous standby has its numbering (migration 008).
    last_sequence: int
    deleted_through: int
    confirmed_through: int


@functools.cache
def queries() -> dict[str, str]:
    return load_queries("order_service")


class PostgresOrderRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._q = queries()

    async def _one(self, query: str, *args: object) -> Order | None:
        row = await self._conn.fetchrow(self._q[query], *args)
        return Order.from_row(row) if row else None

    async def _write(
        self, unknown: Callable[[], OutcomeUnknown], query: str, *args: object
    ) -> Order | None:
        """`_one` for a write. Outside a transaction the statement commits on its own, so an
        outage while it is in flight (the connection lost after it was sent) leaves its
        outcome unknown: `unknown()` is raised. Inside one, nothing commits before COMMIT; and
        a server that refused the write for being read-only (a standby) wrote nothing."""
        if self._conn.is_in_transaction():
            return await self._one(query, *args)
        try:
            return await self._one(query, *args)
        except Exception as exc:
            if not is_database_outage(exc) or is_read_only(exc):
                raise
            error = unknown()
            log.warning(
                "database connection lost during a write; its outcome is unknown",
                extra={
                    "order_id": error.metadata.get("order_id"),
                    "query": query,
                    "error": repr(exc),
                },
            )
            raise error from exc

    async def create(
        self,
        order_id: uuid.UUID,
        network: str,
        amount: Decimal,
        request_id: str | None,
        created_by: str,
        asset: str = "",
        tolerance: Tolerance = NO_TOLERANCE,
        sync_lease_seconds: float = 0.0,
    ) -> Order | None:
        """The new order, with its 'created' history row; None when `created_by` used
        `request_id` before. CreationOutcomeUnknown if the connection is lost meanwhile.
        The allocation loop leaves it alone for `sync_lease_seconds` (the creator asks the
        pool about it meanwhile)."""
        return await self._write(
            lambda: domain.CreationOutcomeUnknown(order_id, request_id),
            "create_order",
            order_id,
            network,
            amount,
            request_id,
            created_by,
            asset,
            tolerance.under_pct,
            tolerance.under_abs,
            tolerance.over_pct,
            tolerance.over_abs,
            sync_lease_seconds,
        )

    async def by_request_id(self, created_by: str, request_id: str) -> Order | None:
        return await self._one("order_by_request_id", created_by, request_id)

    async def get(self, order_id: uuid.UUID) -> Order | None:
        return await self._one("get_order", order_id)

    async def page(
        self,
        scope: OrderScope,
        filters: OrderFilter,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[Order]:
        """The orders `scope` sees that match `filters`, newest first, after `after`."""
        after_time, after_id = after if after else (None, None)
        rows = await self._conn.fetch(
            self._q["list_orders"],
            filters.status.value if filters.status else None,
            filters.network,
            after_time,
            after_id,
            limit,
            filters.created_after,
            filters.created_before,
            scope.creator,
        )
        return [Order.from_row(row) for row in rows]

    async def history(self, order_id: uuid.UUID) -> list[StatusChange]:
        rows = await self._conn.fetch(self._q["order_history"], order_id)
        return [
            StatusChange(
                from_status=OrderStatus(r["from_status"]) if r["from_status"] else None,
                to_status=OrderStatus(r["to_status"]),
                actor=r["actor"],
                reason=r["reason"],
                change_time=r["change_time"],
                payment_status=PaymentStatus(r["payment_status"]) if r["payment_status"] else None,
            )
            for r in rows
        ]

    async def change_status(
        self,
        order_id: uuid.UUID,
        current: OrderStatus,
        status: OrderStatus,
        reason: str,
        actor: str,
        release_lease_seconds: float | None,
        required_payment: Collection[PaymentStatus] | None = None,
    ) -> Order | None:
        """Compare-and-set from `current`, with the history row and, given a lease, the owed
        release; None (nothing written) if the order is unknown, its status is not `current`
        or (given `required_payment`) its payment status is not one of those.
        ChangeOutcomeUnknown if the connection is lost meanwhile (outside a transaction)."""
        return await self._write(
            lambda: domain.ChangeOutcomeUnknown(order_id),
            "change_status",
            order_id,
            current.value,
            status.value,
            reason,
            actor,
            release_lease_seconds,
            sorted(p.value for p in required_payment) if required_payment is not None else None,
        )

    async def set_wallet(self, order_id: uuid.UUID, address: str) -> Order | None:
        """The order with its address; None if it is not a live order still waiting."""
        return await self._one("set_wallet", order_id, address)

    async def set_queue_position(self, order_id: uuid.UUID, position: int) -> Order | None:
        """The order with its new place; None if it is not waiting or the place is the same."""
        return await self._one("set_queue_position", order_id, position)

    async def claim_waiting(
        self, limit: int, lease_seconds: float
    ) -> list[tuple[uuid.UUID, str, str]]:
        rows = await self._conn.fetch(self._q["claim_waiting_orders"], limit, lease_seconds)
        return [(row["id"], row["network"], row["asset"]) for row in rows]

    async def claim_expired(self, ttl_seconds: float, limit: int) -> list[Order]:
        rows = await self._conn.fetch(self._q["claim_expired_orders"], ttl_seconds, limit)
        return [Order.from_row(row) for row in rows]

    async def expiry_due(self, ttl_seconds: float) -> bool:
        due: bool = await self._conn.fetchval(self._q["expiry_due"], ttl_seconds)
        return due

    async def release_pending(self, order_id: uuid.UUID) -> bool:
        pending: bool = await self._conn.fetchval(self._q["release_pending"], order_id)
        return pending

    async def count_pending_releases(self) -> int:
        count: int = await self._conn.fetchval(self._q["count_pending_releases"])
        return count

    async def claim_due_releases(self, limit: int, lease_seconds: float) -> list[PendingRelease]:
        rows = await self._conn.fetch(self._q["claim_due_releases"], limit, lease_seconds)
        return [
            PendingRelease(r["order_id"], r["address"], r["attempts"], r["final_time"])
            for r in rows
        ]

    async def mark_release_done(self, order_id: uuid.UUID, deposit_change: int) -> None:
        """`deposit_change`: the pool's deposit change number after the release; the
        order's payment is evaluated again once the deposit cursor has passed it."""
        await self._conn.execute(self._q["mark_release_done"], order_id, deposit_change)

    async def postpone_release(self, order_id: uuid.UUID, delay: float, error: str) -> None:
        await self._conn.execute(self._q["postpone_release"], order_id, delay, error)

    async def events_after(
        self,
        after_sequence: int,
        limit: int,
        order_id: uuid.UUID | None,
        types: frozenset[EventType],
    ) -> list[OrderEvent]:
        """Events with a greater sequence, in sequence order; of one order and of some types
        only, when given (no types: all)."""
        query = "events_after" if order_id is None else "order_events_after"
        args: list[object] = [after_sequence, limit, sorted(types)]
        if order_id is not None:
            args.append(order_id)
        rows = await self._conn.fetch(self._q[query], *args)
        return [OrderEvent.from_row(row) for row in rows]

    async def deposits(self, order_id: uuid.UUID) -> list[domain.OrderDeposit]:
        rows = await self._conn.fetch(self._q["order_deposits"], order_id)
        return [domain.OrderDeposit.from_row(row) for row in rows]

    async def deposit_cursor(self) -> tuple[int, int]:
        """The last pool deposit id read, and the last change."""
        row = await self._conn.fetchrow(self._q["deposit_cursor"])
        assert row is not None, "the cursor has its one row"
        return row["last_pool_id"], row["last_change"]

    async def record_deposits(
        self,
        page: list[domain.PoolDeposit],
        through_id: int | None,
        through_change: int | None = None,
    ) -> list[uuid.UUID]:
        """Record the deposits of known orders (each once; one seen before takes its new
        block, confirmations and status) and move the id cursor to `through_id` or the
        change cursor to `through_change`; returns the orders whose deposits changed."""
        deposits = [p.deposit for p in page]
        rows = await self._conn.fetch(
            self._q["record_deposits"],
            [p.pool_id for p in page],
            [p.order_id for p in page],
            [d.txid for d in deposits],
            [d.index for d in deposits],
            [d.amount for d in deposits],
            [d.address for d in deposits],
            [d.block_height for d in deposits],
            [d.block_time for d in deposits],
            [d.late for d in deposits],
            [d.asset for d in deposits],
            [d.disposition.value for d in deposits],
            [d.token_contract for d in deposits],
            [d.confirmations for d in deposits],
            [d.required_confirmations for d in deposits],
            [d.status.value for d in deposits],
            through_id,
            through_change,
        )
        return [row["order_id"] for row in rows]

    async def lock_for_payment(self, order_id: uuid.UUID, cursor: int) -> tuple[Order, bool] | None:
        """The order, locked, and whether its payment must wait for its release's deposit
        changes (`cursor`: the last pool change read); None if unknown."""
        row = await self._conn.fetchrow(self._q["lock_order_for_payment"], order_id, cursor)
        return (Order.from_row(row), row["payment_waits"]) if row else None

    async def settling_orders(self, cursor: int, limit: int) -> list[uuid.UUID]:
        """Final orders whose payment waited for the deposit cursor to pass their
        release's change number, which `cursor` has."""
        rows = await self._conn.fetch(self._q["settling_orders"], cursor, limit)
        return [row["id"] for row in rows]

    async def settle(self, order_id: uuid.UUID, cursor: int) -> None:
        await self._conn.execute(self._q["settle_order"], order_id, cursor)

    async def set_payment(self, order_id: uuid.UUID, payment: Payment) -> Order | None:
        """The order with its new payment; None if it had that payment already."""
        return await self._one(
            "set_payment",
            order_id,
            payment.status.value,
            payment.received_confirmed,
            payment.received_pending,
        )

    async def event_log(self) -> EventLog:
        row = await self._conn.fetchrow(self._q["event_log"])
        assert row is not None, "the event log has its one row"
        return EventLog(row["last_sequence"], row["deleted_through"], row["confirmed_through"])

    async def confirm_events(self) -> int:
        waiting: int = await self._conn.fetchval(self._q["confirm_events"])
        return waiting

    async def sequence_events(self, batch: int, announce: Collection[uuid.UUID]) -> int:
        # As text: the ids are only passed on in the notification.
        announced = [str(order_id) for order_id in announce]
        numbered: int = await self._conn.fetchval(self._q["sequence_events"], batch, announced)
        return numbered

    async def expire_events(self, retention_seconds: float, batch: int) -> int:
        deleted: int = await self._conn.fetchval(self._q["expire_events"], retention_seconds, batch)
        return deleted
