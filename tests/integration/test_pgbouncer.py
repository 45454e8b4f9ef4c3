"""Behind a real PgBouncer in transaction pooling: what breaks with asyncpg's defaults, and
that the settings the services use there (README, "Behind PgBouncer") hold."""

import asyncio
from collections.abc import Callable
from importlib import resources

import asyncpg
import pytest

from shared.db import apply_migrations, create_pool
from shared.listen import Listener
from tests.databases import MIGRATIONS, DatabaseFactory
from tests.pgbouncer import PgBouncer
from tests.waiting import HANG_GUARD_SECONDS, until

# PgBouncer's log line for a notification that reached a server connection no client holds.
NOT_LINKED = "from server when not linked"


async def _switch_server_connections(through: str, statement_cache_size: int) -> int:
    """A statement run, then run again while another client holds the server connection it
    ran on (so PgBouncer gives the next transaction another one)."""
    pool = await create_pool(
        through, min_size=2, max_size=2, statement_cache_size=statement_cache_size
    )
    try:
        async with pool.acquire() as first, pool.acquire() as second:
            assert await first.fetchval("SELECT $1::int + 1", 1) == 2
            async with second.transaction():
                # LIFO: the server connection `first` used last is the one idle.
                await second.fetchval("SELECT 1")
                answer: int = await first.fetchval("SELECT $1::int + 1", 2)
                return answer
    finally:
        await pool.close()


async def test_with_the_statement_cache_a_statement_prepared_on_another_server_is_missing(
    pgbouncer: PgBouncer, database_url: str
) -> None:
    with pytest.raises(asyncpg.InvalidSQLStatementNameError) as raised:
        await _switch_server_connections(pgbouncer.url(database_url), statement_cache_size=100)
    assert 'prepared statement "__asyncpg_stmt_' in str(raised.value)
    assert "does not exist" in str(raised.value)
    # asyncpg's own hint names the way out.
    assert "statement_cache_size to 0" in (raised.value.hint or "")


async def test_without_the_statement_cache_the_same_switch_works(
    pgbouncer: PgBouncer, database_url: str
) -> None:
    assert await _switch_server_connections(pgbouncer.url(database_url), 0) == 3


async def test_without_the_statement_cache_many_clients_share_a_few_server_connections(
    pgbouncer: PgBouncer, database_url: str
) -> None:
    pool = await create_pool(
        pgbouncer.url(database_url), min_size=20, max_size=20, statement_cache_size=0
    )

    async def client(number: int) -> None:
        for step in range(100):
            row = await pool.fetchrow(
                "SELECT $1::int * 1000 + $2::int AS n, $3::text AS s", number, step, str(step)
            )
            assert row is not None
            assert (row["n"], row["s"]) == (number * 1000 + step, str(step))
            async with pool.acquire() as conn, conn.transaction():
                assert await conn.fetchval("SELECT $1::bigint", step) == step

    try:
        await asyncio.gather(*(client(number) for number in range(20)))
    finally:
        await pool.close()


async def test_pgbouncer_refuses_a_search_path_startup_parameter_and_the_pool_sends_none(
    pgbouncer: PgBouncer, database_url: str
) -> None:
    through = pgbouncer.url(database_url)
    with pytest.raises(asyncpg.ProtocolViolationError, match="unsupported startup parameter"):
        await asyncpg.connect(through, server_settings={"search_path": "pg_catalog"})
    pool = await create_pool(
        through, min_size=1, max_size=1, application_name="probe", statement_cache_size=0
    )
    try:
        # application_name is a parameter PgBouncer passes on.
        assert await pool.fetchval("SELECT current_setting('application_name')") == "probe"
    finally:
        await pool.close()


async def test_migrations_through_pgbouncer_apply_each_file_once_when_replicas_start_together(
    pgbouncer: PgBouncer, databases: DatabaseFactory
) -> None:
    through = pgbouncer.url(await databases.create(migrated=False))
    pools = [
        await create_pool(through, min_size=1, max_size=2, statement_cache_size=0) for _ in range(3)
    ]
    try:
        results = await asyncio.gather(
            *(apply_migrations(p, schema, package) for p in pools for schema, package in MIGRATIONS)
        )
        applied = [version for result in results for version in result]
        files = [
            entry.name
            for _, package in MIGRATIONS
            for entry in resources.files(package).iterdir()
            if entry.name.endswith(".sql")
        ]
        assert len(applied) == len(set(applied)) == len(files)
        for schema, package in MIGRATIONS:
            assert await apply_migrations(pools[0], schema, package) == []
        # No advisory lock is left behind on any server connection.
        locks = await pools[0].fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database ="
            " (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        assert locks == 0
    finally:
        for pool in pools:
            await pool.close()


async def _heard(
    pool: asyncpg.Pool, notify_url: str, settled: Callable[[list[str]], bool]
) -> list[str]:
    """What a Listener on `pool` hears of a notification committed on another connection,
    once `settled` says the notification's fate is known (heard, or dropped)."""
    heard: list[str] = []
    listening = asyncio.Event()
    listener = asyncio.create_task(
        Listener(pool, "probe", {"probe": heard.append}, listening.set, check_seconds=30).run()
    )
    try:
        await asyncio.wait_for(listening.wait(), HANG_GUARD_SECONDS)
        notifier = await asyncpg.connect(notify_url)
        try:
            await notifier.execute("NOTIFY probe, 'hello'")
        finally:
            await notifier.close()

        async def known() -> bool:
            return settled(heard)

        await until(known, "the notification was heard or dropped")
        return heard
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


async def test_listen_needs_a_direct_connection_a_transaction_pool_drops_notifications(
    pgbouncer: PgBouncer, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    bounced = await create_pool(
        pgbouncer.url(database_url), min_size=0, max_size=1, statement_cache_size=0
    )
    direct = await create_pool(database_url, min_size=0, max_size=1)
    try:
        assert await _heard(direct, database_url, bool) == ["hello"]
        assert "connection pooler" not in caplog.text
        dropped = pgbouncer.logs().count(NOT_LINKED)
        # Settled by PgBouncer's log: it dropped a notification (or the listener heard it).
        assert (
            await _heard(
                bounced,
                database_url,
                lambda heard: bool(heard) or pgbouncer.logs().count(NOT_LINKED) > dropped,
            )
            == []
        )
        # The listener says why.
        assert "probe: connected through a connection pooler" in caplog.text
    finally:
        await bounced.close()
        await direct.close()
    # PgBouncer received it on a server connection no client was linked to, and dropped it.
    assert NOT_LINKED in pgbouncer.logs()
