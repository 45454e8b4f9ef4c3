import pytest

from shared.auth import ANONYMOUS, Authenticator, Principal
from shared.errors import PermissionDenied, Unauthenticated
from shared.sql import load_queries, parse_queries

METHOD = "/pkg.Service/Admin"


def test_named_blocks_are_parsed_with_descriptions_dropped() -> None:
    text = "-- first --\n-- what it does\nSELECT 1\n\n-- second --\nSELECT\n  2\n"
    assert parse_queries(text) == {"first": "SELECT 1", "second": "SELECT\n  2"}


@pytest.mark.parametrize(
    "text", ["-- a --\nSELECT 1\n-- a --\nSELECT 2", "-- empty --\n-- only a note\n"]
)
def test_duplicate_or_empty_blocks_are_errors(text: str) -> None:
    with pytest.raises(ValueError, match=r"query 'a' is defined twice|query 'empty' is empty"):
        parse_queries(text)


@pytest.mark.parametrize("package", ["order_service", "wallet_pool_service"])
def test_each_service_query_file_loads(package: str) -> None:
    assert len(load_queries(package)) >= 10


def _auth() -> Authenticator:
    return Authenticator(
        {"s3cret": Principal("ops", "operator")}, {METHOD: frozenset({"operator"})}
    )


def test_methods_without_a_policy_are_open() -> None:
    assert _auth().authorize("/pkg.Service/Read", []) is ANONYMOUS


def test_the_right_bearer_token_identifies_the_operator() -> None:
    assert _auth().authorize(METHOD, [("authorization", "Bearer s3cret")]) == Principal(
        "ops", "operator"
    )


@pytest.mark.parametrize(
    ("metadata", "error"),
    [
        ([], Unauthenticated),
        ([("authorization", "Basic abc")], Unauthenticated),
        ([("authorization", "Bearer wrong")], PermissionDenied),
        ([("authorization", "Bearer s3cret-but-longer")], PermissionDenied),
    ],
)
def test_missing_or_wrong_credentials_are_refused_without_echoing_the_token(
    metadata: list[tuple[str, str]], error: type[Exception]
) -> None:
    with pytest.raises(error) as raised:
        _auth().authorize(METHOD, metadata)
    assert "s3cret" not in str(raised.value) and "wrong" not in str(raised.value)


def test_a_token_with_another_role_is_denied() -> None:
    auth = Authenticator({"t": Principal("svc", "service")}, {METHOD: frozenset({"operator"})})
    with pytest.raises(PermissionDenied, match="role 'service'"):
        auth.authorize(METHOD, [("authorization", "Bearer t")])
