"""End to end, with the watermark guard on as production runs it: the money paths step by
step (guarded reuse through a claim and through a hand-off, an on-time deposit, two outputs
of one transaction, a late deposit at the very end of a holding, one at the very start of
the next; then issue 20's: a spam token, the wrong asset, a deposit of exactly the minimum,
a payment within the tolerance, dust to a released wallet, a payment retracted), and after
each step every invariant (tests/invariants.py, issue 20's included) holds and the API agrees
with the facts (tests/invariants_api.py). The mutation suite (tests/mutation) runs this test
against seeded bugs: each must fail it."""

import secrets
import uuid
from datetime import UTC
from decimal import Decimal

import asyncpg
import pytest

from exchange.order.v1 import order_service_pb2 as opb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from tests.e2e.conftest import own_stack
from tests.e2e.stack import Stack
from tests.e2e.test_assets import USDT_ETH, token
from tests.e2e.test_deposits import chain_deposit, eth_stats, report
from tests.e2e.test_release_flow import add_wallets, create, eth_address, finish, shown_address
from tests.invariants import check_all

CONFIRMATIONS = 3
# An ETH order of 0.5 is PAID from 0.495 on (create's amount; 1 % under).
UNDERPAY = "1%"
ETH_MINIMUM = Decimal("0.0005")  # shared/assets.py: NATIVE_ASSETS
FINAL = 64  # an ETH deposit's confirmations (shared/assets.py)
_FINAL = {opb.ORDER_STATUS_COMPLETED: "COMPLETED", opb.ORDER_STATUS_CANCELLED: "CANCELLED"}


class Ledger:
    """What the test was told: each order's last acknowledged status, each deposit the pool
    acknowledged; and the check of every invariant against them."""

    def __init__(self, stack: Stack, db: asyncpg.Pool) -> None:
        self.stack = stack
        self.db = db
        self.statuses: dict[uuid.UUID, str] = {}
        self.deposits: dict[tuple[str, str, int], tuple[str, Decimal]] = {}

    async def create(self) -> opb.Order:
        order = await create(self.stack)
        self.statuses[uuid.UUID(order.id)] = "PENDING"
        return order

    async def finish(self, order: opb.Order, status: opb.OrderStatus.ValueType) -> None:
        await finish(self.stack, order.id, status)
        self.statuses[uuid.UUID(order.id)] = _FINAL[status]

    async def report(
        self, scanned: int, *deposits: wpb.ChainDeposit, reverted: tuple[wpb.Retraction, ...] = ()
    ) -> wpb.ReportDepositsResponse:
        if reverted:
            outcome: wpb.ReportDepositsResponse = await self.stack.pool.ReportDeposits(
                wpb.ReportDepositsRequest(
                    network="ETH", deposits=deposits, scanned_height=scanned, reverted=reverted
                ),
                metadata=self.stack.watcher,
            )
        else:
            outcome = await report(self.stack, scanned, *deposits)
        for d in deposits:
            self.deposits[("ETH", d.txid, d.index)] = (d.address, Decimal(d.amount))
        return outcome

    async def assert_invariants(self, step: str) -> None:
        violations = await check_all(
            self.db, self.statuses, deposits=self.deposits, api=self.stack.api, payments=True
        )
        assert violations == [], f"after {step}: {violations}"


def second_output(deposit: wpb.ChainDeposit) -> wpb.ChainDeposit:
    deposit.index = 1
    return deposit


async def holding_times(stack: Stack, address: str) -> list[wpb.WalletAssignment]:
    history = await stack.pool.GetWalletHistory(
        wpb.GetWalletHistoryRequest(address=address), metadata=stack.operator
    )
    return list(history.assignments)


def final_coin(address: str, amount: Decimal, height: int) -> wpb.ChainDeposit:
    deposit = chain_deposit(address, height=height, amount=str(amount))
    deposit.kind, deposit.confirmations = wpb.DEPOSIT_KIND_NATIVE, FINAL
    return deposit


def final_token(address: str, amount: str, contract: str, height: int) -> wpb.ChainDeposit:
    deposit = token(address, amount, contract, "0x" + secrets.token_hex(32))
    deposit.block_height, deposit.confirmations = height, FINAL
    return deposit


async def payment_of(
    stack: Stack, order_id: str
) -> tuple[opb.PaymentStatus.ValueType, Decimal, Decimal]:
    order = (
        await stack.orders.GetOrder(opb.GetOrderRequest(order_id=order_id), metadata=stack.client)
    ).order
    return (
        order.payment_status,
        Decimal(order.received_confirmed),
        Decimal(order.received_pending),
    )


