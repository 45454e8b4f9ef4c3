"""PostgreSQL failover as both services live it: the database turns read-only under them,
and the primary dies under load while a synchronous standby takes over
(`make chaos CHAOS_MODE=failover` repeats the latter at random moments)."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from exchange.order.v1 import order_service_pb2 as opb
from tests.chaos import log_problems
from tests.chaos.failover import RECOVERY_BOUND_SECONDS, run_failover_chaos
from tests.e2e.conftest import local_only, own_stack
from tests.e2e.stack import OwnStack
from tests.e2e.test_release_flow import add_wallets, create, eth_address
from tests.waiting import HANG_GUARD_SECONDS

SERVING = health_pb2.HealthCheckResponse.SERVING


async def health(stack: OwnStack) -> list[int]:
    statuses = []
    for channel in (stack.order_channel, stack.pool_channel):
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        statuses.append(answer.status)
    return statuses


async def codes_of_writes(stack: OwnStack, order_id: str) -> set[grpc.StatusCode]:
    codes = set()
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: create(stack),
        lambda: stack.orders.UpdateOrderStatus(
            opb.UpdateOrderStatusRequest(order_id=order_id, status=opb.ORDER_STATUS_PROCESSING),
            metadata=stack.operator,
        ),
        lambda: add_wallets(stack, "ETH", [eth_address()]),
    ]
    for call in calls:
        try:
            await call()
            codes.add(grpc.StatusCode.OK)
        except grpc.aio.AioRpcError as exc:
            codes.add(exc.code())
    return codes


@own_stack
async def test_a_database_turned_read_only_answers_unavailable_until_the_services_reconnect(
    stack: OwnStack, e2e_database_url: str
) -> None:
    await add_wallets(stack, "ETH", [eth_address()])
    order = await create(stack)
    name = urlsplit(e2e_database_url).path.lstrip("/")
    admin = await asyncpg.connect(e2e_database_url)
    try:
        # As a standby would: the services' sessions are cut, and the new ones refuse writes.
        await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        deadline = time.monotonic() + HANG_GUARD_SECONDS
        while await health(stack) != [health_pb2.HealthCheckResponse.NOT_SERVING] * 2:
            assert time.monotonic() < deadline, "health stayed SERVING on a read-only database"
            await asyncio.sleep(0.1)
        for _ in range(3):
            assert await codes_of_writes(stack, order.id) == {grpc.StatusCode.UNAVAILABLE}

        await admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        deadline = time.monotonic() + HANG_GUARD_SECONDS
        while await health(stack) != [SERVING, SERVING]:
            assert time.monotonic() < deadline, "the services did not reconnect"
            await asyncio.sleep(0.1)
        assert await codes_of_writes(stack, order.id) == {grpc.StatusCode.OK}
    finally:
        await admin.close()
    for process in (stack.order_process, stack.pool_process):
        assert log_problems(process.logs()) == []


@local_only("a primary and a standby of its own (tests/chaos/failover), promoted by pg_ctl")
@pytest.mark.timeout(240)
async def test_after_the_primary_dies_mid_load_and_its_standby_is_promoted_nothing_is_lost(
    tmp_path: Path,
) -> None:
    report = await run_failover_chaos(failovers=1, log_dir=tmp_path)
    print(report.render())
    [failover] = report.failovers
    assert set(failover.not_serving_after) == {"order_service", "wallet_pool_service"}
    assert set(failover.codes_before_promotion) <= {"OK", "UNAVAILABLE"}
    assert failover.codes_before_promotion["UNAVAILABLE"] > 0
    assert failover.recovery_seconds is not None
    assert failover.recovery_seconds <= RECOVERY_BOUND_SECONDS, report.render()
    assert failover.missing_after_promotion == []
    assert failover.in_flight["lost"] == 0
    assert failover.in_flight["acknowledged"] + failover.in_flight["failed"] > 0
    # The feed's consumer read through the failover: what it received before is what the
    # promoted primary has under those sequences, and it got the whole log at the end.
    assert failover.feed_checked > 0 and failover.feed_mismatches == []
    assert report.feed.events >= failover.feed_checked
    assert report.violations == [], report.render()
    assert report.log_problems == [], report.render()
