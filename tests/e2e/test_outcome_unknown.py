"""A write whose answer the database connection lost: the service cannot know whether it
committed, and says so (UNAVAILABLE, "outcome unknown", ErrorInfo OUTCOME_UNKNOWN); a
retry that is safe finds what the lost write did."""

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2

from exchange.order.v1 import order_service_pb2 as opb
from tests.databases import DatabaseFactory
from tests.e2e.conftest import local_only
from tests.e2e.proxy import DatabaseProxy
from tests.e2e.stack import LocalStack
from tests.e2e.test_release_flow import add_wallets, create, eth_address, move, status_details

pytestmark = local_only(
    "cuts the database through a TCP proxy on the host's loopback, out of the containers' reach"
)


@pytest.fixture
async def proxied(
    databases: DatabaseFactory, tmp_path: Path
) -> AsyncIterator[tuple[LocalStack, DatabaseProxy, asyncpg.Connection]]:
    """Both services reach the database through a proxy; the test reads it directly."""
    direct_url = await databases.create(migrated=False)
    proxy = DatabaseProxy(databases.server_url)
    await proxy.start()
    stack = await LocalStack.start(proxy.url_for(urlsplit(direct_url).path.lstrip("/")), tmp_path)
    db = await asyncpg.connect(direct_url)
    try:
        yield stack, proxy, db
    finally:
        await db.close()
        await stack.close()
        await proxy.cut()


def outcome_unknown(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo of an answer that says a write's outcome is unknown."""
    assert error.code() == grpc.StatusCode.UNAVAILABLE, error
    assert (error.details() or "").startswith("outcome unknown: "), error.details()
    info = error_details_pb2.ErrorInfo()
    assert [d for d in status_details(error).details if d.Unpack(info)], error
    assert (info.reason, info.domain) == ("OUTCOME_UNKNOWN", "exchange.order.v1")
    return info


async def statuses(db: asyncpg.Connection, order_id: str) -> tuple[str, list[str]]:
    """The order's status and its history's statuses, as the database has them."""
    key = uuid.UUID(order_id)
    status = await db.fetchval("SELECT status FROM orders.orders WHERE id = $1", key)
    history = await db.fetch(
        "SELECT to_status FROM orders.status_history WHERE order_id = $1 ORDER BY id", key
    )
    return status, [row["to_status"] for row in history]


async def test_a_status_change_whose_answer_was_lost_says_its_outcome_is_unknown(
    proxied: tuple[LocalStack, DatabaseProxy, asyncpg.Connection],
) -> None:
    stack, proxy, db = proxied
    await add_wallets(stack, "ETH", [eth_address()])
    order = await create(stack)
    await move(stack, order.id, opb.ORDER_STATUS_PROCESSING)

    # The change is one statement; asyncpg sends the order id as 16 bytes in its Bind.
    proxy.lose_answer_to(uuid.UUID(order.id).bytes)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await move(stack, order.id, opb.ORDER_STATUS_COMPLETED)
    assert proxy.answers_lost == 1
    info = outcome_unknown(raised.value)
    assert info.metadata["order_id"] == order.id
    assert "Retrying the same status is safe" in (raised.value.details() or "")
    applied = ("COMPLETED", ["PENDING", "PROCESSING", "COMPLETED"])
    assert await statuses(db, order.id) == applied

    again = await move(stack, order.id, opb.ORDER_STATUS_COMPLETED)
    assert again.order.status == opb.ORDER_STATUS_COMPLETED
    assert await statuses(db, order.id) == applied


async def test_a_creation_whose_answer_was_lost_says_its_outcome_is_unknown(
    proxied: tuple[LocalStack, DatabaseProxy, asyncpg.Connection],
) -> None:
    stack, proxy, db = proxied
    request = opb.CreateOrderRequest(network="ETH", amount="0.5", request_id=uuid.uuid4().hex)

    # asyncpg sends the request id as its UTF-8 bytes in the Bind of the insert.
    proxy.lose_answer_to(request.request_id.encode())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stack.orders.CreateOrder(request, metadata=stack.client)
    assert proxy.answers_lost == 1
    info = outcome_unknown(raised.value)
    assert "Retrying with the same request_id is safe" in (raised.value.details() or "")
    assert info.metadata["request_id"] == request.request_id
    assert await statuses(db, info.metadata["order_id"]) == ("PENDING", ["PENDING"])

    again = await stack.orders.CreateOrder(request, metadata=stack.client)
    assert again.order.id == info.metadata["order_id"]
    assert await statuses(db, again.order.id) == ("PENDING", ["PENDING"])


async def test_bookkeeping_lost_after_a_committed_change_still_answers_what_was_committed(
    proxied: tuple[LocalStack, DatabaseProxy, asyncpg.Connection],
) -> None:
    stack, proxy, db = proxied
    address = eth_address()
    await add_wallets(stack, "ETH", [address])
    # The copy of the wallet onto the new order is the one statement that carries its address.
    proxy.lose_answer_to(address.encode())
    created = await create(stack)
    # The fault fired on that statement: without it this test would prove nothing.
    assert (proxy.answers_lost, proxy.armed) == (1, False)
    assert created.status == opb.ORDER_STATUS_PENDING
    await move(stack, created.id, opb.ORDER_STATUS_PROCESSING)

    # After the change itself, the next statement with the order id (as bytes: the sequencer's
    # announcements carry it as text) records the delivery.
    proxy.lose_answer_to(uuid.UUID(created.id).bytes, skip=1)
    done = await move(stack, created.id, opb.ORDER_STATUS_COMPLETED)
    assert (proxy.answers_lost, proxy.armed) == (2, False)
    assert done.order.status == opb.ORDER_STATUS_COMPLETED
    assert done.wallet_release == opb.WALLET_RELEASE_RELEASED
    assert await statuses(db, created.id) == (
        "COMPLETED",
        ["PENDING", "PROCESSING", "COMPLETED"],
    )
