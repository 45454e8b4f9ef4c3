"""What the API says, compared with what tests/derived.py derives from the raw facts: the
counts of GetPoolStats (invariant 4, the guard's hold included), the states ListWallets
filters and reports, and each order's address, allocation and deposits on GetOrder
(invariants 1, 3 and 8). The e2e and chaos runs pass an `Api` to `check_all`; call it once
the services are quiet (no load running), as the invariants are.
"""

# The generated async stub types exist only in the stubs (.pyi).
from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from exchange.order.v1 import order_service_pb2 as opb
from exchange.order.v1 import order_service_pb2_grpc as order_grpc
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pool_grpc
from tests import derived

# Each counter of GetPoolStats and the derived count it must equal.
_STAT_FIELDS = {
    "total": "total",
    "available": derived.State.AVAILABLE.value,
    "allocated": derived.State.ALLOCATED.value,
    "disabled": derived.State.DISABLED.value,
    "cooling": derived.State.COOLING.value,
    "held_by_watermark": "held_by_watermark",
}
_LIVE = ("PENDING", "PROCESSING")


@dataclass(frozen=True)
class Api:
    """The services as a client sees them, with an operator's credentials."""

    orders: order_grpc.OrderServiceAsyncStub
    pool: pool_grpc.WalletPoolServiceAsyncStub
    operator: tuple[tuple[str, str], ...]


async def api_disagreements(db: asyncpg.Pool, api: Api, attempts: int = 10) -> list[str]:
    """Where the API and the derivation from the raw facts differ (empty: nowhere)."""
    return await _pool_disagreements(db, api, attempts) + await _order_disagreements(db, api)


async def _derive(db: asyncpg.Pool) -> dict[str, derived.WalletView]:
    async with db.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        return derived.wallet_views(await derived.read_facts(conn))


async def _pool_disagreements(db: asyncpg.Pool, api: Api, attempts: int) -> list[str]:
    """Read the facts, ask the API, read the facts again: the API is compared with them
    only when nothing changed meanwhile (a cooldown may end between two reads)."""
    for _ in range(attempts):
        before = await _derive(db)
        stats = await api.pool.GetPoolStats(
            wpb.GetPoolStatsRequest(), metadata=api.operator, timeout=10
        )
        listed = {state: await _listed(api, state) for state in derived.State}
        if await _derive(db) == before:
            return _compare_stats(before.values(), stats) + _compare_listed(before, listed)
        await asyncio.sleep(0.3)
    return [f"the pool's wallets kept changing over {attempts} reads: nothing compared"]


def _compare_stats(
    views: Iterable[derived.WalletView], stats: wpb.GetPoolStatsResponse
) -> list[str]:
    counts = derived.counts_by_network(views)
    reported = {n.network: n for n in stats.networks}
    violations = []
    for network in sorted(set(counts) | set(reported)):
        expected = counts.get(network)
        said = reported.get(network)
        if said is None:
            violations.append(f"GetPoolStats leaves out {network}")
            continue
        for field, key in _STAT_FIELDS.items():
            want = expected[key] if expected else 0
            if getattr(said, field) != want:
                violations.append(
                    f"GetPoolStats {network} {field} = {getattr(said, field)}, the wallets "
                    f"say {want}"
                )
    return violations


async def _listed(api: Api, state: derived.State) -> dict[str, wpb.WalletState.ValueType]:
    """Address -> the state ListWallets reports, of every wallet it lists under `state`."""
    found: dict[str, wpb.WalletState.ValueType] = {}
    token = ""
    while True:
        page = await api.pool.ListWallets(
            wpb.ListWalletsRequest(
                state=wpb.WalletState.Value(f"WALLET_STATE_{state.value}"),
                page_size=500,
                page_token=token,
            ),
            metadata=api.operator,
            timeout=10,
        )
        found.update((w.address, w.state) for w in page.wallets)
        token = page.next_page_token
        if not token:
            return found


def _compare_listed(
    views: dict[str, derived.WalletView],
    listed: dict[derived.State, dict[str, wpb.WalletState.ValueType]],
) -> list[str]:
    violations = []
    for state, wallets in listed.items():
        code = wpb.WalletState.Value(f"WALLET_STATE_{state.value}")
        expected = {a for a, v in views.items() if v.state is state}
        if set(wallets) != expected:
            violations.append(
                f"ListWallets {state.value} lists {len(wallets)} wallets, {len(expected)} are: "
                f"extra {sorted(set(wallets) - expected)[:3]}, "
                f"missing {sorted(expected - set(wallets))[:3]}"
            )
        violations += [
            f"ListWallets {state.value} lists {a} as {wpb.WalletState.Name(s)}"
            for a, s in wallets.items()
            if s != code
        ]
    return violations


