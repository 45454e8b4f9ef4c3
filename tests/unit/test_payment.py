"""The payment status rule (order_service/payment.py): a table of cases, in the asset's own
units, and the tolerance settings refused in one line naming the variable."""

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from order_service.domain import DepositDisposition, DepositStatus, OrderDeposit
from order_service.payment import (
    PaymentStatus,
    Tolerance,
    TolerancePolicy,
    evaluate,
    payment_status,
)
from shared.assets import parse_assets
from shared.config import ConfigError

D = Decimal
UNPAID, PARTIAL, PAID, OVERPAID = (
    PaymentStatus.UNPAID,
    PaymentStatus.PARTIAL,
    PaymentStatus.PAID,
    PaymentStatus.OVERPAID,
)
NONE = Tolerance()
# 0.5 % under, or 1 USDT (an exchange's withdrawal fee), whichever is more; 1 % over.
FEES = Tolerance(under_pct=D("0.5"), under_abs=D("1"), over_pct=D("1"), over_abs=D("0"))


@pytest.mark.parametrize(
    ("expected", "received", "tolerance", "status"),
    [
        ("100", "0", NONE, UNPAID),
        ("100", "100", NONE, PAID),
        ("100", "99.999999", NONE, PARTIAL),
        ("100", "100.000001", NONE, OVERPAID),
        # Withdrawal fees: 1 USDT short of a 100 USDT order is within the absolute slack
        # (0.5 % would be only 0.5); 1.01 short is not.
        ("100", "99", FEES, PAID),
        ("100", "98.99", FEES, PARTIAL),
        # On a big order the percent is the larger slack.
        ("10000", "9950", FEES, PAID),
        ("10000", "9949.99", FEES, PARTIAL),
        # Over: up to 1 % more is still PAID, beyond it OVERPAID.
        ("100", "101", FEES, PAID),
        ("100", "101.01", FEES, OVERPAID),
        # A slack larger than the order never makes nothing PAID.
        ("0.5", "0", FEES, UNPAID),
        ("0.5", "0.1", FEES, PAID),
    ],
)
def test_payment_status(expected: str, received: str, tolerance: Tolerance, status: str) -> None:
    assert payment_status(D(expected), D(received), tolerance) is status


@dataclass(frozen=True)
class Paid:
    amount: str
    asset: str | None = "USDT"
    disposition: DepositDisposition = DepositDisposition.COUNTED
    late: bool = False
    confirmations: int = 20
    required: int | None = 20
    reverted: bool = False

    def deposit(self) -> OrderDeposit:
        # As the pool gives it: confirmed at the required confirmations.
        if self.reverted:
            status = DepositStatus.REVERTED
        elif self.required is None or self.confirmations >= self.required:
            status = DepositStatus.CONFIRMED
        else:
            status = DepositStatus.CONFIRMING
        return OrderDeposit(
            txid="0x" + self.amount,
            index=0,
            amount=D(self.amount),
            address="T...",
            block_height=1,
            block_time=datetime.now(UTC),
            late=self.late,
            asset=self.asset,
            disposition=self.disposition,
            confirmations=self.confirmations,
            required_confirmations=self.required,
            status=status,
        )


@pytest.mark.parametrize(
    ("deposits", "status", "confirmed", "pending"),
    [
        ([], UNPAID, "0", "0"),
        # Split payments add up.
        ([Paid("60"), Paid("40")], PAID, "100", "0"),
        ([Paid("60")], PARTIAL, "60", "0"),
        # Still confirming: pending, not yet paid.
        ([Paid("60"), Paid("40", confirmations=3)], PARTIAL, "60", "40"),
        ([Paid("100", confirmations=0)], UNPAID, "0", "100"),
        # Recorded before confirmations were tracked: taken as confirmed.
        ([Paid("100", confirmations=0, required=None)], PAID, "100", "0"),
        # Only counted deposits of the order's asset that came in time count.
        ([Paid("100", asset="", disposition=DepositDisposition.WRONG_ASSET)], UNPAID, "0", "0"),
        ([Paid("100", asset=None, disposition=DepositDisposition.UNKNOWN_ASSET)], UNPAID, "0", "0"),
        ([Paid("0.5", disposition=DepositDisposition.DUST), Paid("100")], PAID, "100", "0"),
        ([Paid("100", late=True)], UNPAID, "0", "0"),
        ([Paid("100"), Paid("50")], OVERPAID, "150", "0"),
        # A reverted deposit (a reorg, a replacement) never counts, confirmed or not.
        ([Paid("100", reverted=True)], UNPAID, "0", "0"),
        ([Paid("60"), Paid("40", reverted=True)], PARTIAL, "60", "0"),
        ([Paid("40", confirmations=1, reverted=True), Paid("100")], PAID, "100", "0"),
    ],
)
def test_evaluate_sums_only_what_counts(
    deposits: list[Paid], status: PaymentStatus, confirmed: str, pending: str
) -> None:
    payment = evaluate(D("100"), "USDT", [d.deposit() for d in deposits], NONE)

    assert (payment.status, payment.received_confirmed, payment.received_pending) == (
        status,
        D(confirmed),
        D(pending),
    )


ASSETS = parse_assets("", ("BTC", "ETH", "TRON"))


def test_the_settings_give_each_asset_its_snapshot() -> None:
    policy = TolerancePolicy.parse("0.5%, TRON:USDT:1, BTC::0.0001", "2%", ASSETS)

    assert policy.for_asset("TRON", "USDT") == Tolerance(D("0.5"), D("1"), D("2"), D("0"))
    assert policy.for_asset("BTC", "") == Tolerance(D("0.5"), D("0.0001"), D("2"), D("0"))
    assert policy.for_asset("ETH", "USDT") == Tolerance(D("0.5"), D("0"), D("2"), D("0"))


@pytest.mark.parametrize(
    ("under", "over", "named"),
    [
        ("100%", "", "PAYMENT_UNDERPAY_TOLERANCE: '100%'"),
        ("", "1000%", "PAYMENT_OVERPAY_TOLERANCE: '1000%'"),
        ("-1%", "", "PAYMENT_UNDERPAY_TOLERANCE: '-1%'"),
        ("TRON:DOGE:1", "", "PAYMENT_UNDERPAY_TOLERANCE: 'TRON:DOGE:1'"),
        ("TRON:USDT:x", "", "PAYMENT_UNDERPAY_TOLERANCE: 'TRON:USDT:x'"),
        ("TRON:USDT:-1", "", "PAYMENT_UNDERPAY_TOLERANCE: 'TRON:USDT:-1'"),
        ("", "TRON:USDT:0.0000001", "PAYMENT_OVERPAY_TOLERANCE: 'TRON:USDT:0.0000001'"),
    ],
)
def test_a_bad_tolerance_is_refused_naming_the_variable_and_the_entry(
    under: str, over: str, named: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        TolerancePolicy.parse(under, over, ASSETS)
    assert str(refused.value).startswith(named)
    assert "\n" not in str(refused.value)
