"""The current definitions (each service's sql/ folder): every function, trigger and view of the
schemas has exactly one, and a database upgraded step by step ends with the same schema as
one migrated from zero; what the released code names in the database is still there."""

import re
import shutil
import subprocess
import uuid
from importlib import resources
from pathlib import Path

import asyncpg
import pytest

from order_service.domain import DepositStatus, OrderStatus, WalletRelease
from order_service.events import EventType
from order_service.payment import PaymentStatus
from shared.db import apply_migrations, create_pool
from tests.databases import MIGRATIONS, ROOT, DatabaseFactory
from tests.releases import previous_release
from tests.schema_catalog import SCHEMAS, catalog, released_surface, surface

SQL_FOLDERS = ("wallet_pool_service.sql", "order_service.sql")
_FUNCTION = re.compile(r"CREATE OR REPLACE FUNCTION\s+(\w+\.\w+)\s*\(([^)]*)\)")
_TRIGGER = re.compile(r"CREATE OR REPLACE TRIGGER\s+(\w+)\s.*?\sON\s+(\w+\.\w+)", re.DOTALL)
_VIEW = re.compile(r"CREATE OR REPLACE VIEW\s+(\w+\.\w+)")


def _definitions() -> str:
    return "\n".join(
        entry.read_text(encoding="utf-8")
        for package in SQL_FOLDERS
        for entry in resources.files(package).iterdir()
        if entry.name.endswith(".sql")
    )


def _argument_types(arguments: str) -> str:
    """`p_order_id uuid, p_at timestamptz` -> `uuid, timestamptz` (no defaults or modes here)."""
    return ", ".join(arg.split(None, 1)[1] for arg in arguments.split(",") if arg.strip())


async def test_every_function_trigger_and_view_has_exactly_one_current_definition(
    db_pool: asyncpg.Pool,
) -> None:
    text = _definitions()
    defined: list[str] = []
    for name, arguments in _FUNCTION.findall(text):
        signature = f"{name}({_argument_types(arguments)})"
        defined.append(
            "function " + await db_pool.fetchval("SELECT $1::regprocedure::text", signature)
        )
    defined += [f"trigger {table} {name}" for name, table in _TRIGGER.findall(text)]
    defined += [f"view {name}" for name in _VIEW.findall(text)]
    assert sorted(set(defined)) == sorted(defined), "defined twice"

    existing = {key for key in await _catalog(db_pool) if key.split()[0] in ("function", "view")}
    existing |= {
        f"trigger {row['rel']} {row['tgname']}"
        for row in await db_pool.fetch(
            "SELECT tgrelid::regclass::text AS rel, tgname FROM pg_trigger"
            " WHERE NOT tgisinternal AND tgrelid::regclass::text LIKE ANY ($1::text[])",
            [f"{schema}.%" for schema in SCHEMAS],
        )
    }
    assert existing == set(defined)


async def _catalog(pool: asyncpg.Pool) -> dict[str, str]:
    async with pool.acquire() as conn:
        return await catalog(conn)


def _steps(tmp_path: Path, package: str, count: int) -> str:
    """A migrations package of the first `count` files of `package`, importable by name."""
    name = f"steps_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / name
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    source = ROOT / package.replace(".", "/")
    for path in sorted(source.glob("*.sql"))[:count]:
        shutil.copy(path, folder / path.name)
    return name


