"""Pool decisions and value types: no I/O here."""

import enum
import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime

from shared.addresses import (
    address_problem,
    base58check_encode,
    canonical_address,
    lookup_problem,
)
from shared.errors import FailedPrecondition, InvalidArgument, NotFound, Violation
from shared.rows import Row, from_row
from shared.validation import parse_text

MAX_ADDRESSES_PER_CALL = 1000
MAX_ADDRESS_LENGTH = 128

# Base58Check version bytes of the demo addresses: BTC P2PKH, TRON.
_DEMO_BASE58_VERSIONS = {"BTC": 0x00, "TRON": 0x41}


@dataclass(frozen=True)
class Allocation:
    """What an order has from the pool: an address, or a 1-based place in the queue."""

    address: str | None = None
    queue_position: int | None = None


@dataclass(frozen=True)
class HeldWallet:
    address: str
    network: str


@dataclass(frozen=True)
class OrderPlace:
    """What the pool has for an order: released or not, a wallet, or a place in a queue."""

    released: bool
    held: HeldWallet | None
    waiting: tuple[str, int] | None  # (network, 1-based position)


@dataclass(frozen=True)
class ClaimAttempt:
    """One allocation request's work: when the order had nothing, the wallet claimed for it
    or whether it joined the queue; `place`: what the order has after it."""

    place: OrderPlace
    claimed: str | None
    enqueued: bool


@dataclass(frozen=True)
class ReleasedOrder:
    """One release's work: the wallet freed (if the order held one), whether the order left
    a queue, and (order id, address) of the wallet a waiting order got at once (if any).
    A release that named a wallet the order does not hold did nothing; then `kept_address`
    is the wallet the order holds, or `kept_queue` the network whose queue it waits in."""

    freed: HeldWallet | None
    dequeued: bool
    handed: tuple[uuid.UUID, str] | None
    kept_address: str | None = None
    kept_queue: str | None = None
    # The deposit change number the release leaves for the order (ReleaseWalletResponse).
    deposit_change: int = 0


def current_allocation(place: OrderPlace) -> Allocation:
    """What the order has now: its wallet, its place in the queue, or (released) neither."""
    if place.held is not None:
        return Allocation(address=place.held.address)
    return Allocation(queue_position=place.waiting[1] if place.waiting else None)


def existing_allocation(place: OrderPlace, network: str) -> Allocation | None:
    """What an allocation request for `network` gets from what the order already has (None:
    nothing yet, so claim or queue). A released order gets nothing again; an order stays on
    its network."""
    if place.released:
        raise OrderAlreadyReleased()
    if place.held is not None:
        if place.held.network != network:
            raise NetworkMismatch(place.held.network, network)
        return Allocation(address=place.held.address)
    if place.waiting is not None:
        if place.waiting[0] != network:
            raise NetworkMismatch(place.waiting[0], network)
        return Allocation(queue_position=place.waiting[1])
    return None


def allocation_after(attempt: ClaimAttempt, network: str) -> Allocation:
    """What an allocation request for `network` answers: the wallet it claimed or the place
    it queued for, or else what the order already had (see existing_allocation)."""
    if attempt.claimed is None and not attempt.enqueued:
        existing = existing_allocation(attempt.place, network)
        if existing is not None:
            return existing
    return current_allocation(attempt.place)


@dataclass(frozen=True)
class HandOff:
    """A wallet given to an order that waited in the queue."""

    order_id: uuid.UUID
    address: str
    network: str


@dataclass(frozen=True)
class Release:
    released: bool
    dequeued: bool
    deposit_change: int = 0


def release_outcome(order_id: uuid.UUID, address: str, work: ReleasedOrder) -> Release:
    """What a release answers; ReleaseMismatch when it named a wallet the order does not hold
    (it then changed nothing)."""
    if work.kept_address is not None:
        raise ReleaseMismatch(order_id, address, f"it holds {work.kept_address}")
    if work.kept_queue is not None:
        raise ReleaseMismatch(
            order_id, address, f"it holds no wallet and waits in the {work.kept_queue} queue"
        )
    return Release(
        released=work.freed is not None, dequeued=work.dequeued, deposit_change=work.deposit_change
    )


@dataclass(frozen=True)
class WalletCounts:
    total: int = 0
    available: int = 0
    allocated: int = 0
    disabled: int = 0
    cooling: int = 0
    held_by_watermark: int = 0


@dataclass(frozen=True)
class NetworkStats:
    network: str
    total: int
    available: int
    allocated: int
    queued: int
    disabled: int
    cooling: int
    low_water_mark: int
    # Of the cooling wallets, those the watermark guard holds back.
    held_by_watermark: int = 0
    # The guard's confirmations (None: off), the watcher's scanned height (None: silent).
    reuse_confirmations: int | None = None
    scanned_height: int | None = None
    watcher_report_time: datetime | None = None
    held_reason: str = ""

    @property
    def below_low_water_mark(self) -> bool:
        return self.available < self.low_water_mark


class WalletState(enum.StrEnum):
    AVAILABLE = "AVAILABLE"
    ALLOCATED = "ALLOCATED"
    DISABLED = "DISABLED"
    COOLING = "COOLING"


