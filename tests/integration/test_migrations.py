import asyncio
import uuid
from importlib import resources

import asyncpg

from shared.db import apply_migrations, close_pool, create_pool
from tests.databases import MIGRATIONS, DatabaseFactory
from tests.waiting import HANG_GUARD_SECONDS, until
from wallet_pool_service.manager import WalletPoolManager


async def _tables(pool: asyncpg.Pool) -> set[str]:
    rows = await pool.fetch(
        "SELECT table_schema || '.' || table_name AS name FROM information_schema.tables"
        " WHERE table_schema IN ('orders', 'wallet_pool')"
    )
    return {row["name"] for row in rows}


async def test_migrations_build_each_service_schema_once_even_when_replicas_start_together(
    databases: DatabaseFactory,
) -> None:
    url = await databases.create(migrated=False)
    pools = [await create_pool(url, min_size=1, max_size=2) for _ in range(3)]
    try:
        results = await asyncio.gather(
            *(apply_migrations(p, schema, package) for p in pools for schema, package in MIGRATIONS)
        )
        applied = [version for result in results for version in result]
        assert sorted(applied) == [
            "001_orders",
            "001_pool_and_queue",
            "002_disable_and_history",
            "002_replicas_expiry_idempotency",
            "003_churn",
            "003_cooldown",
            "004_churn",
            "004_orders_by_creator",
            "005_event_log",
            "005_one_spelling",
            "006_announce_from_sequencer",
            "006_queue_places",
            "007_deposits",
            "007_one_call_per_decision",
            "008_confirmed_events",
            "008_release_names_the_wallet",
            "009_assets_and_payment",
            "009_deposits_and_watermark",
            "010_assets_and_dispositions",
            "010_release_owed_once",
        ]
        assert await _tables(pools[0]) == {
            "orders.orders",
            "orders.status_history",
            "orders.pending_releases",
            "orders.order_events",
            "orders.event_log",
            "orders.deposits",
            "orders.deposit_cursor",
            "orders.release_settling",
            "orders.events_shown",
            "orders.schema_migrations",
            "orders.schema_definitions",
            "wallet_pool.wallets",
            "wallet_pool.queue",
            "wallet_pool.queue_blocks",
            "wallet_pool.released_orders",
            "wallet_pool.assignments",
            "wallet_pool.chain_watermarks",
            "wallet_pool.deposits",
            "wallet_pool.assets",
            "wallet_pool.order_assets",
            "wallet_pool.wallet_states",
            "wallet_pool.schema_migrations",
            "wallet_pool.schema_definitions",
        }
        assert await apply_migrations(pools[0], "orders", "order_service.migrations") == []
    finally:
        for pool in pools:
            await pool.close()


async def test_the_database_refuses_a_second_holder_for_an_order_or_an_address(
    db_pool: asyncpg.Pool,
) -> None:
    await db_pool.execute(
        "INSERT INTO wallet_pool.wallets (network, address, order_id, allocated_at)"
        " VALUES ('ETH', 'a1', '00000000-0000-4000-8000-000000000001', now())"
    )
    for statement in [
        "INSERT INTO wallet_pool.wallets (network, address) VALUES ('ETH', 'a1')",
        "INSERT INTO wallet_pool.wallets (network, address, order_id, allocated_at)"
        " VALUES ('ETH', 'a2', '00000000-0000-4000-8000-000000000001', now())",
    ]:
        try:
            await db_pool.execute(statement)
        except asyncpg.UniqueViolationError:
            continue
        raise AssertionError(f"accepted: {statement}")


async def test_eth_addresses_stored_in_mixed_case_before_are_brought_to_lower_case(
    db_pool: asyncpg.Pool,
) -> None:
    checksummed = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    order = uuid.uuid4()
    # As an older version stored it: held, with its open assignment.
    await db_pool.execute(
        "INSERT INTO wallet_pool.wallets (network, address, order_id, allocated_at)"
        " VALUES ('ETH', $1, $2, now())",
        checksummed,
        order,
    )
    await db_pool.execute(
        "INSERT INTO wallet_pool.assignments (address, network, order_id) VALUES ($1, 'ETH', $2)",
        checksummed,
        order,
    )
    migration = resources.files("wallet_pool_service.migrations") / "005_one_spelling.sql"
    await db_pool.execute(migration.read_text(encoding="utf-8"))

    stored = await db_pool.fetchval("SELECT address FROM wallet_pool.wallets")
    assigned = await db_pool.fetchval("SELECT address FROM wallet_pool.assignments")
    assert stored == assigned == checksummed.lower()
    # The order service still holds the old spelling; its release finds the wallet.
    release = await WalletPoolManager(db_pool, ("ETH",)).release_wallet(order, checksummed)
    assert release.released


async def test_closing_a_pool_does_not_wait_forever_for_a_connection_still_held(
    database_url: str,
) -> None:
    name = f"close-test-{uuid.uuid4().hex[:8]}"
    pool = await create_pool(database_url, min_size=1, max_size=2, application_name=name)
    await pool.acquire()  # never released, as by a call cut short at shutdown
    # Without its timeout the close would wait for that connection for ever: returning at
    # all is the proof.
    await asyncio.wait_for(close_pool(pool, timeout_seconds=0.3), HANG_GUARD_SECONDS)
    conn = await asyncpg.connect(database_url)
    try:
        query = "SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = $1"

        async def gone() -> bool:  # the server sees the sockets close a moment later
            return bool(await conn.fetchval(query, name))

        await until(gone, "the pool's connections closed on the server")
    finally:
        await conn.close()
