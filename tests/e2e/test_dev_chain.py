"""make run's development chain (scripts/dev_chain.py) against a real pool service: it reports
as a watcher does, pays through its mempool, continues from the pool's height when its own
was lost, drops a payment the pool refuses instead of stalling every later block, reports a
payment again each block until its asset's confirmations, and retracts one."""

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from exchange.order.v1 import order_service_pb2 as opb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from scripts.dev_chain import GENESIS_HEIGHT, DevChain, chain_dir, pay, retract
from scripts.run_local import DEV_ASSET_CONFIRMATIONS, dev_assets
from tests.e2e.conftest import own_stack
from tests.e2e.stack import WATCHER_TOKEN, Stack
from tests.e2e.test_release_flow import add_wallets, create, eth_address

GUARDED = pytest.mark.stack_env(WALLET_REUSE_CONFIRMATIONS="ETH:2")
# make run's settings in development: the guard and every asset at 2 confirmations.
MAKE_RUN = pytest.mark.stack_env(
    WALLET_REUSE_CONFIRMATIONS="2", ASSETS=dev_assets(("BTC", "ETH", "TRON"))
)
USDT = "0xdAC17F958D2ee523a2206206994597C13D831ec7"


async def scanned(stack: Stack) -> int:
    stats = await stack.pool.GetPoolStats(
        wpb.GetPoolStatsRequest(network="ETH"), metadata=stack.operator
    )
    return stats.networks[0].scanned_height


def chain(stack: Stack, data: Path) -> DevChain:
    return DevChain(
        "ETH", stack.pool, WATCHER_TOKEN, chain_dir(data, "ETH"), data / "dev_chain.log"
    )


@own_stack
@GUARDED
async def test_the_chain_continues_from_the_pools_height_when_its_own_was_lost(
    stack: Stack, tmp_path: Path
) -> None:
    # The pool's database has seen ETH at 5000 (a database kept, a data directory deleted).
    await stack.pool.ReportDeposits(
        wpb.ReportDepositsRequest(network="ETH", scanned_height=5000), metadata=stack.watcher
    )
    fresh = chain(stack, tmp_path)
    assert fresh.height == GENESIS_HEIGHT
    await fresh.mine()
    await fresh.mine()
    assert fresh.height == 5001 == await scanned(stack)
    assert "the pool has scanned up to 5000" in (tmp_path / "dev_chain.log").read_text()
    # Its height is kept: a restart goes on from there.
    assert chain(stack, tmp_path).height == 5001


