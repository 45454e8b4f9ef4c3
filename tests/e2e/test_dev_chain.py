"""make run's development chain (scripts/dev_chain.py) against a real pool service: it reports
as a watcher does, pays through its mempool, continues from the pool's height when its own
was lost, and drops a payment the pool refuses instead of stalling every later block."""

import asyncio
from pathlib import Path

import pytest

from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from scripts.dev_chain import GENESIS_HEIGHT, DevChain, chain_dir, pay
from tests.e2e.conftest import own_stack
from tests.e2e.stack import WATCHER_TOKEN, Stack
from tests.e2e.test_release_flow import add_wallets, create, eth_address

GUARDED = pytest.mark.stack_env(WALLET_REUSE_CONFIRMATIONS="ETH:2")


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
