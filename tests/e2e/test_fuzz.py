"""Generated garbage sent to every RPC of both services, running as real processes.

Whatever a client sends, the answer is one of the documented status codes, never UNKNOWN or
INTERNAL; a malformed field or an unknown entity is named first in the message (and, for
INVALID_ARGUMENT, in a google.rpc.BadRequest); and afterwards both services still serve and
every invariant holds. One stack and one database serve the whole module; the examples are
derandomized, so every run sends the same requests.
"""

import asyncio
import base64
import hashlib
import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar, cast

import asyncpg
import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from exchange.order.v1 import order_service_pb2 as opb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from tests.databases import DatabaseFactory
from tests.e2e import fuzz_answers
from tests.e2e.conftest import own_stack
from tests.e2e.stack import OwnStack, start_stack
from tests.invariants import check_all

pytestmark = own_stack
TestFunction = TypeVar("TestFunction", bound=Callable[..., Any])

DOCUMENTED = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.OUT_OF_RANGE,
    }
)
NAMES_THE_FIELD = frozenset(
    {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.OUT_OF_RANGE}
)
CALL_TIMEOUT = 10.0
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "100")),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass(frozen=True)
class Rpc:
    service: str  # "orders" or "pool": which stack channel
    full_name: str  # /package.Service/Method
    name: str
    request_type: type[Message]
    roles: tuple[str, ...]  # who may call it: "client", "operator", "service"
    response_type: type[Message] | None = None
    streaming: bool = False


def _rpcs(
    module: Any,
    service_name: str,
    channel: str,
    roles: dict[str, tuple[str, ...]],
    streaming: bool = False,
) -> list[Rpc]:
    service = module.DESCRIPTOR.services_by_name[service_name]
    return [
        Rpc(
            channel,
            f"/{service.full_name}/{method.name}",
            method.name,
            getattr(module, method.input_type.name),
            roles[method.name],
            getattr(module, method.output_type.name),
            streaming,
        )
        for method in service.methods
        if method.server_streaming == streaming
    ]


READERS = ("client", "operator")
RPCS = _rpcs(
    opb,
    "OrderService",
    "orders",
    {
        "CreateOrder": READERS,
        "GetOrder": READERS,
        "ListOrders": READERS,
        "UpdateOrderStatus": ("operator",),
        "GetOrderHistory": READERS,
        "ListOrderEvents": ("operator",),
    },
) + _rpcs(
    wpb,
    "WalletPoolService",
    "pool",
    {
        "AllocateWallet": ("service",),
        "ReleaseWallet": ("service",),
        "GetPoolStats": ("operator", "service"),
        "AddWallets": ("operator",),
        "DisableWallet": ("operator",),
        "EnableWallet": ("operator",),
        "ListWallets": ("operator",),
        "GetWalletHistory": ("operator",),
        "ReportDeposits": ("watcher",),
        "ListLateDeposits": ("operator",),
        "ListDeposits": ("operator", "service"),
        "ListAssets": ("operator", "service", "watcher"),
        "ListDepositChanges": ("operator", "service"),
    },
)
RPC_IDS = [rpc.name for rpc in RPCS]
# The three server streams (README: the fuzzing covers every RPC). The suite has no
# subscriber token: the operator stands for the event log's readers.
STREAMS = _rpcs(
    opb,
    "OrderService",
    "orders",
    {"WatchOrder": READERS, "WatchOrderEvents": ("operator",)},
    streaming=True,
) + _rpcs(wpb, "WalletPoolService", "pool", {"WatchHandOffs": ("service",)}, streaming=True)
STREAM_IDS = [rpc.name for rpc in STREAMS]


# --- Addresses ---------------------------------------------------------------------------

_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"


def base58check(payload: bytes) -> str:
    raw = payload + hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    number = int.from_bytes(raw, "big")
    text = ""
    while number:
        number, digit = divmod(number, 58)
        text = _BASE58[digit] + text
    return "1" * (len(raw) - len(raw.lstrip(b"\x00"))) + text


def eth_address(body: bytes) -> str:
    return "0x" + body.hex()


def tron_address(body: bytes) -> str:
    return base58check(b"\x41" + body)


# --- Strategies ----------------------------------------------------------------------------

HUGE = 100_000
ODD_TEXTS = [
    "",
    " ",
    "\t\n",
    "\x00",
    "a\x00b",
    "\x1b[31m",
    "\x7f",
    "\u0085",
    "\u2028",
    "\u202e",
    "\ufeff",
    "\u200b",
    "\U0010ffff",
    "é",
    "ß",
    "İ",
    "日本語",
    "🙂",
    "\uff25\uff34\uff28",
    "null",
    "None",
    "NaN",
    "-Infinity",
    "1e3",
    "0",
    "-1",
    "' OR 1=1 --",
    "%s%n%x",
    "${jndi:ldap://x}",
    "../../etc/passwd",
    "\\",
    '"',
    "{}",
]
HUGE_TEXTS = [char * HUGE for char in ("a", "\x00", "9", "é", "🙂", " ", "\u202e")]

garbage_text = st.one_of(
    st.sampled_from(ODD_TEXTS),
    st.text(st.characters(codec="utf-8"), max_size=40),
    st.text(st.characters(codec="utf-8", categories=["Cc", "Cf", "Z", "M"]), max_size=8),
    st.sampled_from(HUGE_TEXTS),
    st.builds(
        lambda text, times: text * times, st.text(min_size=1, max_size=3), st.integers(1, 300)
    ),
)

eth_bodies = st.binary(min_size=20, max_size=20)
valid_addresses = st.one_of(
    eth_bodies.map(eth_address),
    eth_bodies.map(lambda body: base58check(b"\x00" + body)),
    eth_bodies.map(lambda body: base58check(b"\x05" + body)),
    eth_bodies.map(tron_address),
    st.text(st.sampled_from(_BECH32), min_size=39, max_size=59).map(lambda t: "bc1" + t),
)
address_like = st.one_of(
    valid_addresses,
    valid_addresses.map(lambda a: f" {a}\t"),
    valid_addresses.map(str.upper),
    valid_addresses.map(lambda a: a[:-1]),
    valid_addresses.map(lambda a: a + "\x00"),
    eth_bodies.map(lambda body: base58check(b"\x07" + body)),
    st.binary(max_size=40).map(lambda b: base58check(b)),
    st.text(st.sampled_from("0123456789abcdefABCDEFxg"), max_size=50).map(lambda t: "0x" + t),
    st.sampled_from(["0x", "bc1", "1", "T", "0x" + "0" * 40, "0X" + "a" * 40, "1" * 129]),
    garbage_text,
)


