"""A service that cannot do its job refuses to start: the real process exits non-zero with one
line naming what is missing (a credential: before it touches the database or binds a port) or
what is wrong (a migration changed since it was applied)."""

from pathlib import Path

import asyncpg
import pytest

from scripts.processes import ServiceProcess
from tests.e2e.conftest import local_only
from tests.e2e.stack import service_env

# None of these may supply the missing credential behind the test's back.
NO_EXTRA_CREDENTIALS = {"AUTH_TOKENS": "", "AUTH_TOKENS_FILE": ""}


async def refused_start(module: str, env: dict[str, str], log_path: Path) -> tuple[int, str]:
    """Start `module` expecting it to exit by itself; its exit code and output."""
    process = ServiceProcess(module, env, log_path)
    try:
        await process.start()
    except RuntimeError:
        assert process.process is not None
        code = process.process.poll()
        assert code is not None
        return code, process.logs()
    await process.stop()
    pytest.fail(f"{module} started and served although it cannot do its job:\n{process.logs()}")


@local_only("starts one service by hand on a database it prepares, to watch it refuse to start")
@pytest.mark.parametrize(
    ("module", "environment", "unset", "named"),
    [
        (
            "order_service",
            "production",
            "SERVICE_TOKEN",
            "SERVICE_TOKEN is required: the wallet pool accepts "
            "AllocateWallet and ReleaseWallet only from the 'service' role",
        ),
        (
            "order_service",
            "development",
            "OPERATOR_TOKEN",
            "no credential for the 'operator' role (only operators move orders to a final "
            "status): set OPERATOR_TOKEN",
        ),
        (
            "wallet_pool_service",
            "production",
            "SERVICE_TOKEN",
            "no credential for the 'service' role (only the order service allocates and "
            "releases wallets): set SERVICE_TOKEN",
        ),
        (
            "wallet_pool_service",
            "development",
            "OPERATOR_TOKEN",
            "no credential for the 'operator' role (only operators add wallets): "
            "set OPERATOR_TOKEN",
        ),
    ],
)
async def test_a_service_without_a_credential_it_needs_exits_naming_it(
    e2e_database_url: str,
    tmp_path: Path,
    module: str,
    environment: str,
    unset: str,
    named: str,
) -> None:
    env = service_env(e2e_database_url, environment, {**NO_EXTRA_CREDENTIALS, unset: ""})

    code, output = await refused_start(module, env, tmp_path / f"{module}.log")

    assert code == 2, output
    [line] = output.splitlines()
    assert line.startswith(f"{module}: configuration error: {named}")
    # Refused before any database work: not even the migrations ran.
    conn = await asyncpg.connect(e2e_database_url)
    try:
        schemas = await conn.fetchval(
            "SELECT count(*) FROM pg_namespace WHERE nspname IN ('orders', 'wallet_pool')"
        )
    finally:
        await conn.close()
    assert schemas == 0


@local_only("starts one service by hand on a database it prepares, to watch it refuse to start")
async def test_the_pool_refuses_to_start_when_an_applied_migration_changed_naming_the_file(
    e2e_database_url: str, tmp_path: Path
) -> None:
    env = service_env(e2e_database_url)
    first = ServiceProcess("wallet_pool_service", env, tmp_path / "first.log")
    await first.start()
    assert await first.stop() == 0
    conn = await asyncpg.connect(e2e_database_url)
    try:
        files = await conn.fetch(
            "SELECT version, checksum FROM wallet_pool.schema_migrations ORDER BY version"
        )
        # As if the file had been edited after it was applied.
        await conn.execute(
            "UPDATE wallet_pool.schema_migrations SET checksum = $1 WHERE version = $2",
            "0" * 64,
            files[2]["version"],
        )
    finally:
        await conn.close()
    assert [row["checksum"] is not None for row in files] == [True] * len(files)

    code, output = await refused_start("wallet_pool_service", env, tmp_path / "second.log")

    assert code == 3, output
    [line] = output.splitlines()
    assert line.startswith(
        f"wallet_pool_service: cannot start: migration "
        f"wallet_pool_service/migrations/{files[2]['version']}.sql changed since it was applied"
    )


@local_only("starts one service by hand on a database it prepares, to watch it refuse to start")
async def test_a_database_migrated_before_checksums_starts_and_gets_them_recorded(
    e2e_database_url: str, tmp_path: Path
) -> None:
    env = service_env(e2e_database_url)
    first = ServiceProcess("order_service", env, tmp_path / "first.log")
    await first.start()
    assert await first.stop() == 0
    conn = await asyncpg.connect(e2e_database_url)
    try:
        query = "SELECT version, checksum FROM orders.schema_migrations"
        expected = {row["version"]: row["checksum"] for row in await conn.fetch(query)}
        # The bookkeeping table as the runner kept it before checksums.
        await conn.execute("ALTER TABLE orders.schema_migrations DROP COLUMN checksum")

        again = ServiceProcess("order_service", env, tmp_path / "again.log")
        await again.start()
        assert await again.stop() == 0
        assert "migration checksum recorded" in again.logs()
        recorded = {row["version"]: row["checksum"] for row in await conn.fetch(query)}
    finally:
        await conn.close()
    assert recorded == expected and None not in expected.values()
