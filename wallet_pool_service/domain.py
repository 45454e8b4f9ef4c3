"""Pool decisions and value types: no I/O here."""

import enum
import hashlib
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from shared.errors import FailedPrecondition, InvalidArgument, NotFound
from shared.validation import parse_text

MAX_ADDRESSES_PER_CALL = 1000
MAX_ADDRESS_LENGTH = 128

_BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BASE58_INDEX = {char: index for index, char in enumerate(_BASE58_ALPHABET)}
_BECH32 = re.compile(r"^bc1[02-9ac-hj-np-z]{8,87}$")
_ETH = re.compile(r"^0x[0-9a-fA-F]{40}$")
_GENERIC = re.compile(r"^[A-Za-z0-9]{16,128}$")
# Base58Check version bytes: BTC P2PKH and P2SH, TRON.
_BASE58_VERSIONS = {"BTC": (0x00, 0x05), "TRON": (0x41,)}


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
class Release:
    released: bool
    dequeued: bool


@dataclass(frozen=True)
class NetworkStats:
    network: str
    total: int
    available: int
    allocated: int
    queued: int
    disabled: int
    low_water_mark: int

    @property
    def below_low_water_mark(self) -> bool:
        return self.available < self.low_water_mark


class WalletState(enum.StrEnum):
    AVAILABLE = "AVAILABLE"
    ALLOCATED = "ALLOCATED"
    DISABLED = "DISABLED"


class Row(Protocol):
    def __getitem__(self, key: str) -> Any: ...


@dataclass(frozen=True)
class Wallet:
    address: str
    network: str
    order_id: uuid.UUID | None
    disabled: bool
    disabled_reason: str
    create_time: datetime
    release_time: datetime | None

    @property
    def state(self) -> WalletState:
        if self.order_id is not None:
            return WalletState.ALLOCATED
        return WalletState.DISABLED if self.disabled else WalletState.AVAILABLE

    @classmethod
    def from_row(cls, row: Row) -> "Wallet":
        return cls(
            address=row["address"],
            network=row["network"],
            order_id=row["order_id"],
            disabled=row["disabled_at"] is not None,
            disabled_reason=row["disabled_reason"],
            create_time=row["created_at"],
            release_time=row["released_at"],
        )


@dataclass(frozen=True)
class Assignment:
    order_id: uuid.UUID
    network: str
    assign_time: datetime
    release_time: datetime | None


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


class NetworkMismatch(FailedPrecondition):
    def __init__(self, held: str, asked: str) -> None:
        super().__init__(f"network: the order is already allocated on {held}, not {asked}")


def base58check_payload(text: str) -> bytes | None:
    """The payload of a Base58Check string (version byte first), or None if it is not one."""
    number = 0
    for char in text:
        digit = _BASE58_INDEX.get(char)
        if digit is None:
            return None
        number = number * 58 + digit
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    raw = b"\x00" * (len(text) - len(text.lstrip("1"))) + raw
    if len(raw) < 5:
        return None
    payload, checksum = raw[:-4], raw[-4:]
    if hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4] != checksum:
        return None
    return payload


def base58check_encode(payload: bytes) -> str:
    raw = payload + hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    number = int.from_bytes(raw, "big")
    chars = []
    while number:
        number, digit = divmod(number, 58)
        chars.append(_BASE58_ALPHABET[digit])
    leading_zeros = len(raw) - len(raw.lstrip(b"\x00"))
    return "1" * leading_zeros + "".join(reversed(chars))


def address_problem(network: str, address: str) -> str | None:
    """Why `address` is not a well-formed address of `network`, or None if it is."""
    if network == "ETH":
        return None if _ETH.match(address) else "expected 0x followed by 40 hex digits"
    if network == "BTC" and address.startswith("bc1"):
        return None if _BECH32.match(address) else "not a bech32 address"
    if network in _BASE58_VERSIONS:
        payload = base58check_payload(address)
        if payload is None or len(payload) != 21:
            return "not a Base58Check address"
        if payload[0] not in _BASE58_VERSIONS[network]:
            return f"not a {network} address (version byte {payload[0]:#04x})"
        return None
    return None if _GENERIC.match(address) else "expected 16 to 128 letters and digits"


def check_address_field(address: str, field: str = "address") -> str:
    """A non-empty, bounded address to look up (its network is not known yet)."""
    return parse_text(address, field, MAX_ADDRESS_LENGTH, required=True)


def check_addresses(network: str, addresses: list[str]) -> list[str]:
    """The addresses stripped, or InvalidArgument naming the first bad one."""
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
        cleaned.append(address)
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
        elif network in _BASE58_VERSIONS:
            addresses.append(base58check_encode(bytes([_BASE58_VERSIONS[network][0]]) + body))
        else:
            addresses.append(network.lower() + body.hex())
    return addresses
