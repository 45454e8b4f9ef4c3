"""End to end: a wallet pool that hangs (SIGSTOP: connections are accepted, nothing is
answered) never makes the order service fail a call it has committed, nor wait for the pool
to answer: every call answers while the pool is still frozen; a SIGTERM meanwhile answers
every call in flight with its real outcome. How long the answers take is a speed claim
(WALLET_POOL_TIMEOUT_SECONDS plus the order service's own work), not asserted here."""

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator, Awaitable

import asyncpg
import grpc
import pytest

from exchange.order.v1 import order_service_pb2 as opb
from tests.e2e.conftest import own_stack
from tests.e2e.stack import OwnStack
from tests.e2e.test_release_flow import add_wallets, create, eth_address, move
from tests.invariants import check_all
from tests.waiting import until

pytestmark = own_stack
POOL_DEADLINE = 2.0


@contextlib.asynccontextmanager
async def frozen(stack: OwnStack) -> AsyncIterator[None]:
    # SIGSTOP for a process, `docker pause` for a container: accepted, never answered.
    await stack.pool_process.freeze()
    try:
        yield
    finally:
        await stack.pool_process.thaw()


async def timed(call: Awaitable[object]) -> tuple[float, object]:
    started = time.monotonic()
    try:
        outcome = await call
    except grpc.aio.AioRpcError as error:
        outcome = error
    return time.monotonic() - started, outcome


async def processing_orders(stack: OwnStack, count: int) -> list[str]:
    await add_wallets(stack, "ETH", [eth_address() for _ in range(count)])
    orders = [await create(stack) for _ in range(count)]
    for order in orders:
        await move(stack, order.id, opb.ORDER_STATUS_PROCESSING)
    return [order.id for order in orders]


def complete(stack: OwnStack, order_id: str) -> Awaitable[opb.UpdateOrderStatusResponse]:
    return move(stack, order_id, opb.ORDER_STATUS_COMPLETED)


async def committed(db: asyncpg.Pool, *, created: int, completed: int) -> None:
    """Returns once the database holds `created` orders, `completed` of them COMPLETED."""

    async def counts() -> bool:
        row = await db.fetchrow(
            "SELECT count(*) AS orders, count(*) FILTER (WHERE status = 'COMPLETED') AS done"
            " FROM orders.orders"
        )
        assert row is not None
        return (row["orders"], row["done"]) == (created, completed)

    await until(counts, f"{created} orders committed, {completed} of them COMPLETED")


def judge(outcomes: list[object], kinds: list[str]) -> None:
    """Every call answered OK with what it committed: a created order without a wallet yet,
    or COMPLETED with its release pending."""
    for kind, outcome in zip(kinds, outcomes, strict=True):
        assert not isinstance(outcome, grpc.aio.AioRpcError), f"{kind}: {outcome}"
        if kind == "create":
            assert isinstance(outcome, opb.Order) and outcome.status == opb.ORDER_STATUS_PENDING
        else:
            assert isinstance(outcome, opb.UpdateOrderStatusResponse)
            assert outcome.order.status == opb.ORDER_STATUS_COMPLETED
            assert outcome.wallet_release == opb.WALLET_RELEASE_PENDING


@pytest.mark.stack_env(WALLET_POOL_TIMEOUT_SECONDS=str(POOL_DEADLINE))
async def test_with_the_pool_hung_40_calls_at_once_answer_what_they_committed(
    stack: OwnStack, db: asyncpg.Pool
) -> None:
    completing = await processing_orders(stack, 20)
    async with frozen(stack):
        calls = [create(stack) for _ in range(20)] + [complete(stack, i) for i in completing]
        timings = await asyncio.gather(*(timed(call) for call in calls))
        # Every call answered before the pool could answer anything: none waited for it.
        judge([outcome for _, outcome in timings], ["create"] * 20 + ["complete"] * 20)
    # Once the pool answers again, the releases are delivered and the orders served.
    assert await check_all(db, api=stack.api) == []


@pytest.mark.stack_env(
    # Longer than the grace period: only the cut-off at stop lets the calls answer in time.
    WALLET_POOL_TIMEOUT_SECONDS="5",
    SHUTDOWN_DRAIN_SECONDS="0.3",
    SHUTDOWN_GRACE_SECONDS="2",
)
async def test_a_sigterm_while_the_pool_hangs_answers_every_call_in_flight_with_its_outcome(
    stack: OwnStack, db: asyncpg.Pool
) -> None:
    completing = await processing_orders(stack, 25)
    async with frozen(stack):
        calls = [create(stack) for _ in range(25)] + [complete(stack, i) for i in completing]
        in_flight = [asyncio.ensure_future(timed(call)) for call in calls]
        # Every call has committed its write and waits on the frozen pool: stop now.
        await committed(db, created=50, completed=25)
        assert await stack.order_process.stop(signal.SIGTERM) == 0
        outcomes = [outcome for _, outcome in await asyncio.gather(*in_flight)]
    judge(outcomes, ["create"] * 25 + ["complete"] * 25)
    await stack.order_process.start()
    assert await check_all(db) == []


# The pool's deadline is far beyond the caller's: only the caller's own deadline can end the
# wait on the pool in time (a generous one: this is not a test of speed).
@pytest.mark.stack_env(WALLET_POOL_TIMEOUT_SECONDS="60")
async def test_a_caller_deadline_shorter_than_the_pools_still_gets_the_committed_answer(
    stack: OwnStack,
) -> None:
    [order_id] = await processing_orders(stack, 1)
    async with frozen(stack):
        created = await stack.orders.CreateOrder(
            opb.CreateOrderRequest(network="ETH", amount="1"), metadata=stack.client, timeout=5
        )
        completed = await stack.orders.UpdateOrderStatus(
            opb.UpdateOrderStatusRequest(order_id=order_id, status=opb.ORDER_STATUS_COMPLETED),
            metadata=stack.operator,
            timeout=5,
        )
    judge([created.order, completed], ["create", "complete"])
