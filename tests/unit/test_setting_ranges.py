"""The range README documents for each numeric setting is the one the code enforces: both
ends are taken, one step beyond either is refused naming the variable and the value."""

import pytest

from order_service.config import OrderSettings
from shared.config import ConfigError
from tests.configuration_table import (
    BAD_VALUES,
    ORDER,
    POOL,
    DocumentedRange,
    documented_ranges,
    table_rows,
)
from wallet_pool_service.config import PoolSettings

READERS = {bad.variable: bad.modules for bad in BAD_VALUES}
LOADERS = {ORDER: OrderSettings.from_env, POOL: PoolSettings.from_env}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in table_rows():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPERATOR_TOKEN", "operator-secret")
    monkeypatch.setenv("SERVICE_TOKEN", "service-secret")
    monkeypatch.setenv("WATCHER_TOKEN", "watcher-secret")


def spelled(value: float, whole: bool) -> str:
    return str(int(value)) if whole else repr(value)


def beyond(documented: DocumentedRange) -> list[float]:
    step = 1.0 if documented.whole else documented.maximum * 1e-6
    below = documented.minimum - (1.0 if documented.whole else max(documented.minimum / 2, 0.01))
    return [below, documented.maximum + step]


def test_every_numeric_setting_has_a_documented_range() -> None:
    ranges = documented_ranges()
    assert len(ranges) >= 22
    assert set(ranges) <= set(READERS)
    assert ranges["WALLET_REUSE_CONFIRMATIONS"] == DocumentedRange(0, 10_000, whole=True)


@pytest.mark.parametrize("variable", sorted(documented_ranges()))
def test_the_documented_range_is_the_one_enforced(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    documented = documented_ranges()[variable]
    for module in READERS[variable]:
        load = LOADERS[module]
        for edge in (documented.minimum, documented.maximum):
            monkeypatch.setenv(variable, spelled(edge, documented.whole))
            load()
        for value in beyond(documented):
            text = spelled(value, documented.whole)
            monkeypatch.setenv(variable, text)
            with pytest.raises(ConfigError, match=variable) as refused:
                load()
            assert text in str(refused.value)


@pytest.mark.parametrize("value", ["\u0661", "1_0", "nan", "inf", "-inf", "1e999", "0x10", " "])
def test_only_ascii_decimal_numbers_are_taken(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("HEALTH_CHECK_SECONDS", f"2{value}" if value == " " else value)
    if value == " ":
        OrderSettings.from_env()  # surrounding blanks are trimmed: "2"
        return
    with pytest.raises(ConfigError, match=r"^HEALTH_CHECK_SECONDS must be a number from 0\.1"):
        OrderSettings.from_env()


# A token whose contract is no address of its network: both services refuse it alike (they
# read ASSETS with one parse), naming the variable and the value.
BAD_CONTRACT = "ETH:USDX:0xnot-an-address:6:1:64"


@pytest.mark.parametrize("module", [ORDER, POOL])
def test_both_services_refuse_a_token_contract_that_is_no_address_of_its_network(
    monkeypatch: pytest.MonkeyPatch, module: str
) -> None:
    monkeypatch.setenv("ASSETS", BAD_CONTRACT)
    with pytest.raises(ConfigError, match=r"^ASSETS: ") as refused:
        LOADERS[module]()

    message = str(refused.value)
    assert BAD_CONTRACT in message and "is not a ETH address" in message
    assert "\n" not in message
