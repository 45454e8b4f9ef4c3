"""End to end: the payment window starts when the order is shown its address, and an order
with money on it is never expired (it waits for the operator), while dust does not hold one."""

import asyncio
import secrets
import time
from datetime import UTC, datetime

import asyncpg
import pytest

from exchange.order.v1 import order_service_pb2 as opb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from shared.timestamps import from_timestamp, to_timestamp
from tests.e2e.conftest import own_stack
from tests.e2e.stack import Stack
from tests.e2e.test_deposits import eventually, report
from tests.e2e.test_release_flow import add_wallets, create, eth_address
from tests.invariants import payment_status_is_the_function_of_the_recorded_deposits

TTL = 4.0
WINDOW = pytest.mark.stack_env(
    ORDER_TTL_SECONDS=str(TTL), EXPIRY_CHECK_SECONDS="0.1", DEPOSIT_SYNC_SECONDS="0.1"
)


def coin(address: str, amount: str, height: int, confirmations: int = 1) -> wpb.ChainDeposit:
    return wpb.ChainDeposit(
        address=address,
        txid="0x" + secrets.token_hex(32),
        index=0,
        amount=amount,
        block_height=height,
        block_time=to_timestamp(datetime.now(UTC)),
        confirmations=confirmations,
    )


async def get(stack: Stack, order_id: str) -> opb.Order:
    response = await stack.orders.GetOrder(
        opb.GetOrderRequest(order_id=order_id), metadata=stack.client
    )
    return response.order


@own_stack
@WINDOW
async def test_an_order_with_a_payment_outlives_its_window_and_one_with_dust_does_not(
    stack: Stack, db: asyncpg.Pool
) -> None:
    paid_address, dust_address, idle_address = eth_address(), eth_address(), eth_address()
    await add_wallets(stack, "ETH", [paid_address, dust_address, idle_address])
    created = [await create(stack, amount="1") for _ in range(3)]
    by_address = {o.wallet_address: o.id for o in created}
    # Paid in full one second after creation, still confirming; one wei to the other.
    await report(
        stack,
        5,
        coin(paid_address, "1", 5),
        coin(dust_address, "0.000000000000000001", 5),
    )
    paid_id, dusted_id, idle_id = (
        by_address[paid_address],
        by_address[dust_address],
        by_address[idle_address],
    )

    async def expired() -> bool:
        orders = [await get(stack, order_id) for order_id in (dusted_id, idle_id)]
        return all(o.status == opb.ORDER_STATUS_CANCELLED for o in orders)

    assert await eventually(expired, within=TTL + 10)
    kept = await get(stack, paid_id)
    assert kept.status == opb.ORDER_STATUS_PENDING
    assert (kept.payment_status, kept.received_pending) == (opb.PAYMENT_STATUS_UNPAID, "1")
    # Its window is over; it waits for the operator, with its money shown.
    assert from_timestamp(kept.payment_window_end_time) < datetime.now(UTC)
    history = await stack.orders.GetOrderHistory(
        opb.GetOrderHistoryRequest(order_id=dusted_id), metadata=stack.client
    )
    assert [(c.actor, c.reason) for c in history.changes][-1] == ("system", "expired")
    async with db.acquire() as conn:
        assert await payment_status_is_the_function_of_the_recorded_deposits(conn) == []


@own_stack
@WINDOW
async def test_a_queued_orders_window_starts_when_it_is_shown_its_address(stack: Stack) -> None:
    address = eth_address()
    await add_wallets(stack, "ETH", [address])
    holder = await create(stack)
    await asyncio.sleep(TTL / 2)
    queued = await create(stack)
    assert (holder.wallet_address, queued.queue_position) == (address, 1)

    # The holder's window ends unpaid; its wallet goes to the queued order, which by then
    # has waited half a window in the queue (a queued order is cancelled only once it has
    # waited a whole window without an address).
    async def assigned() -> opb.Order | None:
        order = await get(stack, queued.id)
        return order if order.wallet_address else None

    shown = await eventually(assigned, within=TTL + 10)
    seen_at = time.time()
    assert shown is not None and shown.wallet_address == address
    assert shown.status == opb.ORDER_STATUS_PENDING
    created = from_timestamp(shown.create_time).timestamp()
    window_end = from_timestamp(shown.payment_window_end_time).timestamp()
    # A whole window from when it was shown its address, not from its creation.
    assert window_end - created >= TTL + (seen_at - created - TTL) * 0
    assert window_end >= seen_at - 0.5 and window_end - created > TTL
    # And it is expired once that window is over, unpaid.
    await asyncio.sleep(max(0.0, window_end - time.time()))

    async def cancelled() -> bool:
        return (await get(stack, queued.id)).status == opb.ORDER_STATUS_CANCELLED

    assert await eventually(cancelled, within=10)