@own_stack
@pytest.mark.stack_env(
    WALLET_REUSE_CONFIRMATIONS=f"ETH:{CONFIRMATIONS}", PAYMENT_UNDERPAY_TOLERANCE=UNDERPAY
)
async def test_money_paths_with_the_guard_on_keep_every_invariant_and_the_api_agrees(
    stack: Stack, db: asyncpg.Pool
) -> None:
    ledger = Ledger(stack, db)
    await add_wallets(stack, "ETH", [eth_address() for _ in range(3)])
    await ledger.report(100)
    a, b, c = [await ledger.create() for _ in range(3)]
    tx = "0x" + uuid.uuid4().hex * 2
    await ledger.report(
        101,
        chain_deposit(a.wallet_address, height=101, amount="1.25"),
        chain_deposit(c.wallet_address, txid=tx, height=101, amount="0.5"),
        second_output(chain_deposit(c.wallet_address, txid=tx, height=101, amount="0.75")),
    )
    await ledger.assert_invariants("three orders paid")

    # A completes: the guard holds its wallet, so a new order waits, and so does the next.
    await ledger.finish(a, opb.ORDER_STATUS_COMPLETED)
    d, e = await ledger.create(), await ledger.create()
    await ledger.report(102)  # the release's height
    await ledger.report(101 + CONFIRMATIONS)
    await ledger.assert_invariants("a release the guard holds")
    stats = await eth_stats(stack)
    assert (stats.cooling, stats.held_by_watermark, stats.available) == (1, 1, 0)
    assert not d.wallet_address and not e.wallet_address

    # The watcher scans the release's height plus the confirmations: D gets A's wallet.
    await ledger.report(102 + CONFIRMATIONS)
    seen, _ = await shown_address(stack, d.id, within=10)
    assert seen.wallet_address == a.wallet_address
    await ledger.assert_invariants("a guarded reuse")

    # B is cancelled. A payment at the very moment its holding ended is late (and keeps B's
    # wallet out); one at the very moment D's holding began is D's.
    await ledger.finish(b, opb.ORDER_STATUS_CANCELLED)
    [b_holding] = await holding_times(stack, b.wallet_address)
    [_, d_holding] = await holding_times(stack, a.wallet_address)
    outcome = await ledger.report(
        106,
        chain_deposit(b.wallet_address, height=106, time=b_holding.release_time.ToDatetime(UTC)),
        chain_deposit(a.wallet_address, height=106, time=d_holding.assign_time.ToDatetime(UTC)),
    )
    await ledger.report(120)
    await ledger.assert_invariants("a late deposit and deposits at the holdings' bounds")
    assert (outcome.recorded, outcome.late) == (2, 1)
    seen, _ = await shown_address(stack, e.id, within=0.2)
    assert not seen.wallet_address

    # Issue 20. A new wallet goes to E, which waited. To it: a spam token (an unknown
    # contract), USDT (not E's asset), a deposit of exactly the minimum and two payments, all
    # final: 0.498 of 0.5, within the tolerance. One wei of dust to B's released wallet.
    fresh = eth_address()
    await add_wallets(stack, "ETH", [fresh])
    seen, _ = await shown_address(stack, e.id, within=10)
    assert seen.wallet_address == fresh
    second = final_coin(fresh, Decimal("0.198") - ETH_MINIMUM, 121)
    outcome = await ledger.report(
        121,
        final_token(fresh, "1000", "0x" + secrets.token_hex(20), 121),
        final_token(fresh, "5", USDT_ETH, 121),
        final_coin(fresh, ETH_MINIMUM, 121),
        final_coin(fresh, Decimal("0.3"), 121),
        second,
        chain_deposit(b.wallet_address, height=121, amount="0.000000000000000001"),
    )
    await ledger.assert_invariants("spam, the wrong asset, dust and a payment within tolerance")
    assert (outcome.counted, outcome.unknown_asset, outcome.wrong_asset, outcome.dust) == (
        3,
        1,
        1,
        1,
    )
    assert await payment_of(stack, e.id) == (opb.PAYMENT_STATUS_PAID, Decimal("0.498"), Decimal(0))

    # The second payment's block is orphaned: E is short again.
    retraction = wpb.Retraction(
        txid=second.txid,
        kind=wpb.DEPOSIT_KIND_NATIVE,
        index=0,
        reason=wpb.RETRACTION_REASON_ORPHANED,
    )
    assert (await ledger.report(122, reverted=(retraction,))).reverted == 1
    await ledger.assert_invariants("a payment retracted")
    assert await payment_of(stack, e.id) == (
        opb.PAYMENT_STATUS_PARTIAL,
        Decimal("0.3005"),
        Decimal(0),
    )
