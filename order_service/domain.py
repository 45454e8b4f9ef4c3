"""Order statuses, the transition table, who sees which order, and value types: no I/O here.

The transition table below is the only place that knows which status may follow which.
"""

import enum
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from order_service.payment import NO_TOLERANCE, PaymentStatus, Tolerance
from shared.auth import CLIENT, OPERATOR, Principal
from shared.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    OutcomeUnknown,
    PermissionDenied,
    Violation,
)
from shared.rows import Row, from_row, optional
from shared.validation import parse_decimal_amount, parse_text

MAX_REQUEST_ID_LENGTH = 128
# Who and why, in the history of an order the expiry loop cancelled.
SYSTEM_ACTOR = "system"
EXPIRED_REASON = "expired"
MAX_REASON_LENGTH = 500


class OrderStatus(enum.StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"


TRANSITIONS: Mapping[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset({OrderStatus.PROCESSING, OrderStatus.CANCELLED}),
    OrderStatus.PROCESSING: frozenset({OrderStatus.COMPLETED, OrderStatus.CANCELLED}),
    OrderStatus.COMPLETED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
}
LIVE_STATUSES = frozenset(s for s in OrderStatus if TRANSITIONS[s])


class WalletRelease(enum.Enum):
    """What a status update did with the order's wallet."""

    NOT_NEEDED = "not_needed"
    RELEASED = "released"
    PENDING = "pending"


class Allocation(enum.Enum):
    """Where an order stands with the wallet pool."""

    AWAITING_POOL = "awaiting_pool"  # the pool has not answered yet: no wallet, no place
    QUEUED = "queued"
    ASSIGNED = "assigned"
    NONE = "none"  # a final order that never held a wallet


class DepositDisposition(enum.StrEnum):
    """As the pool classified a deposit: only COUNTED counts toward the payment."""

    COUNTED = "COUNTED"
    DUST = "DUST"
    UNKNOWN_ASSET = "UNKNOWN_ASSET"
    WRONG_ASSET = "WRONG_ASSET"


class DepositStatus(enum.StrEnum):
    """As the pool last said: only a CONFIRMED deposit is received for good, a REVERTED one
    never counts."""

    CONFIRMING = "CONFIRMING"
    CONFIRMED = "CONFIRMED"
    REVERTED = "REVERTED"


@dataclass(frozen=True)
class Order:
    id: uuid.UUID
    status: OrderStatus
    network: str
    amount: Decimal
    wallet_address: str | None
    queue_position: int | None
    request_id: str | None
    create_time: datetime
    update_time: datetime
    # The name of the credential that created the order (`request_id` is its key).
    created_by: str
    wallet_release: WalletRelease = WalletRelease.NOT_NEEDED
    # The asset the customer pays in ('' the network's coin).
    asset: str = ""
    payment_status: PaymentStatus = PaymentStatus.UNPAID
    received_confirmed: Decimal = Decimal(0)
    received_pending: Decimal = Decimal(0)
    # The settings' snapshot when the order was created.
    tolerance: Tolerance = NO_TOLERANCE
    # When it was shown its address: its payment window runs from then (None: not yet).
    payment_window_start: datetime | None = None

    @classmethod
    def from_row(cls, row: Row) -> "Order":
        tolerance = Tolerance(
            row["tolerance_under_pct"],
            row["tolerance_under_abs"],
            row["tolerance_over_pct"],
            row["tolerance_over_abs"],
        )
        return from_row(
            cls,
            row,
            convert={
                "status": OrderStatus,
                "wallet_release": WalletRelease.__getitem__,
                "payment_status": PaymentStatus,
            },
            given={"tolerance": tolerance},
        )


def allocation_of(order: Order) -> Allocation:
    """A wallet (still shown on a final order, for its deposits), a queue place, or, for a
    live order, not yet an answer from the pool."""
    if order.wallet_address is not None:
        return Allocation.ASSIGNED
    if is_final_status(order.status):
        return Allocation.NONE
    if order.queue_position is not None:
        return Allocation.QUEUED
    return Allocation.AWAITING_POOL


def payment_window_end(order: Order, ttl_seconds: float) -> datetime | None:
    """When a PENDING order's payment window ends (None: it has not started, or there is no
    expiry, or the order is no longer PENDING)."""
    if not ttl_seconds or order.payment_window_start is None:
        return None
    if order.status is not OrderStatus.PENDING:
        return None
    return order.payment_window_start + timedelta(seconds=ttl_seconds)


def watch_is_over(order: Order) -> bool:
    """Nothing more will change: the order is final and its release no longer pending."""
    return is_final_status(order.status) and order.wallet_release is not WalletRelease.PENDING


@dataclass(frozen=True)
class OrderDeposit:
    """A deposit the pool's chain watcher saw to the order's address (late: after the
    order's wallet was released)."""

    txid: str
    index: int
    amount: Decimal
    address: str
    block_height: int
    block_time: datetime
    late: bool
    # The asset's code ('' the coin; None an unknown token) and what the deposit does.
    asset: str | None = ""
    disposition: DepositDisposition = DepositDisposition.COUNTED
    token_contract: str | None = None
    # As the pool last said, and what the asset needs (None: counted as confirmed, as
    # deposits recorded before confirmations were tracked).
    confirmations: int | None = None
    required_confirmations: int | None = None
    status: DepositStatus = DepositStatus.CONFIRMED

    @property
    def counted(self) -> bool:
        """Counted by the pool and not reverted since."""
        return (
            self.disposition is DepositDisposition.COUNTED
            and self.status is not DepositStatus.REVERTED
        )

    @property
    def confirmed(self) -> bool:
        return self.status is DepositStatus.CONFIRMED

    @classmethod
    def from_row(cls, row: Row, prefix: str = "") -> "OrderDeposit":
        """From the order's deposit columns, or an event's (`prefix` 'deposit_')."""
        return from_row(
            cls,
            row,
            prefix=prefix,
            columns={} if prefix else {"index": "output_index"},
            convert={"disposition": DepositDisposition, "status": DepositStatus},
        )


@dataclass(frozen=True)
class PoolDeposit:
    """A deposit as the pool recorded it (its id is the cursor of its list)."""

    pool_id: int
    order_id: uuid.UUID
    deposit: OrderDeposit
    # Its last change's number in the pool (the change cursor).
    change: int = 0


@dataclass(frozen=True)
class OrderScope:
    """Which orders a caller may see: every order, or only those one credential created.

    The one place that decides visibility: `of` gives a call's scope from its credential,
    single-order reads ask `sees`, and listings filter on `creator` in SQL with the same
    meaning (None: every order)."""

    creator: str | None

    def __post_init__(self) -> None:
        if self.creator == "":
            raise ValueError("a creator's scope needs the creator's name")

    @classmethod
    def every_order(cls) -> "OrderScope":
        return cls(creator=None)

    @classmethod
    def created_by(cls, name: str) -> "OrderScope":
        return cls(creator=name)

    @classmethod
    def of(cls, principal: Principal) -> "OrderScope":
        """An operator sees every order; a client only the orders it created."""
        if principal.role == OPERATOR:
            return cls.every_order()
        if principal.role == CLIENT:
            return cls.created_by(principal.name)
        raise PermissionDenied(f"role {principal.role!r} may not read orders")

    def sees(self, order: Order) -> bool:
        return self.creator is None or order.created_by == self.creator

    def require_visible(self, order_id: uuid.UUID, order: Order | None) -> Order:
        """`order` if this scope sees it; OrderNotFound, exactly as for an order that does
        not exist, when it is missing or not this scope's to see."""
        if order is None or not self.sees(order):
            raise OrderNotFound(order_id)
        return order


@dataclass(frozen=True)
class OrderFilter:
    status: OrderStatus | None = None
    network: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass(frozen=True)
class StatusChange:
    from_status: OrderStatus | None
    to_status: OrderStatus
    actor: str
    reason: str
    change_time: datetime
    # The order's payment status when it changed (None: before it was recorded).
    payment_status: PaymentStatus | None = None

    @classmethod
    def from_row(cls, row: Row) -> "StatusChange":
        return from_row(
            cls,
            row,
            convert={
                "from_status": optional(OrderStatus),
                "to_status": OrderStatus,
                "payment_status": optional(PaymentStatus),
            },
        )


@dataclass(frozen=True)
class PendingRelease:
    order_id: uuid.UUID
    address: str
    attempts: int
    # When the order became final: the end of its holding of the address, for the pool.
    final_time: datetime

    @classmethod
    def of(cls, order: Order) -> "PendingRelease":
        """The release an order owes on reaching a final status, before any attempt."""
        return cls(order.id, order.wallet_address or "", attempts=0, final_time=order.update_time)


class OrderNotFound(NotFound):
    """No such order, or none the caller may see: the two are told apart to nobody."""

    def __init__(self, order_id: uuid.UUID) -> None:
        super().__init__(f"order_id: no order {order_id}")


class IllegalTransition(FailedPrecondition):
    def __init__(self, current: OrderStatus, target: OrderStatus) -> None:
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none: the status is final"
        super().__init__(
            f"status: cannot move an order from {current} to {target}; allowed: {allowed}",
            Violation(
                "STATUS_TRANSITION",
                f"status:{current}",
                f"current status {current}; allowed next: {allowed}",
            ),
        )
        self.current = current
        self.target = target


class RequestIdReused(AlreadyExists):
    def __init__(self) -> None:
        super().__init__("request_id: already used for an order with other parameters")


# The domain of the google.rpc.ErrorInfo this service attaches.
ERROR_DOMAIN = "exchange.order.v1"


class ChangeOutcomeUnknown(OutcomeUnknown):
    def __init__(self, order_id: uuid.UUID) -> None:
        super().__init__(
            "the database connection was lost while the change was being written; it may have"
            " been applied. Retrying the same status is safe (a no-op if it was applied)",
            ERROR_DOMAIN,
            {"order_id": str(order_id)},
        )


class CreationOutcomeUnknown(OutcomeUnknown):
    def __init__(self, order_id: uuid.UUID, request_id: str | None) -> None:
        if request_id is None:
            advice = (
                "Without a request_id a retry may create a second order: look this one up"
                " first (GetOrder), and send a request_id to make retries safe"
            )
            metadata = {"order_id": str(order_id)}
        else:
            advice = "Retrying with the same request_id is safe (it returns the same order)"
            metadata = {"order_id": str(order_id), "request_id": request_id}
        super().__init__(
            "the database connection was lost while the order was being written; it may have"
            f" been created as order {order_id}. {advice}",
            ERROR_DOMAIN,
            metadata,
        )


def is_final_status(status: OrderStatus) -> bool:
    return not TRANSITIONS[status]


def is_completed_order(order: Order) -> bool:
    return order.status is OrderStatus.COMPLETED


def is_cancelled_order(order: Order) -> bool:
    return order.status is OrderStatus.CANCELLED


def needs_change(current: OrderStatus, target: OrderStatus) -> bool:
    """False if the order already has `target` (a safe retry); IllegalTransition if not allowed."""
    if current is target:
        return False
    if target not in TRANSITIONS[current]:
        raise IllegalTransition(current, target)
    return True


def only_source(target: OrderStatus) -> OrderStatus | None:
    """The one status that `target` can follow, when there is only one (a status change can
    then be tried as a compare-and-set without reading the order first)."""
    sources = [status for status, nexts in TRANSITIONS.items() if target in nexts]
    return sources[0] if len(sources) == 1 else None


def parse_amount(text: str) -> Decimal:
    return parse_decimal_amount(text, "amount")


def parse_request_id(text: str) -> str | None:
    return parse_text(text, "request_id", MAX_REQUEST_ID_LENGTH) or None


def parse_reason(text: str) -> str:
    return parse_text(text, "reason", MAX_REASON_LENGTH)


def same_request(order: Order, network: str, amount: Decimal, asset: str = "") -> bool:
    return order.network == network and order.amount == amount and order.asset == asset


def retry_delay(attempts: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Exponential backoff with jitter for the `attempts`-th failed release (1-based)."""
    ceiling = min(cap, base * 2 ** max(0, attempts - 1))
    jitter = float((rng or random).random())
    return float(ceiling * (0.5 + 0.5 * jitter))