@own_stack
@GUARDED
async def test_a_payment_is_mined_and_reported_and_a_refused_one_does_not_stall_the_chain(
    stack: Stack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DEV_DATA_DIR", str(tmp_path))
    address = eth_address()
    await add_wallets(stack, "ETH", [address])
    order = await create(stack)
    running = chain(stack, tmp_path)
    stop = asyncio.Event()
    task = asyncio.create_task(running.run(0.1, stop))
    try:
        assert await asyncio.to_thread(pay, "ETH", address, "a lot") == 1
        assert "refused by the pool: deposits[0].amount" in capsys.readouterr().err
        assert await asyncio.to_thread(pay, "ETH", address, "0.25") == 0
        assert f"paid 0.25 to {address}: ETH block " in capsys.readouterr().out
    finally:
        stop.set()
        await task
    listed = await stack.pool.ListDeposits(wpb.ListDepositsRequest(), metadata=stack.operator)
    [deposit] = listed.deposits
    assert (deposit.address, deposit.amount, deposit.order_id) == (address, "0.25", order.id)
    assert deposit.attribution == wpb.DEPOSIT_ATTRIBUTION_ON_TIME
    assert await scanned(stack) == running.height >= deposit.block_height


async def eventually(probe: Callable[[], Awaitable[bool]]) -> None:
    """Until `probe()` is true (the order service syncs deposits every 0.2 s; the test's
    timeout ends one that never is)."""
    while not await probe():
        await asyncio.sleep(0.05)


async def queued(directory: Path) -> None:
    """Until an entry waits in the chain's mempool (so the next block holds it)."""
    while not list((directory / "mempool").glob("*.json")):
        await asyncio.sleep(0.02)


@own_stack
@MAKE_RUN
async def test_a_payment_through_the_chain_is_confirmed_and_pays_its_order_then_is_retracted(
    stack: Stack,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DEV_DATA_DIR", str(tmp_path))
    await add_wallets(stack, "ETH", [eth_address()])
    created = await stack.orders.CreateOrder(
        opb.CreateOrderRequest(network="ETH", amount="125.5", asset="USDT"),
        metadata=stack.client,
    )
    order_id, address = created.order.id, created.order.wallet_address
    assert address
    running = chain(stack, tmp_path)
    directory = chain_dir(tmp_path, "ETH")

    async def order() -> opb.Order:
        got = await stack.orders.GetOrder(
            opb.GetOrderRequest(order_id=order_id), metadata=stack.client
        )
        return got.order

    async def deposit() -> wpb.Deposit:
        listed = await stack.pool.ListDeposits(wpb.ListDepositsRequest(), metadata=stack.operator)
        [found] = listed.deposits
        return found

    # Block by block (mined by hand here, one a second under make run): the token's Transfer
    # is CONFIRMING in its block, with 1 confirmation...
    paying = asyncio.create_task(asyncio.to_thread(pay, "ETH", address, "125.5", USDT))
    await queued(directory)
    await running.mine()
    assert await paying == 0
    paid_line = capsys.readouterr().out
    assert f"paid 125.5 USDT ({USDT}) to {address}: ETH block {running.height}" in paid_line
    assert "with 1 confirmation of 2 (CONFIRMING; " in paid_line
    first = await deposit()
    assert (first.kind, first.asset, first.order_id) == (wpb.DEPOSIT_KIND_TOKEN, "USDT", order_id)
    assert (first.status, first.confirmations) == (wpb.DEPOSIT_STATUS_CONFIRMING, 1)
    assert first.required_confirmations == DEV_ASSET_CONFIRMATIONS == 2

    async def pending() -> bool:
        return (await order()).received_pending == "125.5"

    await eventually(pending)
    assert (await order()).payment_status == opb.PAYMENT_STATUS_UNPAID
    # ...reported again in the next block with 2: CONFIRMED, and the order PAID.
    await running.mine()
    confirmed = await deposit()
    assert (confirmed.status, confirmed.confirmations) == (wpb.DEPOSIT_STATUS_CONFIRMED, 2)
    assert confirmed.block_height == first.block_height == running.height - 1

    async def paid() -> bool:
        return (await order()).payment_status == opb.PAYMENT_STATUS_PAID

    await eventually(paid)
    # Once at its confirmations it is no longer reported.
    await running.mine()
    assert (await deposit()).confirmations == 2
    # A reorganisation drops its block: the next block retracts it, REVERTED, UNPAID again.
    retracting = asyncio.create_task(asyncio.to_thread(retract, "ETH", first.txid))
    await queued(directory)
    await running.mine()
    assert await retracting == 0
    assert '"reverted": 1' in capsys.readouterr().out
    reverted = await deposit()
    assert reverted.status == wpb.DEPOSIT_STATUS_REVERTED

    async def unpaid() -> bool:
        now = await order()
        return now.payment_status == opb.PAYMENT_STATUS_UNPAID and now.received_confirmed in (
            "",
            "0",
        )

    await eventually(unpaid)
    # A txid the chain never mined is refused, and the block goes on without it.
    unknown = asyncio.create_task(asyncio.to_thread(retract, "ETH", "0x" + "ab" * 32))
    await queued(directory)
    await running.mine()
    assert await unknown == 1
    assert "refused by the chain: no payment 0xabab" in capsys.readouterr().err
