"""The order event log's values and its one rule for reading: event types, events, and
where reading after a cursor starts (no I/O here)."""

import enum
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from order_service.domain import OrderDeposit, OrderStatus
from order_service.payment import PaymentStatus
from shared.errors import OutOfRange
from shared.rows import Row, from_row, optional


class EventType(enum.StrEnum):
    CREATED = "CREATED"
    QUEUED = "QUEUED"
    WALLET_ASSIGNED = "WALLET_ASSIGNED"
    STATUS_CHANGED = "STATUS_CHANGED"
    EXPIRED = "EXPIRED"
    RELEASE_DELIVERED = "RELEASE_DELIVERED"
    DEPOSIT_RECEIVED = "DEPOSIT_RECEIVED"
    PAYMENT_STATUS_CHANGED = "PAYMENT_STATUS_CHANGED"
    DEPOSIT_CONFIRMED = "DEPOSIT_CONFIRMED"
    DEPOSIT_REVERTED = "DEPOSIT_REVERTED"


@dataclass(frozen=True)
class OrderEvent:
    sequence: int
    type: EventType
    order_id: uuid.UUID
    event_time: datetime
    status: OrderStatus
    from_status: OrderStatus | None
    actor: str
    reason: str
    network: str
    wallet_address: str | None
    queue_position: int | None
    deposit: OrderDeposit | None = None
    # PAYMENT_STATUS_CHANGED: from, to, and the amounts then.
    payment_status: PaymentStatus | None = None
    from_payment_status: PaymentStatus | None = None
    received_confirmed: Decimal | None = None
    received_pending: Decimal | None = None

    @classmethod
    def from_row(cls, row: Row) -> "OrderEvent":
        deposit = OrderDeposit.from_row(row, "deposit_") if row["deposit_txid"] else None
        payment_status = optional(PaymentStatus)
        return from_row(
            cls,
            row,
            convert={
                "type": EventType,
                "status": OrderStatus,
                "from_status": optional(OrderStatus),
                "payment_status": payment_status,
                "from_payment_status": payment_status,
            },
            given={"deposit": deposit},
        )


@dataclass(frozen=True)
class EventFilter:
    """Which events a reader asks for: of one order, of some types (none: all), or every one."""

    order_id: uuid.UUID | None = None
    types: frozenset[EventType] = frozenset()


class EventsDeleted(OutOfRange):
    """A consumer asked for events that retention has deleted."""

    def __init__(self, after_sequence: int, deleted_through: int) -> None:
        super().__init__(
            f"after_sequence: events up to {deleted_through} were deleted by retention, so "
            f"the events after {after_sequence} are no longer complete; rebuild your copy "
            f"from ListOrders and continue from after_sequence {deleted_through}"
        )


class SequenceAhead(OutOfRange):
    def __init__(self, after_sequence: int, last_sequence: int) -> None:
        super().__init__(
            f"after_sequence: {after_sequence} is beyond the last sequence of the log "
            f"({last_sequence}); is this cursor from another database?"
        )


def start_of_reading(after_sequence: int, last_sequence: int, deleted_through: int) -> int:
    """Where reading the log after `after_sequence` starts: 0 (a consumer with nothing yet)
    starts at the oldest event kept; any other cursor must not be behind retention (events
    it has not seen are gone) nor beyond the end of the log."""
    if after_sequence == 0:
        return deleted_through
    if after_sequence < deleted_through:
        raise EventsDeleted(after_sequence, deleted_through)
    if after_sequence > last_sequence:
        raise SequenceAhead(after_sequence, last_sequence)
    return after_sequence
