"""A call that meets the next release's migration: during a rollout the new release migrates
the database while this one serves, and a statement this release prepared before may no
longer match the table it reads. Inside a transaction the driver cannot prepare it again."""

import asyncpg
import grpc
import pytest

from exchange.order.v1 import order_service_pb2 as opb
from tests.e2e.conftest import own_stack
from tests.e2e.stack import Stack


@own_stack
# Two connections, one of them the event listener's: the calls run on the other one.
@pytest.mark.stack_env(ORDER_DB_POOL_SIZE="2")
async def test_a_snapshot_read_under_a_new_column_is_answered_unavailable_then_served(
    stack: Stack, db: asyncpg.Pool
) -> None:
    created = await stack.orders.CreateOrder(
        opb.CreateOrderRequest(network="ETH", amount="1"), metadata=stack.client
    )

    async def get() -> opb.GetOrderResponse:
        request = opb.GetOrderRequest(order_id=created.order.id)
        return await stack.orders.GetOrder(request, metadata=stack.client, timeout=10)

    await get()
    # GetOrder reads the order, then its deposits, in one snapshot: the second statement fails.
    await db.execute("ALTER TABLE orders.deposits ADD COLUMN added_by_the_next_release integer")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await get()
    assert (refused.value.code(), refused.value.details()) == (
        grpc.StatusCode.UNAVAILABLE,
        "the database was upgraded during the call; retry",
    )
    assert (await get()).order.id == created.order.id