async def test_a_database_upgraded_migration_by_migration_has_the_schema_of_one_migrated_at_once(
    databases: DatabaseFactory,
    db_pool: asyncpg.Pool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each migration as a release of its own (the definitions of the day were in the
    migrations then), then this release with its definitions, against the template (every
    migration and the definitions at once)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    pool = await create_pool(await databases.create(migrated=False), min_size=1, max_size=2)
    try:
        for schema, package in MIGRATIONS:
            total = len(list((ROOT / package.replace(".", "/")).glob("*.sql")))
            for count in range(1, total + 1):
                steps = _steps(tmp_path, package, count)
                await apply_migrations(pool, schema, steps, definitions=None)
            assert await apply_migrations(pool, schema, package) == []
        upgraded = await _catalog(pool)
    finally:
        await pool.close()
    from_zero = await _catalog(db_pool)
    assert upgraded.keys() == from_zero.keys()
    assert {key for key in upgraded if upgraded[key] != from_zero[key]} == set()


async def test_everything_the_released_code_can_name_in_the_database_is_still_there(
    db_pool: asyncpg.Pool,
) -> None:
    """Expand/contract: a function, a view or a column goes only in the release after the one
    that stopped naming it (README, Changing the schema)."""
    released = released_surface()
    assert released
    async with db_pool.acquire() as conn:
        now = set(await surface(conn))
    assert [line for line in released if line not in now] == []


async def test_the_release_signature_the_previous_releases_call_still_frees_the_wallet(
    db_pool: asyncpg.Pool,
) -> None:
    order = uuid.uuid4()
    await db_pool.execute(
        "INSERT INTO wallet_pool.wallets (network, address, order_id, allocated_at)"
        " VALUES ('ETH', 'a1', $1, now())",
        order,
    )
    # As migration 008's callers called it.
    row = await db_pool.fetchrow(
        "SELECT * FROM wallet_pool.release_wallet($1, $2, $3)", order, "a1", 0.0
    )
    assert row is not None
    assert (row["address"], row["network"], row["kept_address"]) == ("a1", "ETH", None)
    assert await db_pool.fetchval("SELECT order_id FROM wallet_pool.wallets") is None
    assert await db_pool.fetchval(
        "SELECT EXISTS (SELECT FROM wallet_pool.released_orders WHERE order_id = $1)", order
    )


async def test_the_sequencer_signature_the_previous_releases_call_still_numbers_events(
    db_pool: asyncpg.Pool,
) -> None:
    order = uuid.uuid4()
    await db_pool.execute(
        "INSERT INTO orders.order_events (order_id, type, status, network)"
        " VALUES ($1, 'CREATED', 'PENDING', 'ETH'), ($1, 'QUEUED', 'PENDING', 'ETH')",
        order,
    )
    # As the callers before order migration 006 called it.
    assert await db_pool.fetchval("SELECT orders.sequence_events($1)", 10) == 2
    sequences = await db_pool.fetch("SELECT sequence FROM orders.order_events ORDER BY id")
    assert [row["sequence"] for row in sequences] == [1, 2]
    assert await db_pool.fetchval("SELECT last_sequence FROM orders.event_log") == 2


async def test_the_databases_checks_admit_exactly_the_python_enums_values(
    db_pool: asyncpg.Pool,
) -> None:
    async def admitted(table: str, column: str) -> set[str]:
        definitions = await db_pool.fetch(
            "SELECT pg_get_constraintdef(oid) AS d FROM pg_constraint"
            " WHERE conrelid = $1::regclass AND contype = 'c'",
            table,
        )
        named = re.compile(rf"(?<![\w.]){column}\b")
        found = [
            set(re.findall(r"'(\w+)'", row["d"])) for row in definitions if named.search(row["d"])
        ]
        assert len(found) == 1, definitions
        return found[0]

    assert await admitted("orders.orders", "status") == set(OrderStatus)
    assert await admitted("orders.orders", "wallet_release") == {m.name for m in WalletRelease}
    assert await admitted("orders.order_events", "type") == set(EventType)
    assert await admitted("orders.orders", "payment_status") == set(PaymentStatus)
    assert await admitted("orders.deposits", "status") == set(DepositStatus)


def test_a_release_that_changes_a_definition_also_adds_a_migration() -> None:
    """A replica of the previous release that starts during the rollout keeps the database's
    definitions only when it finds a migration it does not know (shared/db.py); without one
    it would put its own, older definitions back until a new replica starts again."""
    previous = previous_release()
    for (schema, migrations), folder in zip(
        MIGRATIONS, ("wallet_pool_service/sql", "order_service/sql"), strict=True
    ):
        migrations_folder = migrations.replace(".", "/")
        then = _files_at(previous, folder)
        now = {path.name: path.read_text() for path in (ROOT / folder).glob("*.sql")}
        if then == now:
            continue
        added = {p.name for p in (ROOT / migrations_folder).glob("*.sql")}
        added -= set(_files_at(previous, migrations_folder))
        assert added, f"{folder} changed since {previous[:7]}, but {schema} has no new migration"


def _files_at(commit: str, folder: str) -> dict[str, str]:
    """The .sql files of `folder` at `commit` (none where it had no such folder)."""

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)

    listed = git("ls-tree", "--name-only", f"{commit}:{folder}")
    names = listed.stdout.split() if listed.returncode == 0 else []
    return {n: git("show", f"{commit}:{folder}/{n}").stdout for n in names if n.endswith(".sql")}