def _lists_of_many(count: int) -> list[str]:
    return [
        eth_address(hashlib.sha256(f"fuzz:{count}:{i}".encode()).digest()[:20])
        for i in range(count)
    ]


MANY_ADDRESS_LISTS = [
    _lists_of_many(1001),
    _lists_of_many(5000),
    [""] * 1001,
    ["0x12"] * 2000,
    _lists_of_many(1000),  # exactly the limit: accepted
    _lists_of_many(1000)[:500] * 2,  # repeats within the limit
]
address_lists = st.one_of(
    st.lists(address_like, max_size=12),
    st.sampled_from(MANY_ADDRESS_LISTS),
)

networks = st.one_of(
    st.sampled_from(
        [
            "ETH",
            "BTC",
            "TRON",
            "eth",
            " Btc ",
            "DOGE",
            "E",
            "ETH\x00",
            "\uff25\uff34\uff28",
            "ETH" * 10,
            "ETH,BTC",
        ]
    ),
    garbage_text,
)

amounts = st.one_of(
    st.sampled_from(
        [
            "0.5",
            "1",
            "0.015",
            "0",
            "0.0",
            "-1",
            "-0",
            "+1",
            "1e3",
            "1E-3",
            "1.",
            ".5",
            "1,5",
            "1_000",
            "0x10",
            "NaN",
            "Infinity",
            "1" * 25,
            "1." + "1" * 19,
            "9" * 24 + "." + "9" * 18,
            "0." + "0" * 17 + "1",
            "0." + "0" * 18,
            "\u0663",
            "\uff11",
            " 1 ",
            "1 2",
            "9" * HUGE,
        ]
    ),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.floats().map(repr),
    st.integers().map(str),
    garbage_text,
)


def uuid_forms(ids: st.SearchStrategy[uuid.UUID]) -> st.SearchStrategy[str]:
    return st.one_of(
        ids.map(str),
        ids.map(lambda u: u.hex),
        ids.map(lambda u: f"{{{u}}}"),
        ids.map(lambda u: u.urn),
        ids.map(lambda u: str(u).upper()),
        ids.map(lambda u: f" {u} "),
    )


malformed_uuids = st.one_of(
    st.sampled_from(
        [
            "42",
            "0" * 32,
            "0" * 33,
            "g" * 32,
            "\u0660" * 32,
            "-" * 36,
            "00000000-0000-0000-0000-00000000000",
            "00000000-0000-0000-0000-0000000000000",
            "00000000_0000_0000_0000_000000000000",
            "urn:uuid:",
            "{}",
        ]
    ),
    st.uuids().map(lambda u: str(u)[:-1] + "\x00"),
    garbage_text,
)

json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
OFFSETS = [None, UTC, timezone(timedelta(hours=14)), timezone(-timedelta(hours=23, minutes=59))]
EDGE_TIMES = [datetime.min, datetime.max, datetime(1970, 1, 1), datetime(2000, 1, 1, 12)]
token_times = st.one_of(
    st.builds(
        lambda moment, offset: moment.replace(tzinfo=offset).isoformat(),
        st.one_of(st.sampled_from(EDGE_TIMES), st.datetimes()),
        st.sampled_from(OFFSETS),
    ),
    st.sampled_from(["", "now", "2020-13-01", "2020-01-01T25:00", "2020-01-01T00:00:00+24:00"]),
    json_values,
)
token_ids = st.one_of(
    st.uuids().map(str),
    st.sampled_from([-1, 0, 1, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**100, True]),
    st.integers(),
    json_values,
)


def token(position: object) -> str:
    """A page token as the services encode theirs: base64 of a JSON position."""
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode()


ODD_TOKENS = [
    "nope",
    "====",
    "e30",  # {} without its padding
    base64.b64encode(b'{"id": 1}+/').decode(),
    base64.urlsafe_b64encode(b"[" * 50_000).decode(),
    base64.urlsafe_b64encode(b'{"id":' * 20_000).decode(),
    base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    base64.urlsafe_b64encode(b"NaN").decode(),
]
# Positions at the ends of time, in every offset: some are out of range once in UTC.
EDGE_POSITIONS = [
    token({"t": moment.replace(tzinfo=offset).isoformat(), "id": str(uuid.UUID(int=0))})
    for moment in EDGE_TIMES
    for offset in OFFSETS
]
page_tokens = st.one_of(
    st.sampled_from(EDGE_POSITIONS),
    st.builds(token, st.fixed_dictionaries({"t": token_times, "id": st.uuids().map(str)})),
    st.builds(token, st.fixed_dictionaries({"t": token_times, "id": token_ids})),
    st.builds(token, st.fixed_dictionaries({"id": token_ids})),
    st.builds(
        token,
        st.fixed_dictionaries({}, optional={"t": token_times, "id": token_ids, "x": json_values}),
    ),
    st.builds(token, json_values),
    st.sampled_from(ODD_TOKENS),
    st.binary(max_size=30).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    garbage_text,
)

page_sizes = st.one_of(
    st.sampled_from([0, 1, 499, 500, 501, 2**31 - 1, 2**31, 2**32 - 1]),
    st.integers(0, 2**32 - 1),
)
SECONDS_MIN, SECONDS_MAX = -62135596800, 253402300799
timestamps = st.builds(
    lambda seconds, nanos: Timestamp(seconds=seconds, nanos=nanos),
    st.one_of(
        st.sampled_from([0, -1, SECONDS_MIN, SECONDS_MIN - 1, SECONDS_MAX, SECONDS_MAX + 1]),
        st.sampled_from([-(2**63), 2**63 - 1]),
        st.integers(SECONDS_MIN - 10, SECONDS_MAX + 10),
        st.integers(-(2**63), 2**63 - 1),
    ),
    st.one_of(
        st.sampled_from([0, -1, 999_999_999, 1_000_000_000, -(2**31), 2**31 - 1]),
        st.integers(0, 999_999_999),
    ),
)


