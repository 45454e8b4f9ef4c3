"""The runner applies a service's current definitions (its sql/ folder) after the migrations:
recorded with a checksum, skipped while unchanged, in the transaction of the last migration,
and never over the definitions of a newer release."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from shared.db import apply_migrations, create_pool
from tests.databases import DatabaseFactory

SCHEMA = "definitions_test"


def _answer(value: int) -> str:
    return (
        f"CREATE OR REPLACE FUNCTION {SCHEMA}.answer() RETURNS integer"
        f" LANGUAGE sql AS $$ SELECT {value} $$;\n"
    )


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A service package with migrations/ and sql/, importable: (migrations package, root)."""
    name = f"service_{uuid.uuid4().hex[:8]}"
    root = tmp_path / name
    for folder in (root, root / "migrations", root / "sql"):
        folder.mkdir()
        (folder / "__init__.py").write_text("")
    (root / "migrations" / "001_things.sql").write_text(
        f"CREATE TABLE {SCHEMA}.things (id bigint);\n"
    )
    (root / "sql" / "answer.sql").write_text(_answer(1))
    monkeypatch.syspath_prepend(str(tmp_path))
    return f"{name}.migrations", root


@pytest.fixture
async def pool(databases: DatabaseFactory) -> AsyncIterator[asyncpg.Pool]:
    created = await create_pool(await databases.create(migrated=False), min_size=1, max_size=2)
    yield created
    await created.close()


async def _answer_now(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval(f"SELECT {SCHEMA}.answer()"))


async def test_definitions_are_applied_after_the_migrations_and_recorded_with_a_checksum(
    pool: asyncpg.Pool, service: tuple[str, Path]
) -> None:
    package, _ = service
    assert await apply_migrations(pool, SCHEMA, package) == ["001_things"]
    assert await _answer_now(pool) == 1
    row = await pool.fetchrow(f"SELECT file, checksum FROM {SCHEMA}.schema_definitions")
    assert row is not None
    assert row["file"] == "answer.sql" and len(row["checksum"]) == 64


async def test_an_unchanged_definitions_file_is_not_run_again_and_a_changed_one_is(
    pool: asyncpg.Pool, service: tuple[str, Path]
) -> None:
    package, root = service
    await apply_migrations(pool, SCHEMA, package)
    # Changed behind the runner's back: a start with the same file leaves it so.
    await pool.execute(_answer(7))
    assert await apply_migrations(pool, SCHEMA, package) == []
    assert await _answer_now(pool) == 7

    (root / "sql" / "answer.sql").write_text(_answer(2))
    await apply_migrations(pool, SCHEMA, package)
    assert await _answer_now(pool) == 2


async def test_every_definitions_file_runs_again_after_a_new_migration(
    pool: asyncpg.Pool, service: tuple[str, Path]
) -> None:
    """A migration may replace what a definitions file defines: the file has the last word."""
    package, root = service
    await apply_migrations(pool, SCHEMA, package)
    (root / "migrations" / "002_more.sql").write_text(_answer(9))
    assert await apply_migrations(pool, SCHEMA, package) == ["002_more"]
    assert await _answer_now(pool) == 1


async def test_a_failing_definition_undoes_the_migration_it_came_with(
    pool: asyncpg.Pool, service: tuple[str, Path]
) -> None:
    package, root = service
    (root / "sql" / "answer.sql").write_text("CREATE OR REPLACE FUNCTION broken(;\n")
    with pytest.raises(asyncpg.PostgresSyntaxError):
        await apply_migrations(pool, SCHEMA, package)
    assert await pool.fetchval(f"SELECT to_regclass('{SCHEMA}.things')") is None
    assert await pool.fetchval(f"SELECT count(*) FROM {SCHEMA}.schema_migrations") == 0


