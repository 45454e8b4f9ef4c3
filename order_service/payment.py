"""An order's payment status, from its counted deposits and the tolerance snapshotted when it
was created: part of the order service's domain (pure; no I/O here).

The rule, in the asset's own units (never converted):
- shortfall = expected - received, excess = received - expected, where received sums the
  confirmed, counted, on-time deposits of the order's asset;
- slack_under = max(under_pct% of expected, under_abs), slack_over likewise;
- OVERPAID when excess > slack_over; PAID when shortfall <= slack_under; PARTIAL when
  something was received; UNPAID otherwise.
The absolute slack covers what a percentage cannot: an exchange's withdrawal fee is a fixed
amount however small the order.
"""

import enum
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Protocol

from shared.assets import AssetTable
from shared.config import ConfigError
from shared.errors import FailedPrecondition, Violation

UNDER_VARIABLE = "PAYMENT_UNDERPAY_TOLERANCE"
OVER_VARIABLE = "PAYMENT_OVERPAY_TOLERANCE"
_HUNDRED = Decimal(100)
_PERCENT = re.compile(r"^([0-9]+(\.[0-9]+)?)%$")


class PaymentStatus(enum.StrEnum):
    UNPAID = "UNPAID"
    PARTIAL = "PARTIAL"
    PAID = "PAID"
    OVERPAID = "OVERPAID"


@dataclass(frozen=True)
class Tolerance:
    """How far a payment may fall short of, or exceed, the amount and still be PAID: a
    percent of the amount or an absolute amount of the asset, whichever is larger."""

    under_pct: Decimal = Decimal(0)
    under_abs: Decimal = Decimal(0)
    over_pct: Decimal = Decimal(0)
    over_abs: Decimal = Decimal(0)


NO_TOLERANCE = Tolerance()


@dataclass(frozen=True)
class Payment:
    status: PaymentStatus
    # Counted, on-time deposits of the order's asset: confirmed, and still confirming.
    received_confirmed: Decimal
    received_pending: Decimal


def payment_status(expected: Decimal, received: Decimal, tolerance: Tolerance) -> PaymentStatus:
    """The status of `received` (confirmed) against `expected` (see the module's rule)."""
    slack_under = max(tolerance.under_pct * expected / _HUNDRED, tolerance.under_abs)
    slack_over = max(tolerance.over_pct * expected / _HUNDRED, tolerance.over_abs)
    if received - expected > slack_over:
        return PaymentStatus.OVERPAID
    if expected - received <= slack_under and received > 0:
        return PaymentStatus.PAID
    if received > 0:
        return PaymentStatus.PARTIAL
    return PaymentStatus.UNPAID


class PaidDeposit(Protocol):
    """What the rule reads of a deposit (order_service.domain.OrderDeposit)."""

    @property
    def amount(self) -> Decimal: ...
    @property
    def asset(self) -> str | None: ...
    @property
    def late(self) -> bool: ...
    @property
    def counted(self) -> bool: ...
    @property
    def confirmed(self) -> bool: ...


# What COMPLETED requires when COMPLETE_REQUIRES_PAYMENT is on (unless a reason is given).
PAID_STATUSES = frozenset({PaymentStatus.PAID, PaymentStatus.OVERPAID})


def required_payment(
    completing: bool, reason: str, completion_requires_payment: bool
) -> frozenset[PaymentStatus] | None:
    """The payment statuses a status change requires (None: any). With the setting on,
    COMPLETED requires PAID or OVERPAID, unless the operator gives a reason (an override,
    kept in the history with the payment status it overrode)."""
    if completing and completion_requires_payment and not reason:
        return PAID_STATUSES
    return None


class PaymentRequired(FailedPrecondition):
    def __init__(
        self, order_id: uuid.UUID, status: PaymentStatus, received: Decimal, amount: Decimal
    ) -> None:
        super().__init__(
            f"status: order {order_id} is {status} ({received} of {amount} confirmed); "
            "COMPLETED requires PAID or OVERPAID, or a reason for completing it anyway"
        )
        self.violations = (
            Violation(
                type="PAYMENT_STATUS",
                subject=f"order:{order_id}",
                description=f"payment status {status}; required PAID or OVERPAID",
            ),
        )


