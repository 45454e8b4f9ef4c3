"""Property-based tests of the release path on a real PostgreSQL: any mix of allocations,
releases by the order service, stray releases with arbitrary order ids and addresses, added
wallets and watcher reports (payments to held wallets and late ones to released wallets)
keeps invariants 1-4, 7 and the attribution of 8, and a stray release changes nothing; with
the watermark guard on, as production runs, and off.

The test plays the order service: its orders live in `orders.orders`, so that the checks of
tests/invariants.py judge the pool against them.
"""

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests import derived
from tests.invariants import (
    every_live_order_is_served_once,
    no_address_held_by_two_live_orders,
    no_final_order_holds_anything,
    no_wallet_reused_over_a_deposit_or_before_its_watermark,
    queue_blocks_add_up,
    wallet_states_add_up,
)
from wallet_pool_service.deposits import ChainDeposit
from wallet_pool_service.domain import ReleaseMismatch, demo_addresses
from wallet_pool_service.manager import WalletPoolManager
from wallet_pool_service.repository import PostgresWalletAdapter

NETWORKS = ("BTC", "ETH")
# A well-formed address that no step adds to the pool.
NEVER_ADDED = demo_addresses("ETH", 1000)[-1]
PROPERTIES = settings(
    max_examples=25,
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
    heights: dict[str, int] = field(default_factory=lambda: dict.fromkeys(NETWORKS, 0))


# Steps: ("create", network), ("finish", order index), ("stray", order index, address index),
# ("add", network, count), ("sync",), ("report", network, blocks, payee index or -1).
# Indexes pick from what exists when the step runs.
_creates = st.tuples(st.just("create"), st.sampled_from(NETWORKS))
_finishes = st.tuples(st.just("finish"), st.integers(0, 50))
_reports = st.tuples(
    st.just("report"), st.sampled_from(NETWORKS), st.integers(0, 2), st.integers(-1, 50)
)
# Creations, releases and reports weigh more, so that most programs reuse wallets and pay
# late (the statistics say how many: pytest --hypothesis-show-statistics).
steps = st.lists(
    st.one_of(
        _creates,
        _creates,
        _finishes,
        _finishes,
        st.tuples(st.just("stray"), st.integers(0, 50), st.integers(0, 50)),
        st.tuples(st.just("add"), st.sampled_from(NETWORKS), st.integers(1, 2)),
        st.tuples(st.just("sync")),
        _reports,
        _reports,
        _reports,
    ),
    min_size=15,
    max_size=30,
)
# The guard as production runs it (on, a few blocks), and off.
GUARDS: dict[str, dict[str, int | None]] = {
    "guard-on": {"BTC": 2, "ETH": 1},
    "guard-off": {"BTC": None, "ETH": None},
}


@pytest.fixture
def manager(db_pool: asyncpg.Pool) -> WalletPoolManager:
    return WalletPoolManager(db_pool, NETWORKS)


@pytest.fixture(params=list(GUARDS))
def guard(request: pytest.FixtureRequest) -> dict[str, int | None]:
    confirmations: dict[str, int | None] = GUARDS[request.param]
    return confirmations


async def _reset(db_pool: asyncpg.Pool, guard: dict[str, int | None]) -> None:
    await db_pool.execute(
        """TRUNCATE wallet_pool.wallets, wallet_pool.queue, wallet_pool.queue_blocks,
                    wallet_pool.released_orders, wallet_pool.assignments,
                    wallet_pool.deposits, wallet_pool.chain_watermarks,
                    orders.orders, orders.status_history, orders.pending_releases,
                    orders.deposits"""
    )
    # What a pool starting with this WALLET_REUSE_CONFIRMATIONS writes.
    async with db_pool.acquire() as conn:
        await PostgresWalletAdapter(conn).configure_reuse_guard(guard)


async def _create(
    manager: WalletPoolManager, db_pool: asyncpg.Pool, model: Model, network: str
) -> uuid.UUID:
    order_id = uuid.uuid4()
    await db_pool.execute(
        "INSERT INTO orders.orders (id, status, network, amount) VALUES ($1, 'PENDING', $2, 1)",
        order_id,
        network,
    )
    model.networks[order_id] = network
    model.live.add(order_id)
    await _sync(manager, db_pool, model)
    return order_id


async def _finish(
    manager: WalletPoolManager, db_pool: asyncpg.Pool, model: Model, order_id: uuid.UUID
) -> None:
    model.live.discard(order_id)
    await db_pool.execute("UPDATE orders.orders SET status = 'COMPLETED' WHERE id = $1", order_id)
    await manager.release_wallet(order_id, model.copies.get(order_id, ""))


async def _add(manager: WalletPoolManager, model: Model, network: str, count: int) -> None:
    fresh = [a for a in demo_addresses(network, len(model.added) + count) if a not in model.added]
    await manager.add_wallets(network, fresh[:count])
    model.added += fresh[:count]


async def _report(
    manager: WalletPoolManager, db_pool: asyncpg.Pool, model: Model, step: tuple[object, ...]
) -> None:
    """The network's watcher scans some blocks; in the last new one somebody pays a pool
    address: mostly a held wallet (on time), now and then any (late, when it is free and was
    held). A watcher never reports a new deposit in a block it reported scanned before."""
    network, blocks, payee = str(step[1]), int(str(step[2])), int(str(step[3]))
    model.heights[network] += blocks
    height = model.heights[network]
    held = [
        r["address"]
        for r in await db_pool.fetch(
            """SELECT address FROM wallet_pool.wallets
               WHERE network = $1 AND order_id IS NOT NULL ORDER BY address""",
            network,
        )
    ]
    released = [
        r["address"]
        for r in await db_pool.fetch(
            """SELECT address FROM wallet_pool.wallets
               WHERE network = $1 AND order_id IS NULL AND released_at IS NOT NULL
               ORDER BY address""",
            network,
        )
    ]
    candidates = released if payee % 3 == 2 else held
    paid = []
    if payee >= 0 and candidates and blocks > 0:
        address = candidates[payee % len(candidates)]
        txid = f"0x{uuid.uuid4().hex * 2}"
        paid.append(ChainDeposit(address, txid, 0, Decimal("1.5"), height, datetime.now(UTC), 1))
    await manager.report_deposits(network, paid, height)


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
        # Nothing freed and nothing dequeued; its deposit_change still names the order's
        # deposits at that address, as a repeated release does (sql/deposits.sql).
        assert (release.released, release.dequeued) == (False, False)
    after = await _pool_state(db_pool)
    if address or order_id in model.networks:
        assert after == before, "a stray release changed the pool"


@PROPERTIES
@given(program=steps)
async def test_any_mix_of_releases_allocations_and_reports_keeps_the_invariants(
    manager: WalletPoolManager,
    db_pool: asyncpg.Pool,
    guard: dict[str, int | None],
    program: list[tuple[object, ...]],
) -> None:
    await _reset(db_pool, guard)
    model = Model()
    # Every program starts with a wallet per network, its holder finished and a waiting
    # order, which gets it (when the guard lets it go): every program reuses wallets.
    for network in NETWORKS:
        await _add(manager, model, network, 1)
        holder = await _create(manager, db_pool, model, network)
        await _create(manager, db_pool, model, network)
        await _finish(manager, db_pool, model, holder)
        # The watcher's first report gives the release its height, the second lets it go.
        await _report(manager, db_pool, model, ("report", network, 1, -1))
        await _report(manager, db_pool, model, ("report", network, 2, -1))
    for step in program:
        kind = step[0]
        orders = sorted(model.networks)
        if kind == "create":
            await _create(manager, db_pool, model, str(step[1]))
        elif kind == "finish" and model.live:
            live = sorted(model.live)
            await _finish(manager, db_pool, model, live[int(str(step[1])) % len(live)])
        elif kind == "stray":
            known = [*orders, *model.phantoms]
            order_id = known[int(str(step[1])) % len(known)]
            await _stray_release(manager, db_pool, model, order_id, int(str(step[2])))
        elif kind == "add":
            await _add(manager, model, str(step[1]), int(str(step[2])))
        elif kind == "sync":
            await _sync(manager, db_pool, model)
        elif kind == "report":
            await _report(manager, db_pool, model, step)
    await _sync(manager, db_pool, model)

    async with db_pool.acquire() as conn:
        violations = [
            *await no_address_held_by_two_live_orders(conn),
            *await no_final_order_holds_anything(conn),
            *await every_live_order_is_served_once(conn),
            *await wallet_states_add_up(conn),
            *await queue_blocks_add_up(conn),
            *await no_wallet_reused_over_a_deposit_or_before_its_watermark(conn),
            *derived.attribution_problems(
                await derived.read_deposits(conn), await derived.read_history(conn)
            ),
        ]
    assert violations == []
    # What the examples covered (pytest --hypothesis-show-statistics).
    async with db_pool.acquire() as conn:
        history = await derived.read_history(conn)
        late = [d for d in await derived.read_deposits(conn) if d.released_at is not None]
    event(f"reuse: {any(len(h) > 1 for h in history.values())}, late deposits: {bool(late)}")
