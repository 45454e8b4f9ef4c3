from datetime import UTC, datetime
from decimal import Decimal
from uuid import uuid4

import pytest

from order_service.domain import Order, OrderNotFound, OrderScope, OrderStatus
from shared.auth import ANONYMOUS, SERVICE, SYSTEM, Principal
from shared.errors import PermissionDenied


def _order(created_by: str) -> Order:
    now = datetime.now(UTC)
    return Order(
        uuid4(), OrderStatus.PENDING, "BTC", Decimal("1"), None, None, None, now, now, created_by
    )


def test_an_operator_sees_every_order_and_a_client_only_the_ones_it_created() -> None:
    alices, bobs, legacy = _order("alice"), _order("bob"), _order("")
    operator = OrderScope.of(Principal("ops-1", "operator"))
    alice = OrderScope.of(Principal("alice", "client"))
    assert [operator.sees(o) for o in (alices, bobs, legacy)] == [True, True, True]
    assert [alice.sees(o) for o in (alices, bobs, legacy)] == [True, False, False]
    assert (operator.creator, alice.creator) == (None, "alice")


def test_an_order_out_of_scope_is_not_found_with_the_message_of_an_unknown_one() -> None:
    bobs = _order("bob")
    alice = OrderScope.created_by("alice")
    with pytest.raises(OrderNotFound) as hidden:
        alice.require_visible(bobs.id, bobs)
    with pytest.raises(OrderNotFound) as unknown:
        alice.require_visible(bobs.id, None)
    assert str(hidden.value) == str(unknown.value) == f"order_id: no order {bobs.id}"
    assert alice.require_visible(bobs.id, _order("alice")).created_by == "alice"


@pytest.mark.parametrize("principal", [Principal("orders", SERVICE), SYSTEM, ANONYMOUS])
def test_roles_that_read_no_orders_get_no_scope(principal: Principal) -> None:
    with pytest.raises(PermissionDenied):
        OrderScope.of(principal)


def test_a_creators_scope_needs_a_name() -> None:
    with pytest.raises(ValueError, match="name"):
        OrderScope.created_by("")
