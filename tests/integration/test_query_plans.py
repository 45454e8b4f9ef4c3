"""The hot queries use the indexes made for them (EXPLAIN on a filled, analyzed database)."""

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from order_service.repository import queries as order_queries
from shared.db import Connection
from wallet_pool_service.repository import queries as pool_queries

ORDER = uuid.uuid4()
HOURS_AGO = datetime.now(UTC) - timedelta(hours=3)


def _indexes(plan: dict[str, Any]) -> set[str]:
    found = {plan["Index Name"]} if "Index Name" in plan else set()
    for child in plan.get("Plans", []):
        found |= _indexes(child)
    return found


def _nodes(plan: dict[str, Any], node_type: str) -> int:
    found = int(plan["Node Type"] == node_type)
    return found + sum(_nodes(child, node_type) for child in plan.get("Plans", []))


def _seq_scans(plan: dict[str, Any]) -> set[str]:
    found = {plan["Relation Name"]} if plan["Node Type"] == "Seq Scan" else set()
    for child in plan.get("Plans", []):
        found |= _seq_scans(child)
    return found


@pytest.fixture
async def filled(db_pool: asyncpg.Pool) -> asyncpg.Pool:
    return await fill(db_pool)


async def fill(db_pool: asyncpg.Pool) -> asyncpg.Pool:
    """20,000 wallets in two networks (a quarter held), 5,000 waiting orders, 10,000 released
    ones, 20,000 orders of 50 clients (400 each)."""
    await db_pool.execute(
        """INSERT INTO wallet_pool.wallets (network, address, order_id, allocated_at)
           SELECT CASE WHEN i % 2 = 0 THEN 'BTC' ELSE 'ETH' END, 'addr-' || i,
                  CASE WHEN i % 4 = 0 THEN gen_random_uuid() END,
                  CASE WHEN i % 4 = 0 THEN now() END
           FROM generate_series(1, 20000) AS i"""
    )
    await db_pool.execute(
        """INSERT INTO wallet_pool.queue (order_id, network)
           SELECT gen_random_uuid(), 'ETH' FROM generate_series(1, 5000)"""
    )
    await db_pool.execute(
        """INSERT INTO orders.orders
               (id, status, network, amount, create_time, wallet_address, created_by)
           SELECT gen_random_uuid(), (ARRAY['PENDING', 'PROCESSING', 'COMPLETED'])[i % 3 + 1],
                  'BTC', 1, now() - make_interval(secs => i),
                  CASE WHEN i % 5 <> 0 THEN 'addr-' || i END, 'client-' || i % 50
           FROM generate_series(1, 20000) AS i"""
    )
    await db_pool.execute(
        """INSERT INTO orders.pending_releases (order_id, next_attempt_time, release_time)
           SELECT id, now(), CASE WHEN random() < 0.99 THEN now() END FROM orders.orders
           WHERE status = 'COMPLETED'"""
    )
    # wallet_release says which are owed; a few delivered ones wait for the deposit cursor.
    await db_pool.execute(
        """UPDATE orders.orders o
           SET wallet_release = CASE WHEN p.release_time IS NULL THEN 'PENDING' ELSE 'RELEASED' END
           FROM orders.pending_releases p WHERE p.order_id = o.id"""
    )
    await db_pool.execute("DELETE FROM orders.release_settling WHERE random() < 0.99")
    await db_pool.execute(
        """INSERT INTO wallet_pool.released_orders (order_id)
           SELECT gen_random_uuid() FROM generate_series(1, 10000)"""
    )
    await db_pool.execute("ANALYZE")
    return db_pool


POOL_PLANS = [
    ("networks_ready_for_hand_off", (["BTC", "ETH"],), {"queue_fifo_idx", "wallets_available_idx"}),
]
ORDER_PLANS = [
    ("get_order", (ORDER,), {"orders_pkey"}),
    ("change_status", (ORDER, "PROCESSING", "COMPLETED", "", "op", 10.0, None), {"orders_pkey"}),
    ("claim_waiting_orders", (100, 0.5), {"orders_waiting_idx", "orders_pkey"}),
    ("claim_expired_orders", (1800.0, 50), {"orders_payment_window_idx"}),
    ("claim_due_releases", (50, 10.0), {"orders_release_owed_idx", "pending_releases_pkey"}),
    ("count_pending_releases", (), {"orders_release_owed_idx"}),
    ("list_orders", (None, None, None, None, 50, None, None, None), {"orders_newest_idx"}),
]
# A client's listing (the scope's creator is $8): its first page and one further on.
CLIENT_LISTINGS = [
    ("first_page", (None, None, None, None, 50, None, None, "client-7")),
    ("later_page", (None, None, HOURS_AGO, ORDER, 50, None, None, "client-7")),
]