def enum_numbers(field_descriptor: FieldDescriptor) -> st.SearchStrategy[int]:
    enum = field_descriptor.enum_type
    assert enum is not None
    known = [value.number for value in enum.values]
    return st.one_of(
        st.sampled_from(known),
        st.sampled_from([-1, 99, len(known), -(2**31), 2**31 - 1]),
        st.integers(-(2**31), 2**31 - 1),
    )


@dataclass
class World:
    """What the fuzzer may name besides garbage: orders and wallets that exist."""

    order_ids: list[str] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)

    def orders(self) -> st.SearchStrategy[str]:
        return st.one_of(
            st.sampled_from(self.order_ids),
            uuid_forms(st.sampled_from([uuid.UUID(i) for i in self.order_ids])),
            uuid_forms(st.uuids()),
            malformed_uuids,
        )

    def phantom_orders(self) -> st.SearchStrategy[str]:
        """Order ids for the pool's internal calls: never a real order's, since a call by
        the order service's credential about a real order would change what it holds."""
        return st.one_of(uuid_forms(st.uuids()), malformed_uuids)

    def known_addresses(self) -> st.SearchStrategy[str]:
        return st.one_of(
            st.sampled_from(self.addresses),
            st.sampled_from(self.addresses).map(lambda a: f" {a} "),
            address_like,
        )


def sensible_deposits(world: World) -> st.SearchStrategy[wpb.ChainDeposit]:
    """Deposits a careful watcher reports (to pool addresses or others, a few txids)."""
    return st.builds(
        wpb.ChainDeposit,
        address=st.one_of(st.sampled_from(world.addresses), eth_bodies.map(eth_address)),
        txid=st.sampled_from(["0xaa", "0xbb", "0xcc"]),
        index=st.integers(0, 2),
        amount=st.sampled_from(["0.5", "1", "2.25"]),
        block_height=st.integers(0, 600),
        block_time=st.integers(0, 2_000_000_000).map(lambda seconds: Timestamp(seconds=seconds)),
        confirmations=st.integers(0, 100),
    )


def sensible_retractions() -> st.SearchStrategy[wpb.Retraction]:
    """Retractions a careful watcher sends (of the few txids its deposits use)."""
    return st.builds(
        wpb.Retraction,
        txid=st.sampled_from(["0xaa", "0xbb", "0xcc"]),
        kind=st.sampled_from([wpb.DEPOSIT_KIND_NATIVE, wpb.DEPOSIT_KIND_TOKEN]),
        index=st.integers(0, 2),
        reason=st.sampled_from([wpb.RETRACTION_REASON_ORPHANED, wpb.RETRACTION_REASON_REPLACED]),
    )


garbage_retractions = st.builds(
    wpb.Retraction,
    txid=garbage_text,
    kind=st.integers(-(2**31), 2**31 - 1),
    index=st.integers(0, 2**32 - 1),
    reason=st.integers(-(2**31), 2**31 - 1),
)


def garbage_deposits(world: World) -> st.SearchStrategy[wpb.ChainDeposit]:
    return st.builds(
        wpb.ChainDeposit,
        address=st.one_of(world.known_addresses(), garbage_text),
        txid=garbage_text,
        index=st.integers(0, 2**32 - 1),
        amount=st.one_of(amounts, garbage_text),
        block_height=st.integers(0, 2**64 - 1),
        block_time=timestamps,
        confirmations=st.integers(0, 2**32 - 1),
    )


def sensible_values(
    rpc: Rpc, field_descriptor: FieldDescriptor, world: World
) -> st.SearchStrategy[Any]:
    """Values a careful client sends, so that a call gets past the fields left sensible."""
    name = field_descriptor.name
    if field_descriptor.is_repeated and field_descriptor.type == FieldDescriptor.TYPE_ENUM:
        return st.lists(enum_numbers(field_descriptor), max_size=3)
    if field_descriptor.is_repeated and name == "deposits":
        return st.lists(sensible_deposits(world), max_size=4)
    if field_descriptor.is_repeated and name == "reverted":
        return st.lists(sensible_retractions(), max_size=3)
    if field_descriptor.is_repeated:
        return st.one_of(
            st.lists(eth_bodies.map(eth_address), min_size=1, max_size=5),
            st.lists(eth_bodies.map(tron_address), min_size=1, max_size=5),
            st.lists(st.sampled_from(world.addresses), min_size=1, max_size=3),
        )
    if field_descriptor.type == FieldDescriptor.TYPE_MESSAGE:
        return st.integers(0, 2_000_000_000).map(lambda seconds: Timestamp(seconds=seconds))
    if field_descriptor.type == FieldDescriptor.TYPE_ENUM:
        enum = field_descriptor.enum_type
        assert enum is not None
        return st.sampled_from([value.number for value in enum.values])
    if field_descriptor.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field_descriptor.type != FieldDescriptor.TYPE_STRING:
        return st.integers(0, 600)
    by_name: dict[str, st.SearchStrategy[str]] = {
        "network": st.sampled_from(["ETH", "BTC", "TRON"]),
        "amount": st.builds(
            lambda units, cents: f"{units}.{cents:02d}", st.integers(0, 10**6), st.integers(1, 99)
        ),
        "order_id": (
            st.uuids().map(str) if rpc.service == "pool" else st.sampled_from(world.order_ids)
        ),
        "address": st.sampled_from(world.addresses),
        "page_token": st.builds(lambda i: token({"id": i}), st.integers(0, 50)),
        "request_id": st.sampled_from(["", "key-1", "key-2", "key-3"]),
        "reason": st.sampled_from(["", "paid", "fuzz"]),
    }
    return by_name.get(name, st.just(""))


