"""What `make run` says at start about the reuse guard and its heights, and what it sets."""

from pathlib import Path

import pytest

from scripts.run_local import (
    DEV_REUSE_CONFIRMATIONS,
    assets_line,
    dev_chain_networks,
    guard_line,
    service_env,
)
from shared import config
from shared.assets import parse_assets

TOKENS = {"operator": "o", "client": "c", "service": "s", "watcher": "w"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "APP_ENV",
        "WALLET_REUSE_CONFIRMATIONS",
        "DEV_CHAIN",
        "SUPPORTED_NETWORKS",
        "ASSETS",
    ):
        monkeypatch.delenv(name, raising=False)


def test_in_development_the_guard_is_on_for_two_blocks_of_the_development_chains() -> None:
    env = service_env(Path("/tmp/x"), "postgresql://db", TOKENS)
    assert env["WALLET_REUSE_CONFIRMATIONS"] == DEV_REUSE_CONFIRMATIONS == "2"
    assert env["WATCHER_TOKEN"] == "w"
    assert dev_chain_networks() == ("BTC", "ETH", "TRON")
    assert guard_line(env, dev_chain_networks(), 1.0) == (
        "reuse guard: on, BTC 2 blocks, ETH 2 blocks, TRON 2 blocks past a release "
        "[WALLET_REUSE_CONFIRMATIONS=2]; heights from make run's development chains "
        "(BTC, ETH, TRON), a block every 1 s, reporting with the watcher token"
    )


def test_a_setting_of_the_users_own_is_kept_and_said(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WALLET_REUSE_CONFIRMATIONS", "ETH:off")
    env = service_env(Path("/tmp/x"), "postgresql://db", TOKENS)
    assert env["WALLET_REUSE_CONFIRMATIONS"] == "ETH:off"
    line = guard_line(env, ("BTC", "ETH", "TRON"), 0.5)
    assert line.startswith(
        "reuse guard: on, BTC 6 blocks, TRON 20 blocks past a release (off for ETH) "
        "[WALLET_REUSE_CONFIRMATIONS=ETH:off]; "
    )
    assert "a block every 0.5 s" in line


def test_the_guard_off_and_no_chain_are_said(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WALLET_REUSE_CONFIRMATIONS", "off")
    monkeypatch.setenv("DEV_CHAIN", "off")
    env = service_env(Path("/tmp/x"), "postgresql://db", TOKENS)
    assert dev_chain_networks() == ()
    assert guard_line(env, dev_chain_networks(), 1.0) == (
        "reuse guard: off (released wallets are reused after the cooldown alone) "
        "[WALLET_REUSE_CONFIRMATIONS=off]; heights from your own watchers, with the watcher "
        "token (make run starts no chain: DEV_CHAIN=off)"
    )


def test_production_gets_no_chain_and_the_production_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    env = service_env(Path("/tmp/x"), "postgresql://db", TOKENS)
    assert "WALLET_REUSE_CONFIRMATIONS" not in env
    assert dev_chain_networks() == ()
    line = guard_line(env, (), 1.0)
    assert line.startswith("reuse guard: on, BTC 6 blocks, ETH 64 blocks, TRON 20 blocks")
    assert line.endswith("(make run starts no chain: APP_ENV=production)")


def test_a_bad_guard_setting_is_a_configuration_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WALLET_REUSE_CONFIRMATIONS", "ETH:many")
    env = service_env(Path("/tmp/x"), "postgresql://db", TOKENS)
    with pytest.raises(config.ConfigError, match="WALLET_REUSE_CONFIRMATIONS"):
        guard_line(env, (), 1.0)


def test_in_development_every_asset_is_confirmed_at_two_blocks() -> None:
    env = service_env(Path("/tmp/x"), "postgresql://db", TOKENS)
    # What the services read from it: the built-in assets, each at 2 confirmations.
    table = parse_assets(env["ASSETS"], ("BTC", "ETH", "TRON"))
    assert {(a.network, a.symbol, a.confirmations) for a in table.assets} == {
        ("BTC", "BTC", 2),
        ("ETH", "ETH", 2),
        ("ETH", "USDT", 2),
        ("ETH", "USDC", 2),
        ("TRON", "TRX", 2),
        ("TRON", "USDT", 2),
    }
    assert str(table.get("ETH", "").min_deposit) == "0.0005"  # type: ignore[union-attr]
    assert assets_line(env).startswith(
        "deposits: CONFIRMED at 2 confirmations for every asset (make run's demo setting, "
        "as ASSETS is unset"
    )


def test_assets_of_the_users_own_are_kept_and_production_gets_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ASSETS", "ETH:::18:0.01:12")
    env = service_env(Path("/tmp/x"), "postgresql://db", TOKENS)
    assert env["ASSETS"] == "ETH:::18:0.01:12"
    assert assets_line(env) == "deposits: confirmations as your ASSETS sets them (ListAssets)"
    monkeypatch.delenv("ASSETS")
    monkeypatch.setenv("APP_ENV", "production")
    env = service_env(Path("/tmp/x"), "postgresql://db", TOKENS)
    assert "ASSETS" not in env
    assert assets_line(env).startswith("deposits: the built-in confirmations")
