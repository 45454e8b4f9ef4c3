"""A service without a credential for a role it needs refuses to start, naming what is
missing (the order service also needs its own SERVICE_TOKEN, in any environment)."""

from pathlib import Path

import pytest

from order_service.config import OrderSettings
from shared.auth import CLIENT, OPERATOR, SERVICE, WATCHER, Principal, missing_roles
from shared.config import ConfigError
from wallet_pool_service.config import PoolSettings

CREDENTIAL_VARIABLES = (
    "OPERATOR_TOKEN",
    "CLIENT_TOKEN",
    "SERVICE_TOKEN",
    "WATCHER_TOKEN",
    "AUTH_TOKENS",
    "AUTH_TOKENS_FILE",
)


@pytest.fixture(autouse=True)
def no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        *CREDENTIAL_VARIABLES,
        "APP_ENV",
        "SUPPORTED_NETWORKS",
        "WALLET_REUSE_CONFIRMATIONS",
    ):
        monkeypatch.delenv(name, raising=False)


def test_a_needed_role_without_credential_is_named_with_its_reason_and_sources() -> None:
    tokens = {"c": Principal("client", CLIENT)}
    [problem] = missing_roles(tokens, {OPERATOR: "operators finish orders"})
    assert problem == (
        "no credential for the 'operator' role (operators finish orders): set OPERATOR_TOKEN "
        "or a name:operator:token entry in AUTH_TOKENS (or AUTH_TOKENS_FILE)"
    )


def test_any_credential_of_the_role_will_do_and_roles_not_needed_are_optional() -> None:
    tokens = {"o": Principal("alice", OPERATOR), "s": Principal("orders-2", SERVICE)}
    assert missing_roles(tokens, {OPERATOR: "x", SERVICE: "y"}) == []
    assert missing_roles({}, {}) == []
    assert len(missing_roles({}, {OPERATOR: "x", SERVICE: "y"})) == 2


def test_the_order_service_in_production_refuses_to_start_without_service_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("OPERATOR_TOKEN", "op")
    # A service credential given to others does not make one the order service can send.
    monkeypatch.setenv("AUTH_TOKENS", "orders:service:svc")
    with pytest.raises(
        ConfigError,
        match=r"^SERVICE_TOKEN is required: the wallet pool accepts "
        r"AllocateWallet and ReleaseWallet only from the 'service' role",
    ):
        OrderSettings.from_env()


def test_the_order_service_refuses_to_start_without_service_token_in_development_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPERATOR_TOKEN", "op")
    with pytest.raises(ConfigError, match="SERVICE_TOKEN is required"):
        OrderSettings.from_env()


@pytest.mark.parametrize("environment", ["development", "production"])
def test_the_order_service_refuses_to_start_without_an_operator_credential(
    monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    monkeypatch.setenv("APP_ENV", environment)
    monkeypatch.setenv("CLIENT_TOKEN", "cl")
    monkeypatch.setenv("SERVICE_TOKEN", "svc")
    with pytest.raises(
        ConfigError, match=r"^no credential for the 'operator' role \(only operators move orders"
    ):
        OrderSettings.from_env()


def test_the_order_service_names_everything_missing_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    with pytest.raises(ConfigError) as raised:
        OrderSettings.from_env()
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("SERVICE_TOKEN is required")
    assert "; no credential for the 'operator' role" in message


@pytest.mark.parametrize(
    ("present", "missing"),
    [
        ({"OPERATOR_TOKEN": "op"}, "'service' role (only the order service allocates"),
        ({"SERVICE_TOKEN": "svc", "CLIENT_TOKEN": "cl"}, "'operator' role (only operators add"),
    ],
)
@pytest.mark.parametrize("environment", ["development", "production"])
def test_the_wallet_pool_refuses_to_start_without_a_role_it_needs(
    monkeypatch: pytest.MonkeyPatch, environment: str, present: dict[str, str], missing: str
) -> None:
    monkeypatch.setenv("APP_ENV", environment)
    for name, value in present.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as raised:
        PoolSettings.from_env()
    assert str(raised.value).startswith(f"no credential for the {missing}")


def test_credentials_from_auth_tokens_and_its_file_satisfy_both_services(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text("# operators\nalice:operator:op-alice\neth-node:watcher:w-eth\n")
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("AUTH_TOKENS_FILE", str(tokens_file))
    monkeypatch.setenv("AUTH_TOKENS", "orders:service:svc")
    assert {p.role for p in PoolSettings.from_env().tokens.values()} == {
        OPERATOR,
        SERVICE,
        WATCHER,
    }
    monkeypatch.setenv("SERVICE_TOKEN", "svc")
    assert OrderSettings.from_env().service_token == "svc"


def test_the_wallet_pool_with_the_reuse_guard_on_refuses_to_start_without_a_watcher(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPERATOR_TOKEN", "op")
    monkeypatch.setenv("SERVICE_TOKEN", "svc")
    monkeypatch.setenv("WALLET_REUSE_CONFIRMATIONS", "BTC:off,TRON:off")
    with pytest.raises(ConfigError) as raised:
        PoolSettings.from_env()
    assert str(raised.value).startswith("no credential for the 'watcher' role (released wallets")
    assert "WATCHER_TOKEN" in str(raised.value)
    # With the guard off everywhere, no watcher is needed; with one, it starts guarded.
    monkeypatch.setenv("WALLET_REUSE_CONFIRMATIONS", "off")
    assert set(PoolSettings.from_env().reuse_confirmations.values()) == {None}
    monkeypatch.setenv("WALLET_REUSE_CONFIRMATIONS", "")
    monkeypatch.setenv("WATCHER_TOKEN", "w")
    assert PoolSettings.from_env().reuse_confirmations == {"BTC": 6, "ETH": 64, "TRON": 20}
