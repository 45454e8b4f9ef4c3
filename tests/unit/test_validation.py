import random
import uuid
from decimal import Decimal

import pytest

from order_service.domain import parse_amount, parse_reason, parse_request_id, retry_delay
from order_service.lifecycle import decode_order_page_token
from shared.errors import InvalidArgument
from shared.networks import parse_network
from shared.validation import parse_uuid


@pytest.mark.parametrize(
    ("text", "value"),
    [("0.015", "0.015"), ("1", "1"), (" 2.50 ", "2.50"), ("0.000000000000000001", "1E-18")],
)
def test_plain_positive_decimals_are_amounts(text: str, value: str) -> None:
    assert parse_amount(text) == Decimal(value)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0",
        "0.0",
        "-1",
        "+1",
        "1e3",
        "1E-2",
        "NaN",
        "Infinity",
        "1,5",
        "1.",
        ".5",
        "abc",
        "1.0000000000000000001",
        "1" * 25,
        "١٢",
    ],
)
def test_anything_else_is_refused_naming_the_amount_field(text: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_amount(text)
    assert raised.value.field == "amount"


def test_networks_are_case_insensitive_but_must_be_supported() -> None:
    assert parse_network("btc", ("BTC", "ETH")) == "BTC"
    for bad in ["", "DOGE", "b t c", "💰"]:
        with pytest.raises(InvalidArgument, match=r"^network: "):
            parse_network(bad, ("BTC", "ETH"))


def test_uuids_are_checked_and_the_field_is_named() -> None:
    value = uuid.uuid4()
    assert parse_uuid(str(value), "order_id") == value
    for bad in ["", "123", "not-a-uuid", "x" * 1000]:
        with pytest.raises(InvalidArgument, match=r"^order_id: "):
            parse_uuid(bad, "order_id")


def test_request_id_and_reason_have_length_limits() -> None:
    assert parse_request_id("  ") is None
    assert parse_request_id("abc") == "abc"
    with pytest.raises(InvalidArgument, match=r"^request_id: "):
        parse_request_id("x" * 129)
    with pytest.raises(InvalidArgument, match=r"^reason: "):
        parse_reason("x" * 501)


def test_page_tokens_are_opaque_and_foreign_tokens_are_refused() -> None:
    for bad in ["garbage", "e30=", "!!!", "WzFd", "eyJ0IjogMX0="]:
        with pytest.raises(InvalidArgument, match=r"^page_token: "):
            decode_order_page_token(bad)


def test_release_retry_delay_grows_with_jitter_up_to_the_cap() -> None:
    rng = random.Random(7)
    delays = [retry_delay(attempt, 0.5, 10.0, rng) for attempt in range(1, 12)]
    assert all(0.25 <= d <= 10.0 for d in delays)
    assert delays[0] <= 0.5 and delays[-1] >= 5.0


@pytest.mark.parametrize("text", ["a\x00b", "line\nbreak", "\x1b[31m"])
def test_control_characters_are_refused_in_free_text(text: str) -> None:
    with pytest.raises(InvalidArgument, match=r"^request_id: contains control"):
        parse_request_id(text)
    with pytest.raises(InvalidArgument, match=r"^reason: contains control"):
        parse_reason(text)
    assert parse_reason("  customer asked — ünïcode ok ") == "customer asked — ünïcode ok"