def garbage_values(
    rpc: Rpc, field_descriptor: FieldDescriptor, world: World
) -> st.SearchStrategy[Any]:
    """Values for one request field: garbage of its type, and some that go deeper."""
    name = field_descriptor.name
    if field_descriptor.is_repeated and field_descriptor.type == FieldDescriptor.TYPE_ENUM:
        return st.lists(enum_numbers(field_descriptor), max_size=5)
    if field_descriptor.is_repeated and name == "deposits":
        return st.lists(garbage_deposits(world), max_size=4)
    if field_descriptor.is_repeated and name == "reverted":
        return st.lists(garbage_retractions, max_size=4)
    if field_descriptor.is_repeated:
        assert name == "addresses", f"no strategy for repeated {rpc.name}.{name}"
        return address_lists
    if field_descriptor.type == FieldDescriptor.TYPE_MESSAGE:
        message = field_descriptor.message_type
        assert message is not None and message.full_name == "google.protobuf.Timestamp", name
        return timestamps
    if field_descriptor.type == FieldDescriptor.TYPE_ENUM:
        return enum_numbers(field_descriptor)
    if field_descriptor.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field_descriptor.type in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return page_sizes if name == "page_size" else st.integers(0, 2**32 - 1)
    if field_descriptor.type in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32):
        return st.integers(-(2**31), 2**31 - 1)
    if field_descriptor.type in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return st.integers(0, 2**64 - 1)
    if field_descriptor.type in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64):
        return st.integers(-(2**63), 2**63 - 1)
    assert field_descriptor.type == FieldDescriptor.TYPE_STRING, f"{rpc.name}.{name}"
    by_name: dict[str, st.SearchStrategy[str]] = {
        "network": networks,
        "amount": amounts,
        "order_id": world.phantom_orders() if rpc.service == "pool" else world.orders(),
        "address": world.known_addresses(),
        "page_token": page_tokens,
        "request_id": st.one_of(
            st.sampled_from(["key-1", "key-2", "x" * 128, "x" * 129]), garbage_text
        ),
        "reason": st.one_of(st.sampled_from(["fuzz", "x" * 500, "x" * 501]), garbage_text),
    }
    return by_name.get(name, garbage_text)


UNSET = object()
FIELD_MODES = ["sensible", "sensible", "sensible", "garbage", "garbage", "unset"]


def field_value(rpc: Rpc, field_descriptor: FieldDescriptor, world: World) -> Any:
    """A strategy for one field: sensible, garbage, or left unset."""
    modes = {
        "sensible": sensible_values(rpc, field_descriptor, world),
        "garbage": garbage_values(rpc, field_descriptor, world),
        "unset": st.just(UNSET),
    }
    return st.sampled_from(FIELD_MODES).flatmap(modes.__getitem__)


def requests(rpc: Rpc, world: World) -> st.SearchStrategy[dict[str, Any]]:
    """Field values for a request of `rpc` (unset fields left out)."""
    fields = cast(list[FieldDescriptor], rpc.request_type.DESCRIPTOR.fields)
    return st.fixed_dictionaries({f.name: field_value(rpc, f, world) for f in fields}).map(
        lambda values: {name: value for name, value in values.items() if value is not UNSET}
    )


def build(rpc: Rpc, fields: dict[str, Any]) -> Message:
    request = rpc.request_type()
    for name, value in fields.items():
        target = getattr(request, name)
        if isinstance(value, list):
            target.extend(value)
        elif isinstance(value, Message):
            target.CopyFrom(value)
        else:
            setattr(request, name, value)
    return request


# --- Raw wire ------------------------------------------------------------------------------


def varint(number: int) -> bytes:
    number &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, number = number & 0x7F, number >> 7
        out.append(byte | (0x80 if number else 0))
        if not number:
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def wire_entries(numbers: st.SearchStrategy[int]) -> st.SearchStrategy[bytes]:
    """One field on the wire: right or wrong wire type, odd values, broken framing."""
    return st.one_of(
        st.builds(
            lambda n, v: tag(n, 0) + varint(v),
            numbers,
            st.one_of(
                st.sampled_from([-1, 99, 2**31, 2**32, 2**63, 2**64 - 1]),
                st.integers(-(2**63), 2**64 - 1),
            ),
        ),
        st.builds(
            lambda n, payload: tag(n, 2) + varint(len(payload)) + payload,
            numbers,
            st.one_of(
                st.binary(max_size=40),
                st.text(max_size=20).map(str.encode),
                # a nested message, as in a Timestamp: seconds and nanos out of range
                st.builds(
                    lambda s, ns: tag(1, 0) + varint(s) + tag(2, 0) + varint(ns),
                    st.integers(-(2**63), 2**64 - 1),
                    st.integers(-(2**63), 2**64 - 1),
                ),
            ),
        ),
        st.builds(lambda n, b: tag(n, 5) + b, numbers, st.binary(min_size=4, max_size=4)),
        st.builds(lambda n, b: tag(n, 1) + b, numbers, st.binary(min_size=8, max_size=8)),
        st.builds(tag, numbers, st.sampled_from([3, 4, 6, 7])),
        st.builds(
            lambda n, claimed: tag(n, 2) + varint(claimed), numbers, st.integers(1, 2**64 - 1)
        ),
        st.binary(max_size=12),
    )


def wire_messages(rpc: Rpc) -> st.SearchStrategy[bytes]:
    known = [f.number for f in rpc.request_type.DESCRIPTOR.fields] or [1]  # (none: unknown)
    numbers = st.one_of(st.sampled_from(known), st.integers(1, 2**29 - 1), st.just(0))
    return st.one_of(
        st.lists(wire_entries(numbers), max_size=8).map(b"".join),
        st.binary(max_size=200),
    )


# --- Calling and judging -------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    code: grpc.StatusCode
    details: str
    status: status_pb2.Status | None
    body: bytes = b""  # an OK answer's message (a stream's first one), as sent


# A stream open on a valid request may stay quiet (no hand-off, no new event): after this
# long without a message or a status it counts as open, and is cancelled.
QUIET_STREAM_SECONDS = 1.0


