import itertools
from datetime import UTC, datetime
from decimal import Decimal
from uuid import uuid4

import pytest

from order_service.domain import (
    IllegalTransition,
    Order,
    OrderStatus,
    is_cancelled_order,
    is_completed_order,
    is_final_status,
    needs_change,
    only_source,
)

P, R, C, X = (
    OrderStatus.PENDING,
    OrderStatus.PROCESSING,
    OrderStatus.COMPLETED,
    OrderStatus.CANCELLED,
)
# Written out by hand from the lifecycle, independently of the table in the domain module.
EXPECTED_ALLOWED = {(P, R), (P, X), (R, C), (R, X)}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(OrderStatus, repeat=2)))
def test_every_pair_of_statuses_follows_the_lifecycle(
    current: OrderStatus, target: OrderStatus
) -> None:
    if current is target:
        assert needs_change(current, target) is False
    elif (current, target) in EXPECTED_ALLOWED:
        assert needs_change(current, target) is True
    else:
        with pytest.raises(IllegalTransition) as raised:
            needs_change(current, target)
        assert str(current) in str(raised.value) and str(target) in str(raised.value)


@pytest.mark.parametrize("target", list(OrderStatus))
def test_a_status_reached_from_exactly_one_other_names_it_as_its_only_source(
    target: OrderStatus,
) -> None:
    sources = [current for current, to in EXPECTED_ALLOWED if to is target]
    assert only_source(target) == (sources[0] if len(sources) == 1 else None)


def test_only_completed_and_cancelled_are_final() -> None:
    assert {s for s in OrderStatus if is_final_status(s)} == {C, X}


def test_illegal_transition_message_names_the_allowed_statuses() -> None:
    with pytest.raises(IllegalTransition, match="allowed: CANCELLED, PROCESSING"):
        needs_change(P, C)
    with pytest.raises(IllegalTransition, match="the status is final"):
        needs_change(C, R)


def _order(status: OrderStatus) -> Order:
    now = datetime.now(UTC)
    return Order(uuid4(), status, "BTC", Decimal("1"), None, None, None, now, now, "client")


def test_completed_and_cancelled_helpers_tell_the_final_statuses_apart() -> None:
    assert [is_completed_order(_order(s)) for s in OrderStatus] == [False, False, True, False]
    assert [is_cancelled_order(_order(s)) for s in OrderStatus] == [False, False, False, True]