@dataclass(frozen=True)
class Wallet:
    address: str
    network: str
    order_id: uuid.UUID | None
    disabled: bool
    disabled_reason: str
    create_time: datetime
    release_time: datetime | None
    # Set while the wallet cools down after a release.
    cooldown_end_time: datetime | None
    # The watcher's scanned height at the last release (None: unknown or never released),
    # the scanned height from which it may be reused (None: not guarded), and the scanned
    # height now (None: the watcher never reported).
    release_height: int | None = None
    reuse_height: int | None = None
    scanned_height: int | None = None

    @property
    def held_by_watermark(self) -> bool:
        if self.reuse_height is None:
            return False
        return self.scanned_height is None or self.scanned_height < self.reuse_height

    @property
    def state(self) -> WalletState:
        if self.order_id is not None:
            return WalletState.ALLOCATED
        if self.disabled:
            return WalletState.DISABLED
        if self.cooldown_end_time or self.held_by_watermark:
            return WalletState.COOLING
        return WalletState.AVAILABLE

    @property
    def cooling_reason(self) -> str:
        """What a cooling wallet waits for ('' unless cooling)."""
        if self.state is not WalletState.COOLING:
            return ""
        reasons = []
        if self.cooldown_end_time:
            reasons.append(f"the cooldown until {self.cooldown_end_time.isoformat()}")
        if self.held_by_watermark:
            if self.release_height is None or self.scanned_height is None:
                reasons.append(f"the next report of the {self.network} watcher")
            else:
                reasons.append(
                    f"the {self.network} watcher to scan height {self.reuse_height} "
                    f"(scanned {self.scanned_height})"
                )
        return "waits for " + " and ".join(reasons)

    @classmethod
    def from_row(cls, row: Row) -> "Wallet":
        return from_row(
            cls,
            row,
            columns={"create_time": "created_at", "release_time": "released_at"},
            given={
                "disabled": row["disabled_at"] is not None,
                "cooldown_end_time": row["cooldown_until"] if row["cooling_down"] else None,
            },
        )


@dataclass(frozen=True)
class Assignment:
    order_id: uuid.UUID
    network: str
    assign_time: datetime
    release_time: datetime | None

    @classmethod
    def from_row(cls, row: Row) -> "Assignment":
        return from_row(
            cls, row, columns={"assign_time": "assigned_at", "release_time": "released_at"}
        )


class WalletNotFound(NotFound):
    def __init__(self, address: str) -> None:
        super().__init__(f"address: no wallet {address[:MAX_ADDRESS_LENGTH]!r} in the pool")


@dataclass(frozen=True)
class AddedWallets:
    added: list[str]
    duplicates: list[str]


class OrderAlreadyReleased(FailedPrecondition):
    def __init__(self) -> None:
        super().__init__("order_id: this order's wallet was already released; it gets no other")


class ReleaseMismatch(FailedPrecondition):
    """A release named a wallet the order does not hold: nothing was released or dequeued."""

    def __init__(self, order_id: uuid.UUID, address: str, kept: str) -> None:
        super().__init__(
            f"address: order {order_id} does not hold {address}: {kept}; nothing was released",
            Violation(
                "WALLET_HOLDER", f"order:{order_id}", f"the order does not hold {address}: {kept}"
            ),
        )


class NetworkMismatch(FailedPrecondition):
    def __init__(self, held: str, asked: str) -> None:
        super().__init__(f"network: the order is already allocated on {held}, not {asked}")


def check_address_field(address: str, *, required: bool = True) -> str:
    """An address to look up (its network is not known yet) in the form AddWallets stores it,
    or InvalidArgument if no network's check takes it (as AddWallets would refuse it); ''
    when it is optional and not given."""
    text = parse_text(address, "address", MAX_ADDRESS_LENGTH, required=required)
    if not text:
        return text
    problem = lookup_problem(text)
    if problem:
        raise InvalidArgument(
            "address", f"{text!r} is not a valid address of any network ({problem})"
        )
    return canonical_address(text)


def check_addresses(network: str, addresses: list[str]) -> list[str]:
    """The addresses stripped and in canonical form (see `canonical_address`), or
    InvalidArgument naming the first bad one."""
    if not addresses:
        raise InvalidArgument("addresses", "at least one address is required")
    if len(addresses) > MAX_ADDRESSES_PER_CALL:
        raise InvalidArgument("addresses", f"at most {MAX_ADDRESSES_PER_CALL} per call")
    cleaned = []
    for index, raw in enumerate(addresses):
        address = raw.strip()
        field = f"addresses[{index}]"
        if not address:
            raise InvalidArgument(field, "is empty")
        if len(address) > MAX_ADDRESS_LENGTH:
            raise InvalidArgument(field, f"longer than {MAX_ADDRESS_LENGTH} characters")
        problem = address_problem(network, address)
        if problem:
            raise InvalidArgument(field, f"{address!r} is not a valid {network} address: {problem}")
        cleaned.append(canonical_address(address))
    return cleaned


def split_repeats(addresses: list[str]) -> tuple[list[str], list[str]]:
    """(first occurrences in order, later repeats)."""
    seen: set[str] = set()
    unique: list[str] = []
    repeats: list[str] = []
    for address in addresses:
        (repeats if address in seen else unique).append(address)
        seen.add(address)
    return unique, repeats


def demo_addresses(network: str, count: int) -> list[str]:
    """Well-formed, deterministic addresses for development pools (not backed by keys)."""
    addresses = []
    for index in range(count):
        body = hashlib.sha256(f"demo:{network}:{index}".encode()).digest()[:20]
        if network == "ETH":
            addresses.append("0x" + body.hex())
        elif network in _DEMO_BASE58_VERSIONS:
            addresses.append(base58check_encode(bytes([_DEMO_BASE58_VERSIONS[network]]) + body))
        else:
            raise ValueError(f"no demo addresses for network {network!r}")
    return addresses