@dataclass(frozen=True)
class _Expected:
    address: str
    allocation: opb.Allocation.ValueType | None
    deposits: list[tuple[str, int, Decimal, str, int, bool]]


async def _expected_orders(db: asyncpg.Pool) -> dict[uuid.UUID, _Expected]:
    """Per order: the address the pool has it hold (live orders), whether it waits in the
    pool's queue, and the deposits the address history attributes to it."""
    async with db.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        orders = await conn.fetch("SELECT id, status FROM orders.orders")
        held: dict[uuid.UUID, str] = {
            r["order_id"]: r["address"]
            for r in await conn.fetch(
                "SELECT order_id, address FROM wallet_pool.wallets WHERE order_id IS NOT NULL"
            )
        }
        queued = {r["order_id"] for r in await conn.fetch("SELECT order_id FROM wallet_pool.queue")}
        final_at: dict[uuid.UUID, datetime] = {
            r["order_id"]: r["at"]
            for r in await conn.fetch(
                """SELECT order_id, min(change_time) AS at FROM orders.status_history
                   WHERE to_status IN ('COMPLETED', 'CANCELLED') GROUP BY order_id"""
            )
        }
        history = await derived.read_history(conn)
        deposits = await derived.read_deposits(conn)
    mine: dict[uuid.UUID, list[tuple[str, int, Decimal, str, int, bool]]] = {}
    for d in deposits:
        owner = derived.attribute(d, history.get(d.address, []))
        if owner.order_id is None:
            continue
        final = final_at.get(owner.order_id)
        late = owner.late_since is not None or (final is not None and final <= d.block_time)
        mine.setdefault(owner.order_id, []).append(
            (d.txid, d.output_index, d.amount, d.address, d.block_height, late)
        )
    expected = {}
    for r in orders:
        allocation = None
        if r["status"] in _LIVE:
            allocation = (
                opb.ALLOCATION_ASSIGNED
                if r["id"] in held
                else opb.ALLOCATION_QUEUED
                if r["id"] in queued
                else opb.ALLOCATION_AWAITING_POOL
            )
        expected[r["id"]] = _Expected(
            held.get(r["id"], "") if allocation else "",
            allocation,
            sorted(mine.get(r["id"], [])),
        )
    return expected


async def _order_disagreements(db: asyncpg.Pool, api: Api, attempts: int = 5) -> list[str]:
    """Each order's GetOrder against the facts. An order that disagrees is read again (facts
    and API) a few times: background work goes on (an order expires, a release lands), and
    only a disagreement that stays is one."""
    expected = await _expected_orders(db)
    ids = sorted(expected)
    violations: dict[uuid.UUID, list[str]] = {}
    for _ in range(attempts):
        answers = await _get_orders(api, ids)
        violations = {
            order_id: found
            for order_id, answer in zip(ids, answers, strict=True)
            if (found := _compare_order(order_id, expected[order_id], answer))
        }
        if not violations:
            return []
        ids = sorted(violations)
        await asyncio.sleep(0.3)
        expected = await _expected_orders(db)
    return [v for found in violations.values() for v in found]


async def _get_orders(api: Api, ids: list[uuid.UUID]) -> list[opb.GetOrderResponse]:
    answers: list[opb.GetOrderResponse] = []
    for start in range(0, len(ids), 32):
        answers += await asyncio.gather(
            *(
                api.orders.GetOrder(
                    opb.GetOrderRequest(order_id=str(i)), metadata=api.operator, timeout=10
                )
                for i in ids[start : start + 32]
            )
        )
    return answers


def _compare_order(
    order_id: uuid.UUID, expected: _Expected, answer: opb.GetOrderResponse
) -> list[str]:
    violations = []
    if expected.allocation is not None and (
        answer.order.allocation != expected.allocation
        or answer.order.wallet_address != expected.address
    ):
        violations.append(
            f"GetOrder {order_id}: {opb.Allocation.Name(answer.order.allocation)} "
            f"{answer.order.wallet_address or '(no address)'}, the pool: "
            f"{opb.Allocation.Name(expected.allocation)} {expected.address or '(no address)'}"
        )
    shown = sorted(
        (
            d.txid,
            d.index,
            Decimal(d.amount),
            d.address,
            d.block_height,
            d.late,
        )
        for d in answer.deposits
    )
    if shown != expected.deposits:
        violations.append(
            f"GetOrder {order_id} shows deposits {shown}, the address history gives it "
            f"{expected.deposits}"
        )
    return violations
