"""The order repository: PostgreSQL, SQL only, bound to one connection."""

import logging
import uuid
from collections.abc import Callable, Collection
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from order_service import domain, events
from order_service.payment import NO_TOLERANCE, Payment, PaymentStatus, Tolerance
from shared.db import is_database_outage, is_read_only
from shared.errors import OutcomeUnknown
from shared.rows import from_row
from shared.sql import SqlAdapter, columns, load_queries

log = logging.getLogger(__name__)

# The deposit fields `record_deposits` takes, in its parameters' order (after the pool's id
# and the order's).
_RECORDED_DEPOSIT_COLUMNS = (
    "txid",
    "index",
    "amount",
    "address",
    "block_height",
    "block_time",
    "late",
    "asset",
    "disposition",
    "token_contract",
    "confirmations",
    "required_confirmations",
    "status",
)


class EventLog(NamedTuple):
    # The last sequence given, the last one retention deleted, and the last one shown: the
    # synchronous standby has its numbering (migration 008).
    last_sequence: int
    deleted_through: int
    confirmed_through: int


def queries() -> dict[str, str]:
    return load_queries("order_service")


class PostgresOrderRepository(SqlAdapter):
    QUERIES = "order_service"

    async def _one(self, query: str, *args: object) -> domain.Order | None:
        return await self._row(query, domain.Order.from_row, *args)

    async def _write(
        self, unknown: Callable[[], OutcomeUnknown], query: str, *args: object
    ) -> domain.Order | None:
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
    ) -> domain.Order | None:
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

    async def by_request_id(self, created_by: str, request_id: str) -> domain.Order | None:
        return await self._one("order_by_request_id", created_by, request_id)

    async def get(self, order_id: uuid.UUID) -> domain.Order | None:
        return await self._one("get_order", order_id)

    async def page(
        self,
        scope: domain.OrderScope,
        filters: domain.OrderFilter,
        after: tuple[datetime, uuid.UUID] | None,
        limit: int,
    ) -> list[domain.Order]:
        """The orders `scope` sees that match `filters`, newest first, after `after`."""
        after_time, after_id = after if after else (None, None)
        return await self._rows(
            "list_orders",
            domain.Order.from_row,
            filters.status.value if filters.status else None,
            filters.network,
            after_time,
            after_id,
            limit,
            filters.created_after,
            filters.created_before,
            scope.creator,
        )

    async def history(self, order_id: uuid.UUID) -> list[domain.StatusChange]:
        return await self._rows("order_history", domain.StatusChange.from_row, order_id)

    async def change_status(
        self,
        order_id: uuid.UUID,
        current: domain.OrderStatus,
        status: domain.OrderStatus,
        reason: str,
        actor: str,
        release_lease_seconds: float | None,
        required_payment: Collection[PaymentStatus] | None = None,
    ) -> domain.Order | None:
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

    async def set_wallet(self, order_id: uuid.UUID, address: str) -> domain.Order | None:
        """The order with its address; None if it is not a live order still waiting."""
        return await self._one("set_wallet", order_id, address)

    async def set_queue_position(self, order_id: uuid.UUID, position: int) -> domain.Order | None:
        """The order with its new place; None if it is not waiting or the place is the same."""
        return await self._one("set_queue_position", order_id, position)

    async def claim_waiting(
        self, limit: int, lease_seconds: float
    ) -> list[tuple[uuid.UUID, str, str]]:
        return await self._rows(
            "claim_waiting_orders",
            lambda row: (row["id"], row["network"], row["asset"]),
            limit,
            lease_seconds,
        )

    async def claim_expired(self, ttl_seconds: float, limit: int) -> list[domain.Order]:
        return await self._rows("claim_expired_orders", domain.Order.from_row, ttl_seconds, limit)

    async def expiry_due(self, ttl_seconds: float) -> bool:
        return await self._value(bool, "expiry_due", ttl_seconds)

    async def release_pending(self, order_id: uuid.UUID) -> bool:
        return await self._value(bool, "release_pending", order_id)

    async def count_pending_releases(self) -> int:
        return await self._value(int, "count_pending_releases")

    async def claim_due_releases(
        self, limit: int, lease_seconds: float
    ) -> list[domain.PendingRelease]:
        return await self._rows(
            "claim_due_releases",
            lambda row: from_row(domain.PendingRelease, row),
            limit,
            lease_seconds,
        )

    async def mark_release_done(self, order_id: uuid.UUID, deposit_change: int) -> None:
        """`deposit_change`: the pool's deposit change number after the release; the
        order's payment is evaluated again once the deposit cursor has passed it."""
        await self._execute("mark_release_done", order_id, deposit_change)

    async def postpone_release(self, order_id: uuid.UUID, delay: float, error: str) -> None:
        await self._execute("postpone_release", order_id, delay, error)

    async def events_after(
        self, after_sequence: int, limit: int, filters: events.EventFilter
    ) -> list[events.OrderEvent]:
        """Events with a greater sequence that match `filters`, in sequence order."""
        order_id = filters.order_id
        query = "events_after" if order_id is None else "order_events_after"
        args: list[object] = [after_sequence, limit, sorted(filters.types)]
        if order_id is not None:
            args.append(order_id)
        return await self._rows(query, events.OrderEvent.from_row, *args)

    async def deposits(self, order_id: uuid.UUID) -> list[domain.OrderDeposit]:
        return await self._rows("order_deposits", domain.OrderDeposit.from_row, order_id)

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
        return await self._rows(
            "record_deposits",
            lambda row: row["order_id"],
            *columns(page, "pool_id", "order_id"),
            *columns(deposits, *_RECORDED_DEPOSIT_COLUMNS),
            through_id,
            through_change,
        )

    async def lock_for_payment(
        self, order_id: uuid.UUID, cursor: int
    ) -> tuple[domain.Order, bool] | None:
        """The order, locked, and whether its payment must wait for its release's deposit
        changes (`cursor`: the last pool change read); None if unknown."""
        row = await self._conn.fetchrow(self._q["lock_order_for_payment"], order_id, cursor)
        return (domain.Order.from_row(row), row["payment_waits"]) if row else None

    async def settling_orders(self, cursor: int, limit: int) -> list[uuid.UUID]:
        """Final orders whose payment waited for the deposit cursor to pass their
        release's change number, which `cursor` has."""
        return await self._rows("settling_orders", lambda row: row["id"], cursor, limit)

    async def settle(self, order_id: uuid.UUID, cursor: int) -> None:
        await self._execute("settle_order", order_id, cursor)

    async def set_payment(self, order_id: uuid.UUID, payment: Payment) -> domain.Order | None:
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
        return await self._value(int, "confirm_events")

    async def sequence_events(self, batch: int, announce: Collection[uuid.UUID]) -> int:
        # As text: the ids are only passed on in the notification.
        announced = [str(order_id) for order_id in announce]
        return await self._value(int, "sequence_events", batch, announced)

    async def expire_events(self, retention_seconds: float, batch: int) -> int:
        return await self._value(int, "expire_events", retention_seconds, batch)
