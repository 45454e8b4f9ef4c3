"""WALLET_REUSE_CONFIRMATIONS, and what a wallet held by the watermark shows."""

from datetime import UTC, datetime

import pytest

from shared.config import ConfigError
from wallet_pool_service.config import parse_reuse_confirmations
from wallet_pool_service.domain import Wallet, WalletState

NETWORKS = ("BTC", "ETH", "TRON")
DEFAULTS = {"BTC": 6, "ETH": 64, "TRON": 20}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", DEFAULTS),
        ("off", {"BTC": None, "ETH": None, "TRON": None}),
        ("3", {"BTC": 3, "ETH": 3, "TRON": 3}),
        ("eth:12, TRON:off", {"BTC": 6, "ETH": 12, "TRON": None}),
        ("BTC:0", {"BTC": 0, "ETH": 64, "TRON": 20}),
        ("ETH:10000", {"BTC": 6, "ETH": 10_000, "TRON": 20}),
    ],
)
def test_the_guard_is_on_by_default_and_set_per_network(
    raw: str, expected: dict[str, int | None]
) -> None:
    assert parse_reuse_confirmations(raw, NETWORKS) == expected


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("-1", "the value must be a whole number from 0 to 10000 or off, got '-1'"),
        ("ETH:twelve", "ETH must be a whole number from 0 to 10000 or off, got 'twelve'"),
        ("ETH:\u00b2", "ETH must be a whole number from 0 to 10000 or off, got '\u00b2'"),
        ("10001", "the value must be a whole number from 0 to 10000 or off, got '10001'"),
        (
            "ETH:5000000000000000000",
            "ETH must be a whole number from 0 to 10000 or off, got '5000000000000000000'",
        ),
        ("DOGE:3", "'DOGE' is not one of the supported networks"),
    ],
)
def test_a_bad_setting_stops_the_service_naming_the_variable(raw: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=f"^WALLET_REUSE_CONFIRMATIONS: {problem}"):
        parse_reuse_confirmations(raw, NETWORKS)


def wallet(release: int | None, reuse: int | None, scanned: int | None) -> Wallet:
    now = datetime.now(UTC)
    return Wallet("0x" + "1" * 40, "ETH", None, False, "", now, now, None, release, reuse, scanned)


def test_a_wallet_is_cooling_until_the_watcher_scans_its_reuse_height() -> None:
    assert wallet(100, 164, 163).state is WalletState.COOLING
    assert wallet(100, 164, 163).cooling_reason == (
        "waits for the ETH watcher to scan height 164 (scanned 163)"
    )
    assert wallet(100, 164, 164).state is WalletState.AVAILABLE
    assert wallet(None, 2**62 + 64, None).cooling_reason == (
        "waits for the next report of the ETH watcher"
    )
    # Not guarded (released with the guard off): available at once.
    assert wallet(100, None, None).state is WalletState.AVAILABLE
