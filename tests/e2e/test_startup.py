"""A service that cannot do its job refuses to start: the real process exits non-zero with one
line naming what is missing, before it touches the database or binds a port."""

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


@local_only
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