def counts_toward_payment(deposit: PaidDeposit, asset: str) -> bool:
    """Only counted deposits of the order's asset that came while the order held the
    address; a late one is a case for the operator, never a change of a final order's
    payment."""
    return deposit.counted and deposit.asset == asset and not deposit.late


def evaluate(
    expected: Decimal, asset: str, deposits: Iterable[PaidDeposit], tolerance: Tolerance
) -> Payment:
    """The payment of an order expecting `expected` of `asset` ('' the coin)."""
    confirmed = pending = Decimal(0)
    for deposit in deposits:
        if not counts_toward_payment(deposit, asset):
            continue
        if deposit.confirmed:
            confirmed += deposit.amount
        else:
            pending += deposit.amount
    return Payment(payment_status(expected, confirmed, tolerance), confirmed, pending)


def _parse_tolerance(
    variable: str, raw: str, assets: AssetTable, pct_ceiling: Decimal
) -> tuple[Decimal, dict[tuple[str, str], Decimal]]:
    """`P%` and `NETWORK:CODE:AMOUNT` entries (CODE empty: the coin), comma-separated: the
    percent and the absolute amount per asset."""
    percent = Decimal(0)
    absolute: dict[tuple[str, str], Decimal] = {}
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        matched = _PERCENT.match(entry)
        if matched:
            percent = Decimal(matched.group(1))
            if percent >= pct_ceiling:
                raise ConfigError(f"{variable}: {entry!r}: a percent below {pct_ceiling}")
            continue
        network, _, rest = entry.partition(":")
        code, _, amount_text = rest.partition(":")
        asset = assets.get(network.strip().upper(), code.strip().upper())
        if asset is None:
            raise ConfigError(
                f"{variable}: {entry!r}: expected P% or NETWORK:CODE:AMOUNT of a known asset"
            )
        try:
            amount = Decimal(amount_text.strip())
        except InvalidOperation:
            raise ConfigError(f"{variable}: {entry!r}: {amount_text!r} is not a decimal") from None
        exponent = amount.normalize().as_tuple().exponent
        if (
            not amount.is_finite()
            or amount < 0
            or (isinstance(exponent, int) and -exponent > asset.decimals)
        ):
            raise ConfigError(
                f"{variable}: {entry!r}: an amount of at least 0 with at most "
                f"{asset.decimals} decimals"
            )
        absolute[asset.key] = amount
    return percent, absolute


@dataclass(frozen=True)
class TolerancePolicy:
    """The settings; each order takes a snapshot (`for_asset`) when it is created, so a
    change applies to new orders only."""

    under_pct: Decimal = Decimal(0)
    over_pct: Decimal = Decimal(0)
    under_abs: Mapping[tuple[str, str], Decimal] = field(default_factory=dict)
    over_abs: Mapping[tuple[str, str], Decimal] = field(default_factory=dict)

    def for_asset(self, network: str, code: str) -> Tolerance:
        key = (network, code)
        return Tolerance(
            self.under_pct,
            self.under_abs.get(key, Decimal(0)),
            self.over_pct,
            self.over_abs.get(key, Decimal(0)),
        )

    @classmethod
    def parse(cls, under: str, over: str, assets: AssetTable) -> "TolerancePolicy":
        """PAYMENT_UNDERPAY_TOLERANCE (percent below 100) and PAYMENT_OVERPAY_TOLERANCE
        (percent below 1000); ConfigError naming the variable and the entry."""
        under_pct, under_abs = _parse_tolerance(UNDER_VARIABLE, under, assets, _HUNDRED)
        over_pct, over_abs = _parse_tolerance(OVER_VARIABLE, over, assets, Decimal(1000))
        return cls(under_pct, over_pct, under_abs, over_abs)


NO_TOLERANCES = TolerancePolicy()
