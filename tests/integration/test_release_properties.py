"""Property-based tests of the release path on a real PostgreSQL: any mix of allocations,
releases by the order service, stray releases with arbitrary order ids and addresses, and
added wallets keeps invariants 1-4, and a stray release changes nothing.

The test plays the order service: its orders live in `orders.orders`, so that the checks of
tests/invariants.py judge the pool against them.
"""

import uuid
from dataclasses import dataclass, field

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.invariants import (
    every_live_order_is_served_once,
    no_address_held_by_two_live_orders,
    no_final_order_holds_anything,
    queue_blocks_add_up,
    wallet_states_add_up,
)
from wallet_pool_service.domain import Release, ReleaseMismatch, demo_addresses
from wallet_pool_service.manager import WalletPoolManager

NETWORKS = ("BTC", "ETH")
# A well-formed address that no step adds to the pool.
NEVER_ADDED = demo_addresses("ETH", 1000)[-1]
PROPERTIES = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class Model:
    """What the order service knows: each order's network, whether it is live, and its copy
    of the address the pool gave it."""

    networks: dict[uuid.UUID, str] = field(default_factory=dict)
    live: set[uuid.UUID] = field(default_factory=set)
    copies: dict[uuid.UUID, str] = field(default_factory=dict)
    added: list[str] = field(default_factory=list)
    phantoms: list[uuid.UUID] = field(default_factory=lambda: [uuid.uuid4() for _ in range(3)])


# Steps: ("create", network), ("finish", order index), ("stray", order index, address index),
# ("add", network, count), ("sync",). Indexes pick from what exists when the step runs.
steps = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.sampled_from(NETWORKS)),
        st.tuples(st.just("finish"), st.integers(0, 50)),
        st.tuples(st.just("stray"), st.integers(0, 50), st.integers(0, 50)),
        st.tuples(st.just("add"), st.sampled_from(NETWORKS), st.integers(1, 2)),
        st.tuples(st.just("sync")),
    ),
    min_size=1,
    max_size=25,
)


@pytest.fixture
def manager(db_pool: asyncpg.Pool) -> WalletPoolManager:
    return WalletPoolManager(db_pool, NETWORKS)


async def _reset(db_pool: asyncpg.Pool) -> None:
    await db_pool.execute(
        """TRUNCATE wallet_pool.wallets, wallet_pool.queue, wallet_pool.queue_blocks,
                    wallet_pool.released_orders, wallet_pool.assignments,
                    orders.orders, orders.status_history, orders.pending_releases,
                    orders.deposits"""
    )


async def _pool_state(db_pool: asyncpg.Pool) -> tuple[object, ...]:
    """Everything a release could change."""
    return (
        await db_pool.fetch(
            "SELECT address, order_id, released_at FROM wallet_pool.wallets ORDER BY address"
        ),
        await db_pool.fetch("SELECT order_id, network, seq FROM wallet_pool.queue ORDER BY seq"),
        await db_pool.fetch("SELECT order_id FROM wallet_pool.released_orders ORDER BY 1"),
        await db_pool.fetch(
            "SELECT address, order_id, released_at FROM wallet_pool.assignments ORDER BY 1, 2"
        ),
    )


async def _sync(manager: WalletPoolManager, db_pool: asyncpg.Pool, model: Model) -> None:
    """The allocation sync: ask again for every live order, and copy what it holds."""
    for order_id in sorted(model.live):
        allocation = await manager.allocate_wallet(order_id, model.networks[order_id])
        copy = model.copies.get(order_id)
        if copy is not None:
            assert allocation.address == copy, "an order's wallet changed under it"
        elif allocation.address is not None:
            model.copies[order_id] = allocation.address
            await db_pool.execute(
                "UPDATE orders.orders SET wallet_address = $2 WHERE id = $1",
                order_id,
                allocation.address,
            )


async def _stray_release(
    manager: WalletPoolManager, db_pool: asyncpg.Pool, model: Model, order_id: uuid.UUID, pick: int
) -> None:
    """A release no order service would send: for a live order, naming any wallet but its
    own (or an address never added); for a final or unknown order, anything. It changes
    nothing: a live order keeps its wallet or place, and only an order the pool never served
    is retired (by a release naming no wallet)."""
    held = await db_pool.fetchval(
        "SELECT address FROM wallet_pool.wallets WHERE order_id = $1", order_id
    )
    candidates = [a for a in model.added if a != held] + [NEVER_ADDED]
    if order_id not in model.live:
        candidates.append("")
    address = candidates[pick % len(candidates)]
    queued = await db_pool.fetchval(
        "SELECT true FROM wallet_pool.queue WHERE order_id = $1", order_id
    )
    before = await _pool_state(db_pool)
    try:
        release = await manager.release_wallet(order_id, address)
    except ReleaseMismatch:
        assert held is not None or queued, "refused a release of an order that holds nothing"
    else:
        assert held is None and not queued, f"a stray release of {order_id} was not refused"
        assert release == Release(released=False, dequeued=False)
    after = await _pool_state(db_pool)
    if address or order_id in model.networks:
        assert after == before, "a stray release changed the pool"


@PROPERTIES
@given(program=steps)
async def test_any_mix_of_releases_and_allocations_keeps_invariants_one_to_four(
    manager: WalletPoolManager, db_pool: asyncpg.Pool, program: list[tuple[object, ...]]
) -> None:
    await _reset(db_pool)
    model = Model()
    for step in program:
        kind = step[0]
        orders = sorted(model.networks)
        if kind == "create":
            network = str(step[1])
            order_id = uuid.uuid4()
            await db_pool.execute(
                "INSERT INTO orders.orders (id, status, network, amount) "
                "VALUES ($1, 'PENDING', $2, 1)",
                order_id,
                network,
            )
            model.networks[order_id] = network
            model.live.add(order_id)
            await _sync(manager, db_pool, model)
        elif kind == "finish" and model.live:
            order_id = sorted(model.live)[int(str(step[1])) % len(model.live)]
            model.live.discard(order_id)
            await db_pool.execute(
                "UPDATE orders.orders SET status = 'COMPLETED' WHERE id = $1", order_id
            )
            await manager.release_wallet(order_id, model.copies.get(order_id, ""))
        elif kind == "stray":
            known = [*orders, *model.phantoms]
            order_id = known[int(str(step[1])) % len(known)]
            await _stray_release(manager, db_pool, model, order_id, int(str(step[2])))
        elif kind == "add":
            network, count = str(step[1]), int(str(step[2]))
            fresh = [
                a for a in demo_addresses(network, len(model.added) + count) if a not in model.added
            ][:count]
            await manager.add_wallets(network, fresh)
            model.added += fresh
        elif kind == "sync":
            await _sync(manager, db_pool, model)
    await _sync(manager, db_pool, model)

    async with db_pool.acquire() as conn:
        violations = [
            *await no_address_held_by_two_live_orders(conn),
            *await no_final_order_holds_anything(conn),
            *await every_live_order_is_served_once(conn),
            *await wallet_states_add_up(conn),
            *await queue_blocks_add_up(conn),
        ]
    assert violations == []
