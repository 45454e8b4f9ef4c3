"""End to end over gRPC: the assets of each network (ListAssets, and the ASSETS setting), a
USDT order paid with a token deposit next to a coin transfer in the same transaction, a
wrong-asset and a spam deposit shown on the order as not counted, and orders refused for an
unknown asset or an amount finer than the asset."""

import secrets
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from exchange.order.v1 import order_service_pb2 as opb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from shared.timestamps import to_timestamp
from tests.e2e.conftest import local_only, own_stack
from tests.e2e.stack import Stack, service_env
from tests.e2e.test_deposits import eventually, order_with_deposits, report
from tests.e2e.test_release_flow import add_wallets, eth_address
from tests.e2e.test_startup import refused_start

USDT_ETH = "0xdac17f958d2ee523a2206206994597c13d831ec7"
DAI = "0x6b175474e89094c44da98b954eedeac495271d0f"


def token(address: str, amount: str, contract: str, txid: str, index: int = 0) -> wpb.ChainDeposit:
    return wpb.ChainDeposit(
        address=address,
        txid=txid,
        index=index,
        amount=amount,
        block_height=10,
        block_time=to_timestamp(datetime.now(UTC)),
        confirmations=1,
        token_contract=contract,
        kind=wpb.DEPOSIT_KIND_TOKEN,
    )


@own_stack
@pytest.mark.stack_env(ASSETS=f"ETH:DAI:{DAI}:18:5:12")
async def test_list_assets_shows_the_built_in_ones_and_the_settings(stack: Stack) -> None:
    response = await stack.pool.ListAssets(
        wpb.ListAssetsRequest(network="ETH"), metadata=stack.operator
    )

    assert [(a.code, a.symbol, a.contract, a.decimals, a.min_deposit) for a in response.assets] == [
        ("", "ETH", "", 18, "0.0005"),
        ("DAI", "DAI", DAI, 18, "5"),
        ("USDC", "USDC", "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48", 6, "1"),
        ("USDT", "USDT", USDT_ETH, 6, "1"),
    ]
    order = await stack.orders.CreateOrder(
        opb.CreateOrderRequest(network="ETH", amount="10.5", asset="dai"), metadata=stack.client
    )
    assert order.order.asset == "DAI"


@own_stack
async def test_a_usdt_order_shows_its_token_deposit_counted_and_the_others_set_aside(
    stack: Stack,
) -> None:
    address = eth_address()
    await add_wallets(stack, "ETH", [address])
    created = await stack.orders.CreateOrder(
        opb.CreateOrderRequest(network="ETH", amount="125.5", asset="USDT"), metadata=stack.client
    )
    order = created.order
    assert (order.asset, order.wallet_address) == ("USDT", address)
    txid = "0x" + secrets.token_hex(32)
    # One transaction: a coin transfer (index 0) and a USDT log (receipt position 0), plus
    # a fake USDT from a contract the office does not take.
    coin = wpb.ChainDeposit(
        address=address,
        txid=txid,
        index=0,
        amount="0.01",
        block_height=10,
        block_time=to_timestamp(datetime.now(UTC)),
        confirmations=1,
        kind=wpb.DEPOSIT_KIND_NATIVE,
    )
    paid = token(address, "125.5", USDT_ETH, txid)
    spam = token(address, "125.5", "0x" + secrets.token_hex(20), txid, index=1)

    outcome = await report(stack, 10, coin, paid, spam)

    assert (outcome.recorded, outcome.counted, outcome.wrong_asset, outcome.unknown_asset) == (
        3,
        1,
        1,
        1,
    )

    async def shown() -> list[opb.OrderDeposit]:
        deposits = (await order_with_deposits(stack, order.id)).deposits
        return list(deposits) if len(deposits) == 3 else []

    deposits = await eventually(shown)
    assert sorted((d.index, d.asset, d.disposition, d.token_contract != "") for d in deposits) == [
        (0, "", opb.DEPOSIT_DISPOSITION_WRONG_ASSET, False),
        (0, "USDT", opb.DEPOSIT_DISPOSITION_COUNTED, True),
        (1, "", opb.DEPOSIT_DISPOSITION_UNKNOWN_ASSET, True),
    ]


@own_stack
@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"network": "BTC", "amount": "1", "asset": "USDT"}, "asset"),
        ({"network": "ETH", "amount": "1", "asset": "DOGE"}, "asset"),
        ({"network": "TRON", "amount": "10.1234567", "asset": "USDT"}, "amount"),
        ({"network": "BTC", "amount": "0.000000001"}, "amount"),
    ],
)
async def test_an_unknown_asset_or_an_amount_finer_than_the_asset_is_refused(
    stack: Stack, request_fields: dict[str, str], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stack.orders.CreateOrder(
            opb.CreateOrderRequest(**request_fields), metadata=stack.client
        )
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith(f"{field}: ")


@local_only("starts each service as a host process to see it refuse the setting")
@pytest.mark.parametrize("module", ["order_service", "wallet_pool_service"])
async def test_a_bad_assets_setting_stops_each_service_in_one_line(
    e2e_database_url: str, tmp_path: Path, module: str
) -> None:
    env = service_env(e2e_database_url, "development", {"ASSETS": f"ETH:DAI:{DAI}:18:5:0"})

    code, output = await refused_start(module, env, tmp_path / f"{module}.log")

    assert code == 2, output
    [line] = output.splitlines()
    assert line == (
        f"{module}: configuration error: ASSETS: 'ETH:DAI:{DAI}:18:5:0': confirmations must "
        "be a whole number from 1 to 10000"
    )
