import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.databases import DatabaseFactory
from tests.e2e import containers
from tests.e2e.stack import Stack, start_stack

EXTERNAL = bool(os.environ.get("E2E_ORDER_ADDR"))


# Why a latency bound is left to local processes.
PROXIED_LATENCY = (
    "a latency bound measured from the host; in containers each answer also crosses the engine's"
    " userland port proxy, whose scheduling on a loaded machine the bound does not budget for"
)


def local_only(why: str) -> pytest.MarkDecorator:
    """Runs against the suite's own processes only, not containers (`make test-containers`)
    nor a stack reached by address; `why` says what containers cannot give the test."""
    return pytest.mark.skipif(EXTERNAL or containers.enabled(), reason=f"local only: {why}")


# Needs the suite's own stack (processes or containers, through tests/e2e/stack.py): it stops,
# configures or inspects the services, which a stack reached by address does not allow.
own_stack = pytest.mark.skipif(
    EXTERNAL, reason="stops, configures or inspects the services: needs the suite's own stack"
)


@pytest.fixture
async def e2e_database_url(databases: DatabaseFactory) -> AsyncIterator[str]:
    if EXTERNAL:
        url = os.environ.get("E2E_DATABASE_URL")
        if not url:
            pytest.skip("E2E_DATABASE_URL is needed to inspect an external stack's database")
        yield url
        return
    # Empty: the services apply their own migrations at start-up.
    url = await databases.create(migrated=False)
    yield url
    await databases.drop_database(url)


@pytest.fixture
async def stack(
    e2e_database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Stack]:
    """The stack under test; `@pytest.mark.stack_env(NAME="value")` configures the suite's
    own processes further."""
    if EXTERNAL:
        started: Stack = Stack(
            os.environ["E2E_ORDER_ADDR"],
            os.environ["E2E_WALLET_POOL_ADDR"],
            (
                os.environ.get("E2E_OPERATOR_TOKEN", os.environ.get("OPERATOR_TOKEN", "")),
                os.environ.get("E2E_CLIENT_TOKEN", os.environ.get("CLIENT_TOKEN", "")),
                os.environ.get("E2E_SERVICE_TOKEN", os.environ.get("SERVICE_TOKEN", "")),
            ),
        )
    else:
        marker = request.node.get_closest_marker("stack_env")
        extra_env = dict(marker.kwargs) if marker else None
        started = await start_stack(e2e_database_url, tmp_path, extra_env=extra_env)
    try:
        yield started
    finally:
        await started.close()


@pytest.fixture
async def db(e2e_database_url: str, stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    """The stack's database, opened after the services migrated it."""
    pool = await asyncpg.create_pool(e2e_database_url, min_size=1, max_size=2)
    assert pool is not None
    yield pool
    await pool.close()