async def send(stack: OwnStack, rpc: Rpc, body: bytes, metadata: Any) -> Answer:
    channel = stack.order_channel if rpc.service == "orders" else stack.pool_channel
    try:
        if rpc.streaming:
            stream: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
                rpc.full_name, request_serializer=None, response_deserializer=None
            )
            call = stream(body, metadata=metadata, timeout=CALL_TIMEOUT)
            try:
                first = await asyncio.wait_for(call.read(), QUIET_STREAM_SECONDS)
            except TimeoutError:
                return Answer(grpc.StatusCode.OK, "", None)
            finally:
                call.cancel()
            if first is grpc.aio.EOF:
                return Answer(grpc.StatusCode.OK, "", None)
            return Answer(grpc.StatusCode.OK, "", None, cast(bytes, first))
        unary: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            rpc.full_name, request_serializer=None, response_deserializer=None
        )
        answered = await unary(body, metadata=metadata, timeout=CALL_TIMEOUT)
    except grpc.aio.AioRpcError as error:
        found = None
        trailing: Any = error.trailing_metadata() or ()
        for key, value in trailing:
            if key == "grpc-status-details-bin" and isinstance(value, bytes):
                found = status_pb2.Status.FromString(value)
        return Answer(error.code(), error.details() or "", found)
    return Answer(grpc.StatusCode.OK, "", None, answered)


def judge_ok(rpc: Rpc, answer: Answer, body: bytes, about: str) -> None:
    """An OK answer parses as the RPC's response, to a request that parses, and says
    nothing the documented limits rule out."""
    try:
        request = rpc.request_type.FromString(body)
    except DecodeError:
        raise AssertionError(f"OK to bytes that are no request: {about}") from None
    if rpc.response_type is None or (rpc.streaming and not answer.body):
        return
    try:
        response = rpc.response_type.FromString(answer.body)
    except DecodeError:
        raise AssertionError(f"an answer that is no {rpc.response_type}: {about}") from None
    wrong = fuzz_answers.wrong_with(rpc.name, request, response)
    assert wrong == [], f"{wrong}: {about}"


def log_marks(stack: OwnStack) -> tuple[int, int]:
    """Where each service's log ends now."""
    return len(stack.order_process.logs()), len(stack.pool_process.logs())


def logged_errors(stack: OwnStack, since: tuple[int, int] = (0, 0)) -> list[dict[str, Any]]:
    """Error entries either service logged after `since` (their tracebacks included)."""
    found = []
    for process, offset in zip((stack.order_process, stack.pool_process), since, strict=True):
        text = process.logs()[offset:]
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                entry = {"level": "error", "event": line}  # not ours: a crash, say
            if isinstance(entry, dict) and entry.get("level") in ("error", "critical"):
                found.append({"service": process.module, **entry})
    return found


def summary(entry: dict[str, Any]) -> str:
    """service, method and the exception's last line."""
    last = str(entry.get("exception", entry.get("event", ""))).strip().splitlines()[-1:]
    return f"{entry['service']} {entry.get('method', '')}: {''.join(last)[:300]}"


def shorten(value: object) -> str:
    text = repr(value)
    return text if len(text) < 300 else f"{text[:200]}... ({len(text)} chars)"


def judge(
    stack: OwnStack,
    rpc: Rpc,
    answer: Answer,
    request: object,
    since: tuple[int, int],
    body: bytes = b"",
) -> None:
    """The documented code; for a client mistake, the field first and in the BadRequest;
    for OK, an answer within the documented limits."""
    about = f"{rpc.name}({shorten(request)}) -> {answer.code.name} {answer.details[:300]!r}"
    if answer.code == grpc.StatusCode.OK:
        judge_ok(rpc, answer, body, about)
    if answer.code not in DOCUMENTED:
        tracebacks = "\n".join(
            str(e.get("exception", e))[-3000:] for e in logged_errors(stack, since)
        )
        raise AssertionError(f"undocumented status: {about}\nservice log:\n{tracebacks}")
    if answer.code not in NAMES_THE_FIELD:
        return
    name, colon, _ = answer.details.partition(": ")
    assert colon and re.fullmatch(r"[a-z_]+(\[\d+\])?(\.[a-z_]+)?", name), (
        f"no field first: {about}"
    )
    known = {f.name for f in rpc.request_type.DESCRIPTOR.fields} | {"request"}
    assert name.split("[")[0] in known, f"{name!r} is no field of the request: {about}"
    if answer.code == grpc.StatusCode.INVALID_ARGUMENT:
        assert answer.status is not None, f"no status details: {about}"
        violations = []
        for detail in answer.status.details:
            bad_request = error_details_pb2.BadRequest()
            if detail.Unpack(bad_request):
                violations += [v.field for v in bad_request.field_violations]
        assert violations[:1] == [name], f"BadRequest names {violations}: {about}"


def token_for(stack: OwnStack, role: str) -> Any:
    return {
        "client": stack.client,
        "operator": stack.operator,
        "service": stack.service,
        "watcher": stack.watcher,
    }[role]


async def call_and_judge(
    stack: OwnStack, rpc: Rpc, body: bytes, metadata: Any, shown: object
) -> Answer:
    since = log_marks(stack)
    answer = await send(stack, rpc, body, metadata)
    judge(stack, rpc, answer, shown, since, body)
    if answer.code == grpc.StatusCode.OK and rpc.name == "AllocateWallet":
        # The fuzzer spoke as the order service about an order that does not exist; give
        # back what it got, as the order service would for a cancelled order.
        order_id = wpb.AllocateWalletRequest.FromString(body).order_id
        release = wpb.ReleaseWalletRequest(order_id=str(uuid.UUID(order_id)))
        released = await send(
            stack, rpc_named("ReleaseWallet"), release.SerializeToString(), stack.service
        )
        assert released.code == grpc.StatusCode.OK, released
    if metadata in [token_for(stack, role) for role in rpc.roles]:
        assert answer.code != grpc.StatusCode.PERMISSION_DENIED, f"{rpc.name}: {answer.details}"
    return answer


