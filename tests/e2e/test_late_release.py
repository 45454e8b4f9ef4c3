"""End to end: the window between an order becoming final and its release reaching the pool.
A deposit reported then is on time in the pool's eyes until the release arrives; the pool is
the one judge of lateness, so the order service neither counts it meanwhile nor judges it
itself: the release makes it late (with a new change number the order service follows), and
the order's payment is evaluated only once that verdict is in. One paid before the final time
but reported in the window counts, once."""

from datetime import UTC, datetime

import asyncpg
import pytest

from exchange.order.v1 import order_service_pb2 as opb
from tests.e2e.conftest import own_stack
from tests.e2e.stack import Stack
from tests.e2e.test_deposits import chain_deposit, eventually, report
from tests.e2e.test_release_flow import add_wallets, create, eth_address, finish, until_shown
from tests.invariants import (
    deposits_are_recorded_once_and_attributed,
    payment_status_is_the_function_of_the_recorded_deposits,
)

# The pool cannot take these orders' releases (a fault of the test's making: any release of
# them fails, and is retried by the order service), while reports and the deposit feed work.
_BLOCK = (
    "ALTER TABLE wallet_pool.released_orders ADD CONSTRAINT e2e_release_blocked"
    " CHECK (order_id <> ALL ($ids)) NOT VALID"
)
_UNBLOCK = "ALTER TABLE wallet_pool.released_orders DROP CONSTRAINT e2e_release_blocked"


async def shown(stack: Stack, order_id: str) -> opb.GetOrderResponse:
    response: opb.GetOrderResponse = await stack.orders.GetOrder(
        opb.GetOrderRequest(order_id=order_id), metadata=stack.operator
    )
    return response


async def payment_events(stack: Stack, order_id: str) -> list[tuple[int, int]]:
    events = await stack.orders.ListOrderEvents(
        opb.ListOrderEventsRequest(
            order_id=order_id, types=[opb.ORDER_EVENT_TYPE_PAYMENT_STATUS_CHANGED]
        ),
        metadata=stack.operator,
    )
    return [(e.from_payment_status, e.payment_status) for e in events.events]


@own_stack
@pytest.mark.stack_env(DEPOSIT_SYNC_SECONDS="0.1", RELEASE_RETRY_SECONDS="0.1")
async def test_a_deposit_in_the_window_before_the_release_is_judged_once_by_the_pool(
    stack: Stack, db: asyncpg.Pool
) -> None:
    late_address, counted_address = eth_address(), eth_address()
    await add_wallets(stack, "ETH", [late_address, counted_address])
    late_order = await until_shown(stack, (await create(stack, amount="0.25")).id)
    counted_order = await until_shown(stack, (await create(stack, amount="0.25")).id)
    assert {late_order.wallet_address, counted_order.wallet_address} == {
        late_address,
        counted_address,
    }
    ids = ", ".join(f"'{o.id}'::uuid" for o in (late_order, counted_order))
    await db.execute(_BLOCK.replace("$ids", f"ARRAY[{ids}]"))
    paid_in_time = datetime.now(UTC)
    for order in (late_order, counted_order):
        outcome = await finish(stack, order.id, opb.ORDER_STATUS_CANCELLED)
        assert outcome.wallet_release == opb.WALLET_RELEASE_PENDING
    # Reported after both became final, their releases not in the pool: one paid after the
    # final time, one before it.
    paid_late = chain_deposit(late_order.wallet_address, amount="0.25", height=10)
    paid_before = chain_deposit(
        counted_order.wallet_address, amount="0.25", height=10, time=paid_in_time
    )
    for deposit in (paid_late, paid_before):
        deposit.confirmations = 64  # ETH's required confirmations: confirmed at once
    answer = await report(stack, 10, paid_late, paid_before)
    assert (answer.recorded, answer.late) == (2, 0)

    # The order service copies both (on time, as the pool says so far) and evaluates neither
    # payment: their releases are owed.
    for order in (late_order, counted_order):
        copied = await eventually(lambda o=order: _with_deposits(stack, o.id, 1))  # type: ignore[misc]
        assert copied is not None, f"order {order.id} never showed its deposit"
        assert copied.order.payment_status == opb.PAYMENT_STATUS_UNPAID
        assert copied.order.wallet_release == opb.WALLET_RELEASE_PENDING

    await db.execute(_UNBLOCK)
    for order in (late_order, counted_order):
        settled = await eventually(lambda o=order: _settled(db, o.id))  # type: ignore[misc]
        assert settled, f"order {order.id}: release not delivered or payment not settled"

    late_now = await shown(stack, late_order.id)
    assert [d.late for d in late_now.deposits] == [True]
    assert late_now.order.payment_status == opb.PAYMENT_STATUS_UNPAID
    assert await payment_events(stack, late_order.id) == []
    counted_now = await shown(stack, counted_order.id)
    assert [d.late for d in counted_now.deposits] == [False]
    assert counted_now.order.payment_status == opb.PAYMENT_STATUS_PAID
    assert await payment_events(stack, counted_order.id) == [
        (opb.PAYMENT_STATUS_UNPAID, opb.PAYMENT_STATUS_PAID)
    ]
    pool_verdicts = {
        r["txid"]: r["late"]
        for r in await db.fetch(
            "SELECT txid, released_at IS NOT NULL AS late FROM wallet_pool.deposits"
        )
    }
    assert pool_verdicts == {paid_late.txid: True, paid_before.txid: False}
    async with db.acquire() as conn:
        assert await deposits_are_recorded_once_and_attributed(conn, {}) == []
        assert await payment_status_is_the_function_of_the_recorded_deposits(conn) == []


async def _with_deposits(stack: Stack, order_id: str, count: int) -> opb.GetOrderResponse | None:
    response = await shown(stack, order_id)
    return response if len(response.deposits) == count else None


async def _settled(db: asyncpg.Pool, order_id: str) -> bool:
    """Released, and its payment evaluated after the release's deposit changes."""
    settled: bool = await db.fetchval(
        """SELECT o.wallet_release = 'RELEASED'
                  AND NOT EXISTS (SELECT 1 FROM orders.release_settling s
                                  WHERE s.order_id = o.id)
           FROM orders.orders o WHERE o.id = $1::uuid""",
        order_id,
    )
    return settled
