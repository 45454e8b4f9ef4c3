"""End to end: an order's payment status from the deposits a watcher reports (split
payments, confirmations still to come, a withdrawal fee within the tolerance, an overpayment),
with one PAYMENT_STATUS_CHANGED event per change, and the invariant checked on the
database."""

import secrets
from datetime import UTC, datetime

import asyncpg
import grpc
import pytest

from exchange.order.v1 import order_service_pb2 as opb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from shared.timestamps import to_timestamp
from tests.e2e.conftest import own_stack
from tests.e2e.stack import Stack
from tests.e2e.test_deposits import eventually, report
from tests.e2e.test_release_flow import add_wallets, create, eth_address, finish, move
from tests.invariants import (
    deposits_have_one_disposition_and_only_counted_ones_hold_or_count,
    payment_status_is_the_function_of_the_recorded_deposits,
)

USDT_ETH = "0xdac17f958d2ee523a2206206994597c13d831ec7"


def usdt(address: str, amount: str, height: int, confirmations: int = 64) -> wpb.ChainDeposit:
    return wpb.ChainDeposit(
        address=address,
        txid="0x" + secrets.token_hex(32),
        index=0,
        amount=amount,
        block_height=height,
        block_time=to_timestamp(datetime.now(UTC)),
        confirmations=confirmations,
        token_contract=USDT_ETH,
        kind=wpb.DEPOSIT_KIND_TOKEN,
    )


async def payment(stack: Stack, order_id: str, deposits: int) -> opb.Order | None:
    """The order once it shows `deposits` deposits (None until then)."""
    response = await stack.orders.GetOrder(
        opb.GetOrderRequest(order_id=order_id), metadata=stack.client
    )
    return response.order if len(response.deposits) == deposits else None


@own_stack
@pytest.mark.stack_env(PAYMENT_UNDERPAY_TOLERANCE="0.1%, ETH:USDT:1", DEPOSIT_SYNC_SECONDS="0.1")
async def test_a_usdt_order_goes_partial_paid_and_overpaid_with_one_event_per_change(
    stack: Stack, db: asyncpg.Pool
) -> None:
    address = eth_address()
    await add_wallets(stack, "ETH", [address])
    created = await stack.orders.CreateOrder(
        opb.CreateOrderRequest(network="ETH", amount="100", asset="USDT"), metadata=stack.client
    )
    order = created.order
    assert (order.payment_status, order.received_confirmed) == (opb.PAYMENT_STATUS_UNPAID, "0")

    steps = [
        # A first part, confirmed: partial.
        (usdt(address, "60", 10), opb.PAYMENT_STATUS_PARTIAL, "60", "0"),
        # The rest, 1 USDT short (the customer's exchange took its fee), still confirming.
        (usdt(address, "39", 11, confirmations=3), opb.PAYMENT_STATUS_PARTIAL, "60", "39"),
        # Another 39 confirmed: 99 of 100 is within the absolute tolerance of 1.
        (usdt(address, "39", 12), opb.PAYMENT_STATUS_PAID, "99", "39"),
        # More than asked: overpaid, once.
        (usdt(address, "5", 13), opb.PAYMENT_STATUS_OVERPAID, "104", "39"),
        (usdt(address, "1", 14), opb.PAYMENT_STATUS_OVERPAID, "105", "39"),
    ]
    for shown, (deposit, status, confirmed, pending) in enumerate(steps, start=1):
        await report(stack, deposit.block_height, deposit)
        now = await eventually(lambda n=shown: payment(stack, order.id, n))  # type: ignore[misc]
        assert now is not None
        assert (now.payment_status, now.received_confirmed, now.received_pending) == (
            status,
            confirmed,
            pending,
        )

    events = await stack.orders.ListOrderEvents(
        opb.ListOrderEventsRequest(
            order_id=order.id, types=[opb.ORDER_EVENT_TYPE_PAYMENT_STATUS_CHANGED]
        ),
        metadata=stack.operator,
    )
    assert [
        (e.from_payment_status, e.payment_status, e.received_confirmed) for e in events.events
    ] == [
        (opb.PAYMENT_STATUS_UNPAID, opb.PAYMENT_STATUS_PARTIAL, "60"),
        (opb.PAYMENT_STATUS_PARTIAL, opb.PAYMENT_STATUS_PAID, "99"),
        (opb.PAYMENT_STATUS_PAID, opb.PAYMENT_STATUS_OVERPAID, "104"),
    ]
    async with db.acquire() as conn:
        assert await payment_status_is_the_function_of_the_recorded_deposits(conn) == []
        assert await deposits_have_one_disposition_and_only_counted_ones_hold_or_count(conn) == []


@own_stack
async def test_a_coin_payment_to_a_usdt_order_leaves_it_unpaid(
    stack: Stack, db: asyncpg.Pool
) -> None:
    address = eth_address()
    await add_wallets(stack, "ETH", [address])
    created = await stack.orders.CreateOrder(
        opb.CreateOrderRequest(network="ETH", amount="100", asset="USDT"), metadata=stack.client
    )
    coin = wpb.ChainDeposit(
        address=address,
        txid="0x" + secrets.token_hex(32),
        index=0,
        amount="100",
        block_height=10,
        block_time=to_timestamp(datetime.now(UTC)),
        confirmations=64,
    )

    await report(stack, 10, coin)

    now = await eventually(lambda: payment(stack, created.order.id, 1))
    assert now is not None and now.payment_status == opb.PAYMENT_STATUS_UNPAID
    async with db.acquire() as conn:
        assert await payment_status_is_the_function_of_the_recorded_deposits(conn) == []