@pytest.mark.parametrize(
    ("service", "name", "args", "expected"),
    [("pool", *plan) for plan in POOL_PLANS] + [("orders", *plan) for plan in ORDER_PLANS],
    ids=[name for name, _, _ in POOL_PLANS + ORDER_PLANS],
)
async def test_hot_queries_use_their_indexes_and_scan_no_big_table(
    filled: asyncpg.Pool, service: str, name: str, args: tuple[Any, ...], expected: set[str]
) -> None:
    query = (pool_queries() if service == "pool" else order_queries())[name]
    plan = await _plan(filled, query, args)
    assert expected <= _indexes(plan), json.dumps(plan, indent=1)
    big = {"wallets", "queue", "orders", "pending_releases", "released_orders"}
    assert not _seq_scans(plan) & big, plan


@pytest.mark.parametrize(
    "args", [args for _, args in CLIENT_LISTINGS], ids=[name for name, _ in CLIENT_LISTINGS]
)
async def test_a_clients_listing_scans_only_its_own_orders_by_index(
    filled: asyncpg.Pool, args: tuple[Any, ...]
) -> None:
    """In index order from the client's position: a page's worth of rows, however many
    orders the client and the others have (no sort of all its orders, no other index)."""
    plan = await _plan(filled, order_queries()["list_orders"], args)
    assert _indexes(plan) == {"orders_creator_newest_idx"}, json.dumps(plan, indent=1)
    assert not _seq_scans(plan) and not _nodes(plan, "Sort"), json.dumps(plan, indent=1)


async def _plan(pool: asyncpg.Pool, query: str, args: tuple[Any, ...]) -> dict[str, Any]:
    async with pool.acquire() as conn, conn.transaction():
        raw = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {query}", *args)
    plan: dict[str, Any] = json.loads(raw)[0]["Plan"]
    return plan


async def _scans(conn: Connection) -> dict[str, int]:
    """Scans so far of each table (seq:name) and index (idx:name) of both schemas."""
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    rows = await conn.fetch(
        """SELECT 'seq:' || relname AS name, seq_scan AS scans FROM pg_stat_user_tables
           WHERE schemaname IN ('wallet_pool', 'orders')
           UNION ALL
           SELECT 'idx:' || indexrelname, idx_scan FROM pg_stat_user_indexes
           WHERE schemaname IN ('wallet_pool', 'orders')"""
    )
    return {row["name"]: row["scans"] for row in rows}


FUNCTION_CALLS = [
    # 5,000 waiting and free wallets: the head gets one.
    (
        "hand_off_waiting",
        "SELECT * FROM wallet_pool.hand_off_waiting('ETH')",
        {"queue_fifo_idx", "wallets_available_idx"},
    ),
    # A new order, free wallets and nobody waiting: a claim.
    (
        "allocate_wallet",
        "SELECT * FROM wallet_pool.allocate_wallet($1, 'BTC')",
        {"wallets_available_idx", "queue_fifo_idx", "released_orders_pkey"},
    ),
    # A new order behind 5,000 waiting: the back of the queue.
    (
        "allocate_wallet_queued",
        "SELECT * FROM wallet_pool.allocate_wallet($1, 'ETH')",
        {"queue_fifo_idx", "wallets_order_id_key"},
    ),
    (
        "release_wallet",
        "SELECT * FROM wallet_pool.release_wallet($1, '', 0, NULL)",
        {"wallets_order_id_key", "queue_pkey"},
    ),
]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [(sql, expected) for _, sql, expected in FUNCTION_CALLS],
    ids=[name for name, _, _ in FUNCTION_CALLS],
)
async def test_the_pools_functions_use_their_indexes_and_scan_no_big_table(
    filled: asyncpg.Pool, sql: str, expected: set[str]
) -> None:
    """EXPLAIN does not see inside a function, so its scans are counted instead."""
    order = (
        await filled.fetchval(
            "SELECT order_id FROM wallet_pool.wallets WHERE order_id IS NOT NULL LIMIT 1"
        )
        if "release" in sql
        else uuid.uuid4()
    )
    async with filled.acquire() as caller, filled.acquire() as reader:
        # A backend reports its counts when it goes idle, before it answers the statement
        # after which this is called: first what the caller did earlier, then the call.
        # The plans a function's statements settle on after a few calls.
        await caller.execute("SET plan_cache_mode = force_generic_plan")
        await caller.execute("SELECT pg_stat_force_next_flush()")
        before = await _scans(reader)
        await caller.fetch(sql, *([order] if "$1" in sql else []))
        await caller.execute("SELECT pg_stat_force_next_flush()")
        after = await _scans(reader)
        await caller.execute("RESET plan_cache_mode")
    used = {name for name, scans in after.items() if scans > before.get(name, 0)}
    assert {f"idx:{index}" for index in expected} <= used, sorted(used)
    big = {"wallets", "queue", "orders", "pending_releases", "released_orders"}
    assert not {f"seq:{table}" for table in big} & used, " ".join(sorted(used))
