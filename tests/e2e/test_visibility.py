"""Who sees which order: a client credential only the orders it created, an operator all."""

import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from exchange.order.v1 import order_service_pb2 as opb
from tests.e2e.conftest import own_stack
from tests.e2e.stack import Stack, bearer

ALICE = bearer("e2e-alice-token")
BOB = bearer("e2e-bob-token")
Metadata = tuple[tuple[str, str], ...]
TWO_CLIENTS = "alice:client:e2e-alice-token,bob:client:e2e-bob-token"


async def create(stack: Stack, who: Metadata, network: str, request_id: str = "") -> opb.Order:
    response = await stack.orders.CreateOrder(
        opb.CreateOrderRequest(network=network, amount="0.5", request_id=request_id),
        metadata=who,
    )
    return response.order


async def listed(stack: Stack, who: Metadata, page_size: int = 0, **filters: str) -> list[str]:
    """The ids ListOrders shows `who`, page after page."""
    ids: list[str] = []
    token = ""
    while True:
        response = await stack.orders.ListOrders(
            opb.ListOrdersRequest(page_size=page_size, page_token=token, **filters),  # type: ignore[arg-type]
            metadata=who,
        )
        ids += [order.id for order in response.orders]
        token = response.next_page_token
        if not token:
            return ids


async def refusal(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


@dataclass(frozen=True)
class Orders:
    """Alice's and Bob's order ids, newest first."""

    alice: list[str]
    bob: list[str]
    alice_eth: str


async def seed(stack: Stack) -> Orders:
    """Orders of two clients, interleaved in time, one request id used by both."""
    alice_eth = await create(stack, ALICE, "ETH", request_id="same-key")
    bob = [await create(stack, BOB, "ETH", request_id="same-key")]
    alice_btc = await create(stack, ALICE, "BTC")
    bob += [await create(stack, BOB, "BTC"), await create(stack, BOB, "ETH")]
    assert bob[0].id != alice_eth.id  # the key is Bob's own
    return Orders([alice_btc.id, alice_eth.id], [o.id for o in reversed(bob)], alice_eth.id)


def get_order(stack: Stack, order_id: str, who: Metadata) -> Awaitable[Any]:
    return stack.orders.GetOrder(opb.GetOrderRequest(order_id=order_id), metadata=who)


def get_history(stack: Stack, order_id: str, who: Metadata) -> Awaitable[Any]:
    return stack.orders.GetOrderHistory(opb.GetOrderHistoryRequest(order_id=order_id), metadata=who)


async def actors(stack: Stack, order_id: str, who: Metadata) -> list[tuple[int, str]]:
    response = await get_history(stack, order_id, who)
    return [(change.to_status, change.actor) for change in response.changes]


@own_stack
@pytest.mark.stack_env(AUTH_TOKENS=TWO_CLIENTS)
async def test_another_clients_order_and_its_history_are_not_found_like_an_unknown_id(
    stack: Stack,
) -> None:
    orders = await seed(stack)
    unknown = str(uuid.uuid4())
    for get in (get_order, get_history):
        never = await refusal(get(stack, unknown, BOB))
        assert never.code() == grpc.StatusCode.NOT_FOUND
        for order_id in orders.alice:
            hidden = await refusal(get(stack, order_id, BOB))
            assert hidden.code() == grpc.StatusCode.NOT_FOUND
            assert hidden.details() == (never.details() or "").replace(unknown, order_id)
            # Nor does the default client credential see it.
            other = await refusal(get(stack, order_id, stack.client))
            assert other.code() == grpc.StatusCode.NOT_FOUND

    # Alice and the operator read it; Alice sees the operator's change in its history,
    # and Bob still does not see the history.
    for who in (ALICE, stack.operator):
        for order_id in orders.alice:
            assert (await get_order(stack, order_id, who)).order.id == order_id
            assert await actors(stack, order_id, who) == [(opb.ORDER_STATUS_PENDING, "alice")]
    for order_id in orders.bob:
        assert (await get_order(stack, order_id, stack.operator)).order.id == order_id
    await stack.orders.UpdateOrderStatus(
        opb.UpdateOrderStatusRequest(
            order_id=orders.alice_eth, status=opb.ORDER_STATUS_CANCELLED, reason="checked"
        ),
        metadata=stack.operator,
    )
    assert await actors(stack, orders.alice_eth, ALICE) == [
        (opb.ORDER_STATUS_PENDING, "alice"),
        (opb.ORDER_STATUS_CANCELLED, "operator"),
    ]
    hidden = await refusal(get_history(stack, orders.alice_eth, BOB))
    assert hidden.code() == grpc.StatusCode.NOT_FOUND


@own_stack
@pytest.mark.stack_env(AUTH_TOKENS=TWO_CLIENTS)
async def test_a_client_lists_only_its_own_orders_and_an_operator_lists_all(
    stack: Stack,
) -> None:
    orders = await seed(stack)
    bob, alice = orders.bob, orders.alice
    assert await listed(stack, BOB) == bob
    assert await listed(stack, BOB, page_size=1) == bob
    assert await listed(stack, BOB, page_size=2, network="ETH") == [bob[0], bob[2]]
    assert await listed(stack, ALICE) == alice
    assert await listed(stack, ALICE, page_size=1, network="ETH") == [orders.alice_eth]
    assert await listed(stack, stack.client) == []
    everybody = [bob[0], bob[1], alice[0], bob[2], alice[1]]
    assert await listed(stack, stack.operator, page_size=2) == everybody
