"""End to end on a real chain with a real ERC-20: eth-tester's chain (py-evm) runs the token of
tests/erc20.py (bytecode kept as a fixture), the watcher of tests/eth_watcher.py reports its
Transfer logs (keyed by their position in the receipt) beside ether transfers. A USDT order
is paid and confirmed, a reorganisation through eth-tester's snapshot and revert takes the
payment away (a retraction: the order is unpaid again), and a spam token and dust sent to a
released wallet never take it out of the pool."""

import asyncio
import time

import asyncpg
import pytest
from web3 import EthereumTesterProvider, Web3
from web3 import testing as web3_testing

from exchange.order.v1 import order_service_pb2 as opb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from shared.assets import parse_assets
from tests import erc20
from tests.e2e.conftest import own_stack
from tests.e2e.stack import Stack
from tests.e2e.test_deposits import eventually
from tests.e2e.test_release_flow import add_wallets, eth_address, finish
from tests.eth_watcher import EthWatcher
from tests.invariants import (
    deposits_have_one_disposition_and_only_counted_ones_hold_or_count,
    payment_status_is_the_function_of_the_recorded_deposits,
)

# eth-tester's first account deploys the token first: its address is known before the chain
# exists (the stack's ASSETS names it as this chain's USDT, 2 confirmations).
TOKEN = "0xF2E246BB76DF876Cef8b38ae84130F4F55De395b"
CONFIRMATIONS = 2


def mine(w3: Web3, blocks: int) -> None:
    web3_testing.Testing(w3).mine(blocks)


def send_ether(w3: Web3, to: str, wei: int) -> None:
    customer = list(w3.eth.accounts)[1]
    w3.eth.send_transaction(
        {"from": customer, "to": Web3.to_checksum_address(to), "value": Web3.to_wei(wei, "wei")}
    )


async def next_second() -> None:
    """Blocks carry whole seconds: a block mined in the next one differs from any before."""
    await asyncio.sleep(1.05 - time.time() % 1)


async def order_now(stack: Stack, order_id: str) -> opb.GetOrderResponse:
    response: opb.GetOrderResponse = await stack.orders.GetOrder(
        opb.GetOrderRequest(order_id=order_id), metadata=stack.client
    )
    return response


@own_stack
@pytest.mark.stack_env(ASSETS=f"ETH:USDT:{TOKEN}:6:1:{CONFIRMATIONS}", DEPOSIT_SYNC_SECONDS="0.1")
async def test_a_token_payment_on_a_real_chain_is_confirmed_then_reverted_by_a_reorg(
    stack: Stack, db: asyncpg.Pool
) -> None:
    w3 = Web3(EthereumTesterProvider())
    assert erc20.deploy(w3) == TOKEN
    spam = erc20.deploy(w3)  # the same code at another address: not an asset
    watcher = EthWatcher(w3, stack.pool, stack.watcher, follow_confirmations=10)
    paid_to, released = eth_address(), eth_address()
    await add_wallets(stack, "ETH", [paid_to, released])
    await watcher.scan()
    created = await stack.orders.CreateOrder(
        opb.CreateOrderRequest(network="ETH", amount="125.5", asset="USDT"), metadata=stack.client
    )
    order = created.order
    assert order.wallet_address == paid_to

    # The customer pays in USDT; someone also sends it ether (the wrong asset).
    snapshot = web3_testing.Testing(w3).snapshot()
    await next_second()
    txid = erc20.transfer(w3, TOKEN, paid_to, 125_500_000)
    send_ether(w3, paid_to, 10**16)
    first = await watcher.scan()
    assert (first.recorded, first.counted, first.wrong_asset) == (2, 1, 1)
    mine(w3, CONFIRMATIONS)
    assert (await watcher.scan()).updated == 2

    async def paid() -> opb.GetOrderResponse | None:
        now = await order_now(stack, order.id)
        return now if now.order.payment_status == opb.PAYMENT_STATUS_PAID else None

    shown = await eventually(paid)
    assert shown is not None and shown.order.received_confirmed == "125.5"
    token = next(d for d in shown.deposits if d.token_contract)
    assert (token.txid, token.index, token.status) == (txid, 0, opb.DEPOSIT_STATUS_CONFIRMED)

    # A reorganisation: the chain goes back to before the payment and grows another branch,
    # longer than the one the watcher scanned.
    web3_testing.Testing(w3).revert(snapshot)
    await next_second()
    mine(w3, CONFIRMATIONS + 3)
    retracted = await watcher.scan()
    assert retracted.reverted == 2

    async def unpaid() -> opb.GetOrderResponse | None:
        now = await order_now(stack, order.id)
        return now if now.order.payment_status == opb.PAYMENT_STATUS_UNPAID else None

    shown = await eventually(unpaid)
    assert shown is not None
    assert {d.status for d in shown.deposits} == {opb.DEPOSIT_STATUS_REVERTED}

    # A released wallet: a spam token and one wei arrive after its order. It stays in the pool.
    other = await stack.orders.CreateOrder(
        opb.CreateOrderRequest(network="ETH", amount="1"), metadata=stack.client
    )
    assert other.order.wallet_address == released
    await finish(stack, other.order.id, opb.ORDER_STATUS_CANCELLED)
    await next_second()
    erc20.transfer(w3, spam, released, 10**12)
    send_ether(w3, released, 1)
    strangers = await watcher.scan()
    assert (strangers.late, strangers.unknown_asset, strangers.dust) == (2, 1, 1)
    wallets = await stack.pool.ListWallets(
        wpb.ListWalletsRequest(network="ETH", state=wpb.WALLET_STATE_DISABLED),
        metadata=stack.operator,
    )
    assert list(wallets.wallets) == []

    async with db.acquire() as conn:
        assets = parse_assets(f"ETH:USDT:{TOKEN}:6:1:{CONFIRMATIONS}", ("ETH",)).assets
        assert (
            await deposits_have_one_disposition_and_only_counted_ones_hold_or_count(conn, assets)
            == []
        )
        assert await payment_status_is_the_function_of_the_recorded_deposits(conn) == []
