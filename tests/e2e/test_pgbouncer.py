"""End to end behind a real PgBouncer in transaction pooling: both services' database URLs
point at PgBouncer (statement cache off), their listeners connect directly."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import grpc
import pytest

from exchange.order.v1 import order_service_pb2 as opb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from tests.e2e.conftest import local_only
from tests.e2e.stack import LocalStack
from tests.e2e.test_release_flow import (
    add_wallets,
    create,
    eth_address,
    finish,
    holder,
    until_shown,
    watching_hand_offs,
)
from tests.e2e.test_watch import Watch
from tests.invariants import check_all
from tests.pgbouncer import PgBouncer
from tests.waiting import HANG_GUARD_SECONDS

pytestmark = local_only("PgBouncer runs on the host's loopback, out of the containers' reach")


def behind_pgbouncer(direct_url: str) -> dict[str, str]:
    """The settings of README's "Behind PgBouncer", but for the main URL itself."""
    return {
        "DATABASE_STATEMENT_CACHE_SIZE": "0",
        "ORDER_LISTEN_DATABASE_URL": direct_url,
        "WALLET_POOL_LISTEN_DATABASE_URL": direct_url,
        # The safety net of the push is slowed to once a minute: only the push is in time.
        "ALLOCATION_SYNC_SECONDS": "60",
    }


@pytest.fixture
async def bounced(
    e2e_database_url: str, pgbouncer: PgBouncer, tmp_path: Path
) -> AsyncIterator[LocalStack]:
    # The suite's PgBouncer knows the server's user alone (its userlist), so both services
    # log in as that user here; tests/e2e/test_service_roles.py runs them as their roles.
    stack = await LocalStack.start(
        pgbouncer.url(e2e_database_url),
        tmp_path,
        extra_env=behind_pgbouncer(e2e_database_url),
        service_roles=False,
    )
    try:
        yield stack
    finally:
        await stack.close()
    for process in (stack.order_process, stack.pool_process):
        logs = process.logs()
        assert "prepared statement" not in logs
        assert "connection pooler" not in logs  # the listeners connected directly
        assert '"level": "error"' not in logs, logs[-3000:]


@pytest.fixture
async def direct_db(e2e_database_url: str, bounced: LocalStack) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(e2e_database_url, min_size=1, max_size=2)
    assert pool is not None
    yield pool
    await pool.close()


async def test_behind_pgbouncer_a_released_wallet_is_pushed_to_the_waiting_order_and_its_watch(
    bounced: LocalStack, direct_db: asyncpg.Pool, pgbouncer: PgBouncer, e2e_database_url: str
) -> None:
    address = eth_address()
    await add_wallets(bounced, "ETH", [address])
    first = await create(bounced)
    waiting = await create(bounced)
    assert first.wallet_address == address
    assert (waiting.wallet_address, waiting.queue_position) == ("", 1)
    watch = Watch(bounced, waiting.id, bounced.client)
    assert (await watch.until("ALLOCATION_QUEUED")).queue_position == 1
    await watching_hand_offs(bounced)

    response = await finish(bounced, first.id, opb.ORDER_STATUS_COMPLETED)

    assert response.order.status == opb.ORDER_STATUS_COMPLETED
    assert response.wallet_release == opb.WALLET_RELEASE_RELEASED
    # The allocation sync waits a minute: only the push serves the order before the guard.
    assert (await until_shown(bounced, waiting.id)).wallet_address == address
    assigned = await watch.until(address, within=HANG_GUARD_SECONDS)
    assert (assigned.allocation, assigned.queue_position) == (opb.ALLOCATION_ASSIGNED, 0)
    assert await holder(direct_db, address) == waiting.id

    await finish(bounced, waiting.id, opb.ORDER_STATUS_CANCELLED)
    assert await asyncio.wait_for(watch.ended, HANG_GUARD_SECONDS) == grpc.StatusCode.OK
    assert watch.orders[-1].wallet_release == opb.WALLET_RELEASE_RELEASED
    stats = await bounced.pool.GetPoolStats(
        wpb.GetPoolStatsRequest(network="ETH"), metadata=bounced.operator
    )
    assert (stats.networks[0].available, stats.networks[0].allocated) == (1, 0)

    # The services' queries went through PgBouncer (and the push through their listeners'
    # direct connections: PgBouncer drops notifications, tests/integration/test_pgbouncer.py).
    database = urlsplit(e2e_database_url).path.lstrip("/")
    assert f"login attempt: db={database} " in pgbouncer.logs()


async def test_behind_pgbouncer_many_lifecycles_at_once_share_a_few_server_connections(
    bounced: LocalStack, direct_db: asyncpg.Pool
) -> None:
    await add_wallets(bounced, "ETH", [eth_address() for _ in range(5)])

    async def lifecycle(number: int) -> str:
        order = await create(bounced)
        seen = await until_shown(bounced, order.id)
        final = opb.ORDER_STATUS_COMPLETED if number % 2 else opb.ORDER_STATUS_CANCELLED
        response = await finish(bounced, order.id, final)
        assert response.wallet_release == opb.WALLET_RELEASE_RELEASED
        return seen.wallet_address

    addresses = await asyncio.gather(*(lifecycle(number) for number in range(30)))

    assert all(addresses)
    assert len(set(addresses)) == 5
    assert await check_all(direct_db, api=bounced.api) == []