@own_stack
@pytest.mark.stack_env(DEPOSIT_SYNC_SECONDS="0.1")
async def test_confirmations_and_a_retraction_move_the_payment_and_the_order_shows_them(
    stack: Stack, db: asyncpg.Pool
) -> None:
    address = eth_address()
    await add_wallets(stack, "ETH", [address])
    created = await stack.orders.CreateOrder(
        opb.CreateOrderRequest(network="ETH", amount="100", asset="USDT"), metadata=stack.client
    )
    order_id = created.order.id
    paid = usdt(address, "100", 10, confirmations=3)

    async def shows(status: int, confirmed: str, pending: str) -> opb.Order | None:
        order = await payment(stack, order_id, 1)
        wanted = (status, confirmed, pending)
        if (
            order is not None
            and (
                order.payment_status,
                order.received_confirmed,
                order.received_pending,
            )
            == wanted
        ):
            return order
        return None

    await report(stack, 10, paid)
    assert await eventually(lambda: shows(opb.PAYMENT_STATUS_UNPAID, "0", "100"))
    # Reported again, 64 blocks deep: confirmed, paid.
    paid.confirmations = 64
    assert (await report(stack, 73, paid)).updated == 1
    assert await eventually(lambda: shows(opb.PAYMENT_STATUS_PAID, "100", "0"))
    # A reorganisation drops its block: reverted, and the order is unpaid again.
    retraction = wpb.Retraction(
        txid=paid.txid,
        kind=wpb.DEPOSIT_KIND_TOKEN,
        index=0,
        reason=wpb.RETRACTION_REASON_ORPHANED,
    )
    response = await stack.pool.ReportDeposits(
        wpb.ReportDepositsRequest(network="ETH", scanned_height=74, reverted=[retraction]),
        metadata=stack.watcher,
    )
    assert response.reverted == 1
    assert await eventually(lambda: shows(opb.PAYMENT_STATUS_UNPAID, "0", "0"))
    [deposit] = (
        await stack.orders.GetOrder(opb.GetOrderRequest(order_id=order_id), metadata=stack.client)
    ).deposits
    assert deposit.status == opb.DEPOSIT_STATUS_REVERTED

    events = await stack.orders.ListOrderEvents(
        opb.ListOrderEventsRequest(order_id=order_id), metadata=stack.operator
    )
    assert [
        (e.type, e.payment_status)
        for e in events.events
        if e.type
        in (
            opb.ORDER_EVENT_TYPE_DEPOSIT_RECEIVED,
            opb.ORDER_EVENT_TYPE_DEPOSIT_CONFIRMED,
            opb.ORDER_EVENT_TYPE_DEPOSIT_REVERTED,
            opb.ORDER_EVENT_TYPE_PAYMENT_STATUS_CHANGED,
        )
    ] == [
        (opb.ORDER_EVENT_TYPE_DEPOSIT_RECEIVED, opb.PAYMENT_STATUS_UNSPECIFIED),
        (opb.ORDER_EVENT_TYPE_DEPOSIT_CONFIRMED, opb.PAYMENT_STATUS_UNSPECIFIED),
        (opb.ORDER_EVENT_TYPE_PAYMENT_STATUS_CHANGED, opb.PAYMENT_STATUS_PAID),
        (opb.ORDER_EVENT_TYPE_DEPOSIT_REVERTED, opb.PAYMENT_STATUS_UNSPECIFIED),
        (opb.ORDER_EVENT_TYPE_PAYMENT_STATUS_CHANGED, opb.PAYMENT_STATUS_UNPAID),
    ]
    async with db.acquire() as conn:
        assert await payment_status_is_the_function_of_the_recorded_deposits(conn) == []


@own_stack
@pytest.mark.stack_env(COMPLETE_REQUIRES_PAYMENT="true")
async def test_completing_an_unpaid_order_needs_a_reason_when_the_setting_asks_for_payment(
    stack: Stack,
) -> None:
    await add_wallets(stack, "ETH", [eth_address()])
    created = await stack.orders.CreateOrder(
        opb.CreateOrderRequest(network="ETH", amount="100", asset="USDT"), metadata=stack.client
    )
    order_id = created.order.id
    await move(stack, order_id, opb.ORDER_STATUS_PROCESSING)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await move(stack, order_id, opb.ORDER_STATUS_COMPLETED)
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "UNPAID" in (refused.value.details() or "")

    done = await move(stack, order_id, opb.ORDER_STATUS_COMPLETED, "paid in cash at the desk")
    assert done.order.status == opb.ORDER_STATUS_COMPLETED
    history = await stack.orders.GetOrderHistory(
        opb.GetOrderHistoryRequest(order_id=order_id), metadata=stack.client
    )
    last = history.changes[-1]
    assert (last.to_status, last.reason, last.payment_status) == (
        opb.ORDER_STATUS_COMPLETED,
        "paid in cash at the desk",
        opb.PAYMENT_STATUS_UNPAID,
    )


@own_stack
async def test_by_default_an_unpaid_order_completes_and_its_history_says_it_was_unpaid(
    stack: Stack,
) -> None:
    await add_wallets(stack, "ETH", [eth_address()])
    order = await create(stack)

    await finish(stack, order.id, opb.ORDER_STATUS_COMPLETED)

    history = await stack.orders.GetOrderHistory(
        opb.GetOrderHistoryRequest(order_id=order.id), metadata=stack.client
    )
    assert [c.payment_status for c in history.changes] == [
        opb.PAYMENT_STATUS_UNPAID,
        opb.PAYMENT_STATUS_UNPAID,
        opb.PAYMENT_STATUS_UNPAID,
    ]
