"""The assets of each network: the built-in ones, the ASSETS setting over them (refused in
one line naming the variable and the entry), and an order's asset and amount scale."""

from decimal import Decimal

import pytest

from shared.assets import DEFAULT_ASSETS, check_scale, parse_assets
from shared.config import ConfigError
from shared.errors import InvalidArgument

NETWORKS = ("BTC", "ETH", "TRON")
USDT_TRON = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"
USDT_ETH = "0xdac17f958d2ee523a2206206994597c13d831ec7"
USDC_ETH = "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48"
OTHER_ETH = "0x1111111111111111111111111111111111111111"


def test_the_built_in_assets_are_the_coins_and_the_mainnet_stablecoins() -> None:
    table = parse_assets("", NETWORKS)

    assert [(a.network, a.code, a.symbol, a.contract) for a in table.assets] == [
        ("BTC", "", "BTC", None),
        ("ETH", "", "ETH", None),
        ("ETH", "USDC", "USDC", USDC_ETH),
        ("ETH", "USDT", "USDT", USDT_ETH),
        ("TRON", "", "TRX", None),
        ("TRON", "USDT", "USDT", USDT_TRON),
    ]
    usdt = table.by_contract("TRON", USDT_TRON)
    assert usdt is not None and (usdt.decimals, usdt.min_deposit, usdt.confirmations) == (
        6,
        Decimal("1"),
        20,
    )
    assert table.by_contract("ETH", OTHER_ETH) is None
    assert table.by_contract("ETH", "") == table.get("ETH", "")


def test_the_built_in_contracts_pass_the_pools_address_checks_in_canonical_form() -> None:
    # The checksummed spellings of the issue resolve to the same assets.
    table = parse_assets(
        "ETH:USDT:0xdAC17F958D2ee523a2206206994597C13D831ec7:6:1:64,"
        "ETH:USDC:0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48:6:1:64",
        NETWORKS,
    )
    assert {a.contract for a in table.assets if a.contract} == {
        a.contract for a in DEFAULT_ASSETS if a.contract
    }


def test_the_setting_adds_replaces_and_turns_off_assets() -> None:
    table = parse_assets(
        f"ETH:DAI:{OTHER_ETH}:18:5:12, TRON:USDT:{USDT_TRON}:6:10:30, ETH:USDC:off,"
        " ETH:::18:0.01:32",
        NETWORKS,
    )

    dai = table.get("ETH", "DAI")
    assert dai is not None and (dai.decimals, dai.min_deposit, dai.confirmations) == (
        18,
        Decimal("5"),
        12,
    )
    usdt = table.get("TRON", "USDT")
    assert usdt is not None and usdt.min_deposit == Decimal("10") and usdt.confirmations == 30
    assert table.get("ETH", "USDC") is None
    ether = table.get("ETH", "")
    assert ether is not None and ether.min_deposit == Decimal("0.01") and ether.symbol == "ETH"


def test_assets_of_networks_not_supported_are_left_out() -> None:
    assert {a.network for a in parse_assets("", ("BTC",)).assets} == {"BTC"}


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("DOGE:X:abc:6:1:1", "'DOGE' is not a supported network"),
        (f"ETH:usdt!:{OTHER_ETH}:6:1:1", "is not an asset code"),
        (f"ETH:DAI:{OTHER_ETH}:6:1", "expected NETWORK:CODE:CONTRACT"),
        ("ETH:DAI::6:1:1", "a token needs a code and a contract"),
        ("ETH:DAI:0x1234:6:1:1", "contract '0x1234' is not a ETH address"),
        (f"BTC:USDT:{USDT_TRON}:6:1:1", "BTC has no tokens"),
        (f"ETH:DAI:{OTHER_ETH}:19:1:1", "decimals must be a whole number from 0 to 18"),
        (f"ETH:DAI:{OTHER_ETH}:x:1:1", "decimals must be a whole number from 0 to 18"),
        (f"ETH:DAI:{OTHER_ETH}:6:0:1", "the minimum deposit must be greater than zero"),
        (f"ETH:DAI:{OTHER_ETH}:6:-1:1", "the minimum deposit must be greater than zero"),
        (f"ETH:DAI:{OTHER_ETH}:6:abc:1", "minimum deposit 'abc' is not a decimal"),
        (f"ETH:DAI:{OTHER_ETH}:2:0.001:1", "the minimum deposit has more than 2 decimals"),
        (f"ETH:DAI:{OTHER_ETH}:6:1:0", "confirmations must be a whole number from 1 to 10000"),
        (f"ETH:DAI:{OTHER_ETH}:6:1:10001", "confirmations must be a whole number from 1"),
        ("ETH::off", "a network's coin cannot be turned off"),
        (f"ETH:DAI:{USDT_ETH}:6:1:1", f"ETH contract {USDT_ETH} is both"),
    ],
)
def test_a_bad_entry_is_refused_naming_the_variable_and_the_value(raw: str, problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_assets(raw, NETWORKS)

    message = str(refused.value)
    assert message.startswith("ASSETS: ") and problem in message
    assert "\n" not in message


def test_an_order_names_its_asset_by_code_or_the_coin_by_symbol_or_nothing() -> None:
    table = parse_assets("", NETWORKS)

    assert table.order_asset("TRON", "usdt").code == "USDT"
    assert table.order_asset("TRON", "").code == ""
    assert table.order_asset("TRON", "TRX").code == ""
    with pytest.raises(InvalidArgument) as unknown:
        table.order_asset("BTC", "USDT")
    assert unknown.value.field == "asset"
    assert "BTC takes: BTC" in str(unknown.value)


@pytest.mark.parametrize(
    ("network", "code", "amount", "fits"),
    [
        ("ETH", "USDT", "10.123456", True),
        ("ETH", "USDT", "10.1234567", False),
        ("ETH", "", "0.000000000000000001", True),
        ("BTC", "", "0.00000001", True),
        ("BTC", "", "0.000000001", False),
        ("TRON", "", "1.0000000", True),
        ("TRON", "", "1.0000001", False),
    ],
)
def test_an_amount_carries_no_more_decimals_than_its_asset(
    network: str, code: str, amount: str, fits: bool
) -> None:
    asset = parse_assets("", NETWORKS).order_asset(network, code)
    if fits:
        assert check_scale(Decimal(amount), asset, "amount") == Decimal(amount)
    else:
        with pytest.raises(InvalidArgument) as refused:
            check_scale(Decimal(amount), asset, "amount")
        assert refused.value.field == "amount"