async def test_an_older_release_leaves_the_definitions_of_a_newer_one_in_place(
    pool: asyncpg.Pool, service: tuple[str, Path]
) -> None:
    """A replica of the previous release restarting during a rollout, after the new release
    migrated the database, does not put its own definitions back."""
    package, root = service
    (root / "migrations" / "002_more.sql").write_text(f"SELECT 1 FROM {SCHEMA}.things;\n")
    (root / "sql" / "answer.sql").write_text(_answer(2))
    await apply_migrations(pool, SCHEMA, package)  # the new release

    (root / "migrations" / "002_more.sql").unlink()  # the old one
    (root / "sql" / "answer.sql").write_text(_answer(1))
    assert await apply_migrations(pool, SCHEMA, package) == []
    assert await _answer_now(pool) == 2


async def test_a_migration_never_makes_a_snapshot_reader_of_the_previous_release_its_victim(
    pool: asyncpg.Pool, service: tuple[str, Path]
) -> None:
    """A reader holds one table and, once the migration has started, reads another that the
    migration changes first; the migration then changes the reader's first table. If the
    migration took the second table before waiting on the first, the reader would wait first
    and PostgreSQL would abort it as the deadlock's victim: a failed call of a replica still
    serving. The migration waits for the reader instead (or gives way and tries again)."""
    package, root = service
    (root / "migrations" / "001_things.sql").write_text(
        f"CREATE TABLE {SCHEMA}.first (id bigint); CREATE TABLE {SCHEMA}.second (id bigint);\n"
    )
    assert await apply_migrations(pool, SCHEMA, package) == ["001_things"]
    (root / "migrations" / "002_both.sql").write_text(
        f"ALTER TABLE {SCHEMA}.second ADD COLUMN x integer;\n"
        "SELECT pg_sleep(0.3);\n"  # the reader now waits on `second`, before this waits
        f"ALTER TABLE {SCHEMA}.first ADD COLUMN y integer;\n"
    )
    reader = await pool.acquire()
    try:
        async with reader.transaction(isolation="repeatable_read", readonly=True):
            await reader.fetch(f"SELECT * FROM {SCHEMA}.first")
            migrating = asyncio.create_task(apply_migrations(pool, SCHEMA, package))
            # The migration has taken `second`, or waits on `first`.
            while not await reader.fetchval(
                """SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid <> pg_backend_pid()
                   AND (relation = $1::regclass AND granted
                        AND mode = 'AccessExclusiveLock'
                        OR relation = $2::regclass AND NOT granted))""",
                f"{SCHEMA}.second",
                f"{SCHEMA}.first",
            ):
                await asyncio.sleep(0.01)
            await reader.fetch(f"SELECT * FROM {SCHEMA}.second")
        assert await migrating == ["002_both"]
    finally:
        await pool.release(reader)


async def test_a_migration_past_its_own_statement_timeout_fails_once_and_is_not_tried_again(
    pool: asyncpg.Pool, service: tuple[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """Only the wait for the schema's tables is tried again; a migration that runs too long
    fails the start at once, instead of running five times."""
    package, root = service
    assert await apply_migrations(pool, SCHEMA, package) == ["001_things"]
    (root / "migrations" / "002_slow.sql").write_text(
        "SET LOCAL statement_timeout = '50ms';\nSELECT pg_sleep(1);\n"
    )
    with pytest.raises(asyncpg.QueryCanceledError):
        await apply_migrations(pool, SCHEMA, package)
    assert "trying again" not in caplog.text


async def test_a_migration_gives_way_to_a_long_reader_and_is_tried_again(
    pool: asyncpg.Pool, service: tuple[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """A reader holding a table past the lock's 0.3 s: the migration rolls back, tries again
    after a pause, and is applied once the reader has ended."""
    package, root = service
    assert await apply_migrations(pool, SCHEMA, package) == ["001_things"]
    (root / "migrations" / "002_more.sql").write_text(
        f"ALTER TABLE {SCHEMA}.things ADD COLUMN x integer;\n"
    )
    reader = await pool.acquire()
    try:
        async with reader.transaction():
            await reader.fetch(f"SELECT * FROM {SCHEMA}.things")
            migrating = asyncio.create_task(apply_migrations(pool, SCHEMA, package))
            while "trying again" not in caplog.text and not migrating.done():
                await asyncio.sleep(0.01)
        assert await migrating == ["002_more"]
    finally:
        await pool.release(reader)
