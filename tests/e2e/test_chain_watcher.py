"""End to end on a real chain: eth-tester's in-process Ethereum chain (py-evm) mines blocks
with real ether transfers to pool addresses; the watcher of tests/eth_watcher.py reads them
through web3.py and reports them to the pool over gRPC. A customer's payment shows on the
order; a late payment holds the wallet out; a released wallet is reused only once the
watcher has scanned the confirmations past its release."""

import asyncio
import time

import pytest
from web3 import EthereumTesterProvider, Web3
from web3 import testing as web3_testing

from exchange.order.v1 import order_service_pb2 as opb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from tests.e2e.conftest import own_stack
from tests.e2e.stack import Stack
from tests.e2e.test_deposits import eventually, order_with_deposits, still_queued
from tests.e2e.test_release_flow import add_wallets, create, eth_address, finish, until_shown
from tests.eth_watcher import EthWatcher

CONFIRMATIONS = 2


@pytest.fixture
def w3() -> Web3:
    return Web3(EthereumTesterProvider())


def mine(w3: Web3, blocks: int) -> None:
    """Empty blocks: the chain moves on."""
    web3_testing.Testing(w3).mine(blocks)


async def pay(w3: Web3, address: str, wei: int) -> str:
    """A customer's ether transfer to `address`, mined at once; its transaction id. Blocks
    carry whole seconds, and eth-tester dates a block when the one before it was mined: so
    the payment waits for the next whole second and a block mined then, so that it does not
    look older than the moment the customer got (or an order gave back) the address."""
    await asyncio.sleep(1.05 - time.time() % 1)
    mine(w3, 1)
    customer = list(w3.eth.accounts)[1]
    tx = w3.eth.send_transaction(
        {
            "from": customer,
            "to": Web3.to_checksum_address(address),
            "value": Web3.to_wei(wei, "wei"),
        }
    )
    return "0x" + bytes(tx).hex()


@own_stack
@pytest.mark.stack_env(WALLET_REUSE_CONFIRMATIONS=f"ETH:{CONFIRMATIONS}")
async def test_payments_on_a_real_chain_reach_the_order_and_a_late_one_holds_the_wallet_out(
    stack: Stack, w3: Web3
) -> None:
    watcher = EthWatcher(w3, stack.pool, stack.watcher)
    paid_to, reused = eth_address(), eth_address()
    await add_wallets(stack, "ETH", [paid_to, reused])
    await watcher.scan()
    order = await create(stack)
    assert order.wallet_address == paid_to

    txid = await pay(w3, paid_to, 5 * 10**17)
    first = await watcher.scan()

    assert (first.recorded, first.late, first.scanned_height) == (1, 0, w3.eth.block_number)
    shown = await eventually(lambda: _deposits(stack, order.id))
    assert [(d.txid, d.amount, d.late) for d in shown] == [(txid, "0.5", False)]

    # The order completes; a queued order waits while the wallet cools. Then the customer
    # pays again: late. The wallet stays out however far the chain goes, until enabled.
    other = await create(stack)
    assert other.wallet_address == reused
    waiting = await create(stack)
    await finish(stack, order.id, opb.ORDER_STATUS_COMPLETED)
    late_txid = await pay(w3, paid_to, 10**17)
    mine(w3, CONFIRMATIONS + 3)
    late = await watcher.scan()
    assert (late.recorded, late.late) == (1, 1)
    listed = await stack.pool.ListLateDeposits(
        wpb.ListLateDepositsRequest(network="ETH"), metadata=stack.operator
    )
    assert [(d.txid, d.order_id, d.amount) for d in listed.deposits] == [
        (late_txid, order.id, "0.1")
    ]
    await still_queued(stack, waiting.id)
    shown = await eventually(lambda: _deposits(stack, order.id, count=2))
    assert [d.late for d in shown] == [False, True]

    # The other wallet, released without a payment after it, goes to the waiting order only
    # once the watcher has scanned CONFIRMATIONS blocks past its release (the chain's height
    # in the watcher's first report after it).
    await finish(stack, other.id, opb.ORDER_STATUS_CANCELLED)
    released_at = (await watcher.scan()).scanned_height
    mine(w3, CONFIRMATIONS - 1)
    await watcher.scan()
    await still_queued(stack, waiting.id)
    mine(w3, 1)
    assert (await watcher.scan()).scanned_height == released_at + CONFIRMATIONS
    assert (await until_shown(stack, waiting.id)).wallet_address == reused


async def _deposits(stack: Stack, order_id: str, count: int = 1) -> list[opb.OrderDeposit]:
    deposits = list((await order_with_deposits(stack, order_id)).deposits)
    return deposits if len(deposits) >= count else []