def rpc_named(name: str) -> Rpc:
    [rpc] = [r for r in RPCS if r.name == name]
    return rpc


async def serving(stack: OwnStack) -> dict[str, str]:
    """Health of each server (overall and per service), by name."""
    seen = {}
    for address, channel, service in [
        ("orders", stack.order_channel, "exchange.order.v1.OrderService"),
        ("pool", stack.pool_channel, "exchange.wallet_pool.v1.WalletPoolService"),
    ]:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", service):
            response = await stub.Check(
                health_pb2.HealthCheckRequest(service=name), timeout=CALL_TIMEOUT
            )
            seen[f"{address}:{name}"] = health_pb2.HealthCheckResponse.ServingStatus.Name(
                response.status
            )
    return seen


# --- Fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def fuzz_database_url(databases: DatabaseFactory) -> str:
    # Empty: the services apply their own migrations at start-up.
    return await databases.create(migrated=False)


@pytest.fixture(scope="module")
async def fuzz_stack(
    fuzz_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[OwnStack]:
    log_dir: Path = tmp_path_factory.mktemp("fuzz")
    stack = await start_stack(fuzz_database_url, log_dir)
    try:
        yield stack
    finally:
        await stack.close()


@pytest.fixture(scope="module")
async def world(fuzz_stack: OwnStack) -> World:
    """A few wallets and orders in every state, for requests to name."""
    stack = fuzz_stack
    seeded = World()
    for network, make, count in [("ETH", eth_address, 4), ("TRON", tron_address, 2)]:
        addresses = [
            make(hashlib.sha256(f"world:{network}:{i}".encode()).digest()[:20])
            for i in range(count)
        ]
        await stack.pool.AddWallets(
            wpb.AddWalletsRequest(network=network, addresses=addresses), metadata=stack.operator
        )
        seeded.addresses += addresses
    for network in ["ETH"] * 6 + ["TRON", "BTC"]:
        created = await stack.orders.CreateOrder(
            opb.CreateOrderRequest(network=network, amount="0.5"), metadata=stack.client
        )
        seeded.order_ids.append(created.order.id)
    moves = [
        [opb.ORDER_STATUS_PROCESSING],
        [opb.ORDER_STATUS_PROCESSING, opb.ORDER_STATUS_COMPLETED],
        [opb.ORDER_STATUS_CANCELLED],
    ]
    for order_id, statuses in zip(seeded.order_ids, moves, strict=False):
        for status in statuses:
            await stack.orders.UpdateOrderStatus(
                opb.UpdateOrderStatusRequest(order_id=order_id, status=status, reason="seed"),
                metadata=stack.operator,
            )
    return seeded


@pytest.fixture(scope="module")
async def fuzz_db(fuzz_database_url: str, fuzz_stack: OwnStack) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(fuzz_database_url, min_size=1, max_size=2)
    assert pool is not None
    yield pool
    await pool.close()


# --- Tests ---------------------------------------------------------------------------------

ROLE_CHOICES = ["right", "right", "right", "right", "right", "right", "other", "none", "wrong"]


def metadata_for(stack: OwnStack, rpc: Rpc, choice: str, extra: int) -> Any:
    if choice == "right":
        return token_for(stack, rpc.roles[extra % len(rpc.roles)])
    if choice == "other":
        return token_for(stack, ["client", "operator", "service", "watcher"][extra % 4])
    if choice == "wrong":
        return (("authorization", ["Bearer nope", "Basic x", "Bearer", "bearer  "][extra % 4]),)
    return ()


@pytest.mark.parametrize("rpc", RPCS, ids=RPC_IDS)
@FUZZ
@given(data=st.data())
async def test_every_rpc_answers_garbage_fields_with_a_documented_status_naming_the_field(
    fuzz_stack: OwnStack, world: World, rpc: Rpc, data: st.DataObject
) -> None:
    fields = data.draw(requests(rpc, world), label="fields")
    choice = data.draw(st.sampled_from(ROLE_CHOICES), label="credential")
    metadata = metadata_for(fuzz_stack, rpc, choice, data.draw(st.integers(0, 11)))
    request = build(rpc, fields)
    await call_and_judge(fuzz_stack, rpc, request.SerializeToString(), metadata, fields)


@pytest.mark.parametrize("rpc", STREAMS, ids=STREAM_IDS)
@settings(FUZZ, max_examples=max(FUZZ.max_examples // 4, 5))
@given(data=st.data())
async def test_every_stream_answers_garbage_fields_with_a_documented_status_or_its_first_message(
    fuzz_stack: OwnStack, world: World, rpc: Rpc, data: st.DataObject
) -> None:
    fields = data.draw(requests(rpc, world), label="fields")
    choice = data.draw(st.sampled_from(ROLE_CHOICES), label="credential")
    metadata = metadata_for(fuzz_stack, rpc, choice, data.draw(st.integers(0, 11)))
    request = build(rpc, fields)
    await call_and_judge(fuzz_stack, rpc, request.SerializeToString(), metadata, fields)


@pytest.mark.parametrize("rpc", STREAMS, ids=STREAM_IDS)
@settings(FUZZ, max_examples=max(FUZZ.max_examples // 4, 5))  # a quiet stream takes a second
@given(data=st.data())
async def test_bytes_on_the_wire_to_a_stream_get_a_documented_status(
    fuzz_stack: OwnStack, rpc: Rpc, data: st.DataObject
) -> None:
    body = data.draw(wire_messages(rpc), label="body")
    await call_and_judge(fuzz_stack, rpc, body, token_for(fuzz_stack, rpc.roles[0]), body)


def with_examples(cases: list[dict[str, Any]]) -> Callable[[TestFunction], TestFunction]:
    """Hypothesis examples that always run, before the generated ones."""

    def decorate(test: TestFunction) -> TestFunction:
        for case in reversed(cases):
            test = example(**case)(test)
        return test

    return decorate


LIST_RPCS = [rpc for rpc in RPCS if "page_token" in rpc.request_type.DESCRIPTOR.fields_by_name]


@pytest.mark.parametrize("rpc", LIST_RPCS, ids=[rpc.name for rpc in LIST_RPCS])
@settings(FUZZ, max_examples=FUZZ.max_examples * 2)
@given(page_token=page_tokens, page_size=page_sizes)
@with_examples([{"page_token": t, "page_size": 0} for t in [*ODD_TOKENS, *EDGE_POSITIONS]])
async def test_any_page_token_and_page_size_get_a_documented_status(
    fuzz_stack: OwnStack, rpc: Rpc, page_token: str, page_size: int
) -> None:
    request = build(rpc, {"page_token": page_token, "page_size": page_size})
    role = rpc.roles[0]
    await call_and_judge(
        fuzz_stack, rpc, request.SerializeToString(), token_for(fuzz_stack, role), request
    )


@FUZZ
@given(after=st.none() | timestamps, before=st.none() | timestamps)
async def test_any_created_after_and_created_before_get_a_documented_status(
    fuzz_stack: OwnStack, after: Timestamp | None, before: Timestamp | None
) -> None:
    request = opb.ListOrdersRequest(created_after=after, created_before=before)
    await call_and_judge(
        fuzz_stack,
        rpc_named("ListOrders"),
        request.SerializeToString(),
        fuzz_stack.client,
        request,
    )


@pytest.mark.parametrize("rpc", RPCS, ids=RPC_IDS)
@FUZZ
@given(data=st.data())
async def test_bytes_on_the_wire_that_no_client_library_sends_get_a_documented_status(
    fuzz_stack: OwnStack, rpc: Rpc, data: st.DataObject
) -> None:
    body = data.draw(wire_messages(rpc), label="body")
    answer = await call_and_judge(fuzz_stack, rpc, body, token_for(fuzz_stack, rpc.roles[0]), body)
    try:
        rpc.request_type.FromString(body)
    except DecodeError:
        name = rpc.request_type.DESCRIPTOR.name
        assert (answer.code, answer.details) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            f"request: is not a valid {name} message",
        )
    else:
        assert not answer.details.startswith("request: "), answer


def odd_values(field_descriptor: FieldDescriptor) -> list[Any]:
    """Every odd value of the field's type that the sweep below sends."""
    odd_enums = [-1, 99, -(2**31), 2**31 - 1]
    if field_descriptor.is_repeated and field_descriptor.type == FieldDescriptor.TYPE_ENUM:
        return [[number] for number in odd_enums] + [odd_enums * 300]
    if field_descriptor.is_repeated and field_descriptor.name == "deposits":
        odd = [
            wpb.ChainDeposit(address=text, txid=text, amount=text, block_time=Timestamp())
            for text in ODD_TEXTS + HUGE_TEXTS
        ]
        many = wpb.ChainDeposit(
            address="0x" + "1" * 40, txid="0x1", amount="1", block_time=Timestamp()
        )
        return [[deposit] for deposit in odd] + [[many] * 1001]
    if field_descriptor.is_repeated and field_descriptor.name == "reverted":
        # Enum fields are open: numbers no enum names go on the wire as they are.
        pairs = [(1, 1)] * len(ODD_TEXTS + HUGE_TEXTS) + [(99, 1), (1, 99), (-1, 1), (1, 0), (0, 1)]
        texts = ODD_TEXTS + HUGE_TEXTS + ["0x1"] * 5
        odd_retractions = []
        for text, (kind, reason) in zip(texts, pairs, strict=True):
            retraction = wpb.Retraction(txid=text)
            retraction.kind = kind  # type: ignore[assignment]
            retraction.reason = reason  # type: ignore[assignment]
            odd_retractions.append(retraction)
        return [[r] for r in odd_retractions] + [[odd_retractions[0]] * 1001]
    if field_descriptor.is_repeated:
        return [[text] for text in ODD_TEXTS + HUGE_TEXTS] + MANY_ADDRESS_LISTS
    if field_descriptor.type == FieldDescriptor.TYPE_MESSAGE:
        return [
            Timestamp(seconds=seconds, nanos=nanos)
            for seconds, nanos in [
                (SECONDS_MIN - 1, 0),
                (SECONDS_MAX + 1, 0),
                (SECONDS_MIN, 0),
                (SECONDS_MAX, 999_999_999),
                (0, -1),
                (0, 1_000_000_000),
                (-(2**63), 0),
                (2**63 - 1, 0),
            ]
        ]
    if field_descriptor.type == FieldDescriptor.TYPE_ENUM:
        return odd_enums
    if field_descriptor.type == FieldDescriptor.TYPE_BOOL:
        return [True]
    if field_descriptor.type in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return [2**64 - 1, 2**63]
    if field_descriptor.type != FieldDescriptor.TYPE_STRING:
        return [2**32 - 1, 2**31]
    return ODD_TEXTS + HUGE_TEXTS


def sensible_request(rpc: Rpc, world: World) -> dict[str, Any]:
    """A request that passes validation (the sweep spoils one field of it at a time)."""
    values = {
        "network": "ETH",
        "amount": "0.5",
        "order_id": world.order_ids[0] if rpc.service == "orders" else str(uuid.uuid4()),
        "status": opb.ORDER_STATUS_PROCESSING,  # what the first order already has
        "address": world.addresses[0],
        "addresses": [world.addresses[0]],
    }
    fields = rpc.request_type.DESCRIPTOR.fields_by_name
    return {name: value for name, value in values.items() if name in fields}


@pytest.mark.parametrize("rpc", RPCS, ids=RPC_IDS)
async def test_each_field_in_turn_takes_every_odd_value_with_a_documented_status(
    fuzz_stack: OwnStack, world: World, rpc: Rpc
) -> None:
    metadata = token_for(fuzz_stack, rpc.roles[0])
    for field_descriptor in cast(list[FieldDescriptor], rpc.request_type.DESCRIPTOR.fields):
        for value in odd_values(field_descriptor):
            fields = {**sensible_request(rpc, world), field_descriptor.name: value}
            request = build(rpc, fields)
            await call_and_judge(fuzz_stack, rpc, request.SerializeToString(), metadata, fields)


def not_a_message(request_type: type[Message]) -> list[bytes]:
    """Bytes that no request message parses from."""
    fields = request_type.DESCRIPTOR.fields
    strings = [f.number for f in fields if f.type == FieldDescriptor.TYPE_STRING][:1]
    # (A request without a string field has no string to spoil: its first field, or for a
    # request without fields an unknown field 1, stands in.)
    text = strings[0] if strings else (fields[0].number if fields else 1)
    not_utf8 = [tag(text, 2) + b"\x02\xc3\x28"] if strings else []  # a string not UTF-8
    return [
        b"\xff",  # a field key cut short
        b"\x80" * 11,  # a varint longer than ten bytes
        tag(text, 2) + b"\x05ab",  # a length beyond the end
        *not_utf8,
        tag(text, 2) + varint(2**40),  # a length of a terabyte
        tag(text, 3),  # a group that never ends
        tag(text, 4),  # the end of a group that never began
        tag(text, 7),  # no such wire type
        # field number zero (which protobuf's parser lets by in a message without fields)
        *([tag(0, 0) + b"\x01"] if fields else []),
    ]


HEALTH_CHECK = Rpc(
    "orders", "/grpc.health.v1.Health/Check", "Check", health_pb2.HealthCheckRequest, ("client",)
)


@pytest.mark.parametrize(
    "rpc", [*RPCS, *STREAMS, HEALTH_CHECK], ids=[*RPC_IDS, *STREAM_IDS, "HealthCheck"]
)
async def test_bytes_that_are_not_a_request_message_are_an_invalid_argument_naming_the_request(
    fuzz_stack: OwnStack, rpc: Rpc
) -> None:
    name = rpc.request_type.DESCRIPTOR.name
    for body in not_a_message(rpc.request_type):
        with pytest.raises(DecodeError):
            rpc.request_type.FromString(body)
        answer = await call_and_judge(
            fuzz_stack, rpc, body, token_for(fuzz_stack, rpc.roles[0]), body
        )
        assert (answer.code, answer.details) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            f"request: is not a valid {name} message",
        ), body
    assert set((await serving(fuzz_stack)).values()) == {"SERVING"}


async def test_the_body_of_a_call_without_credentials_is_not_read(fuzz_stack: OwnStack) -> None:
    for rpc in [*RPCS, *STREAMS]:
        answer = await send(fuzz_stack, rpc, b"\xff", ())
        assert answer.code == grpc.StatusCode.UNAUTHENTICATED, (rpc.name, answer)


def _addresses(label: str, count: int) -> list[str]:
    return [
        eth_address(hashlib.sha256(f"{label}:{i}".encode()).digest()[:20]) for i in range(count)
    ]


async def _one_over_refused_at_the_limit_taken(
    stack: OwnStack, name: str, metadata: Any, over: Message, at: Message, field: str
) -> None:
    rpc = rpc_named(name)
    refused = await call_and_judge(stack, rpc, over.SerializeToString(), metadata, "one over")
    assert (refused.code, refused.details.partition(": ")[0]) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        field,
    ), refused
    taken = await call_and_judge(stack, rpc, at.SerializeToString(), metadata, "at the limit")
    assert taken.code == grpc.StatusCode.OK, taken


async def test_the_documented_limits_hold_a_full_report_a_full_batch_and_pages_beyond_them(
    fuzz_stack: OwnStack,
) -> None:
    """README's limits, on data that exceeds them: 1,000 deposits per report and addresses
    per AddWallets (one more is refused, naming the field), 50 items a page by default and
    500 at most."""
    stack = fuzz_stack
    limit = fuzz_answers.MAX_DEPOSITS_PER_REPORT
    # Addresses of no wallet: the deposits are kept unattributed and move nothing.
    deposits = [
        wpb.ChainDeposit(
            address=address,
            txid="0x" + hashlib.sha256(address.encode()).hexdigest(),
            amount="1",
            block_height=1,
            block_time=Timestamp(seconds=1_700_000_000),
            confirmations=1,
        )
        for address in _addresses("limit", limit + 1)
    ]
    await _one_over_refused_at_the_limit_taken(
        stack,
        "ReportDeposits",
        stack.watcher,
        wpb.ReportDepositsRequest(network="ETH", deposits=deposits, scanned_height=10**9),
        wpb.ReportDepositsRequest(network="ETH", deposits=deposits[:limit], scanned_height=10**9),
        "deposits",
    )
    fresh = _addresses("batch", fuzz_answers.MAX_ADDRESSES_PER_CALL + 1)
    await _one_over_refused_at_the_limit_taken(
        stack,
        "AddWallets",
        stack.operator,
        wpb.AddWalletsRequest(network="ETH", addresses=fresh),
        wpb.AddWalletsRequest(network="ETH", addresses=fresh[:-1]),
        "addresses",
    )

    # More than a page of each: every size asked gets what the limits allow, no more, no less.
    for name, items in [("ListDeposits", "deposits"), ("ListWallets", "wallets")]:
        rpc = rpc_named(name)
        for size in [0, 1, 499, 500, 501, 10_000]:
            request = rpc.request_type(page_size=size)
            answer = await call_and_judge(
                stack, rpc, request.SerializeToString(), stack.operator, request
            )
            if answer.code == grpc.StatusCode.INVALID_ARGUMENT:
                assert size > fuzz_answers.MAX_PAGE_SIZE, answer  # refused, never cut short
                continue
            assert answer.code == grpc.StatusCode.OK and rpc.response_type is not None, answer
            response = rpc.response_type.FromString(answer.body)
            assert len(getattr(response, items)) == fuzz_answers.page_limit(size), (name, size)


async def test_after_all_the_garbage_both_services_still_serve_and_every_invariant_holds(
    fuzz_stack: OwnStack, fuzz_db: asyncpg.Pool
) -> None:
    """Last in the module: it judges what all the tests above left behind."""
    assert set((await serving(fuzz_stack)).values()) == {"SERVING"}
    assert await check_all(fuzz_db, settle_seconds=10) == []
    assert sorted({summary(entry) for entry in logged_errors(fuzz_stack)}) == []
