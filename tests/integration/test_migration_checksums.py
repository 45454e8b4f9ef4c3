"""The migrations runner records each applied file's sha256 and refuses a file changed since."""

import hashlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from shared.db import MigrationChanged, apply_migrations, create_pool
from tests.databases import DatabaseFactory

SCHEMA = "checksum_test"


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A migrations package of its own, importable for this test: (name, folder)."""
    name = f"migrations_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / name
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    (folder / "001_things.sql").write_text(f"CREATE TABLE {SCHEMA}.things (id bigint);\n")
    (folder / "002_more.sql").write_text(f"ALTER TABLE {SCHEMA}.things ADD COLUMN name text;\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name, folder


@pytest.fixture
async def pool(databases: DatabaseFactory) -> AsyncIterator[asyncpg.Pool]:
    created = await create_pool(await databases.create(migrated=False), min_size=1, max_size=2)
    yield created
    await created.close()


async def recorded(pool: asyncpg.Pool) -> dict[str, str | None]:
    rows = await pool.fetch(f"SELECT version, checksum FROM {SCHEMA}.schema_migrations")
    return {row["version"]: row["checksum"] for row in rows}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_each_applied_migration_is_recorded_with_the_sha256_of_its_file(
    pool: asyncpg.Pool, package: tuple[str, Path]
) -> None:
    name, folder = package
    assert await apply_migrations(pool, SCHEMA, name) == ["001_things", "002_more"]
    assert await recorded(pool) == {
        "001_things": sha256(folder / "001_things.sql"),
        "002_more": sha256(folder / "002_more.sql"),
    }


async def test_a_migration_changed_after_it_was_applied_is_refused_naming_its_file(
    pool: asyncpg.Pool, package: tuple[str, Path]
) -> None:
    name, folder = package
    await apply_migrations(pool, SCHEMA, name)
    (folder / "001_things.sql").write_text(f"CREATE TABLE {SCHEMA}.things (id int);\n")
    (folder / "003_new.sql").write_text(f"CREATE TABLE {SCHEMA}.new_things (id bigint);\n")

    with pytest.raises(MigrationChanged, match=rf"^migration {name}/001_things\.sql changed"):
        await apply_migrations(pool, SCHEMA, name)
    # Nothing after it ran either.
    assert set(await recorded(pool)) == {"001_things", "002_more"}
    assert await pool.fetchval(f"SELECT to_regclass('{SCHEMA}.new_things')") is None


async def test_migrations_applied_before_checksums_get_theirs_recorded_on_the_first_run(
    pool: asyncpg.Pool, package: tuple[str, Path]
) -> None:
    name, folder = package
    # The bookkeeping table as the runner kept it before checksums.
    await pool.execute(f"CREATE SCHEMA {SCHEMA}")
    await pool.execute(
        f"CREATE TABLE {SCHEMA}.schema_migrations"
        " (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    await pool.execute((folder / "001_things.sql").read_text())
    await pool.execute(f"INSERT INTO {SCHEMA}.schema_migrations (version) VALUES ('001_things')")

    assert await apply_migrations(pool, SCHEMA, name) == ["002_more"]
    assert await recorded(pool) == {
        "001_things": sha256(folder / "001_things.sql"),
        "002_more": sha256(folder / "002_more.sql"),
    }
    (folder / "001_things.sql").write_text("-- changed\n")
    with pytest.raises(MigrationChanged, match=r"001_things\.sql"):
        await apply_migrations(pool, SCHEMA, name)


async def test_a_recorded_migration_whose_file_is_gone_does_not_stop_an_older_release(
    pool: asyncpg.Pool, package: tuple[str, Path]
) -> None:
    name, folder = package
    await apply_migrations(pool, SCHEMA, name)
    (folder / "002_more.sql").unlink()  # the code rolled back to the release before it
    assert await apply_migrations(pool, SCHEMA, name) == []
