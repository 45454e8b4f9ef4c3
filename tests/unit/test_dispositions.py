"""Every deposit gets exactly one disposition, decided by a pure function: spam tokens and
dust never count, a known asset other than the order's is set aside for the operator."""

from decimal import Decimal

import pytest

from shared.assets import Asset, parse_assets
from wallet_pool_service.deposits import (
    Disposition,
    classify,
    disposition_before_attribution,
)

ASSETS = parse_assets("", ("BTC", "ETH", "TRON"))
ETH = ASSETS.get("ETH", "")
USDT = ASSETS.get("ETH", "USDT")
TRX = ASSETS.get("TRON", "")


def asset(value: Asset | None) -> Asset:
    assert value is not None
    return value


@pytest.mark.parametrize(
    ("deposited", "amount", "expected", "disposition"),
    [
        # An order of USDT paid in USDT: counted, from the minimum on.
        (USDT, "125.5", "USDT", Disposition.COUNTED),
        (USDT, "1", "USDT", Disposition.COUNTED),
        (USDT, "0.999999", "USDT", Disposition.DUST),
        # No order held the address: a known asset above the minimum is counted (late or
        # unattributed, it is real money someone paid).
        (USDT, "50", None, Disposition.COUNTED),
        (ETH, "0.0005", None, Disposition.COUNTED),
        (ETH, "0.000000000000000001", None, Disposition.DUST),  # one wei to a released wallet
        # The coin to a USDT order, and USDT to a coin order: set aside, never summed.
        (ETH, "0.3", "USDT", Disposition.WRONG_ASSET),
        (USDT, "125.5", "", Disposition.WRONG_ASSET),
        # A few cents of the wrong asset are dust, not an operator's case.
        (ETH, "0.0001", "USDT", Disposition.DUST),
        # An unknown contract (fake USDT) is spam whatever its amount and the order.
        (None, "1000000", "USDT", Disposition.UNKNOWN_ASSET),
        (None, "0.1", None, Disposition.UNKNOWN_ASSET),
        (None, "125.5", "", Disposition.UNKNOWN_ASSET),
        (TRX, "1", "", Disposition.COUNTED),
        (TRX, "0.999999", "", Disposition.DUST),
    ],
)
def test_classification(
    deposited: Asset | None, amount: str, expected: str | None, disposition: Disposition
) -> None:
    assert classify(deposited, Decimal(amount), expected) is disposition


@pytest.mark.parametrize(
    ("deposited", "amount", "before"),
    [
        (None, "5", Disposition.UNKNOWN_ASSET),
        (USDT, "0.5", Disposition.DUST),
        # Counted or wrong asset: that depends on the order holding the address.
        (USDT, "5", None),
        (ETH, "1", None),
    ],
)
def test_what_is_decided_before_attribution_agrees_with_the_whole_rule(
    deposited: Asset | None, amount: str, before: Disposition | None
) -> None:
    assert disposition_before_attribution(deposited, Decimal(amount)) is before
    for expected in (None, "", "USDT", "USDC"):
        full = classify(deposited, Decimal(amount), expected)
        if before is not None:
            assert full is before
        else:
            assert full in (Disposition.COUNTED, Disposition.WRONG_ASSET)


def test_every_disposition_is_reachable_and_exactly_one_per_deposit() -> None:
    seen = {
        classify(deposited, Decimal(amount), expected)
        for deposited in (None, asset(USDT), asset(ETH))
        for amount in ("0.0000001", "0.5", "2")
        for expected in (None, "", "USDT")
    }
    assert seen == set(Disposition)
