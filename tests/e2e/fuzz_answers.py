"""What an OK answer of the fuzz test must say: decoded with the RPC's response type and held
to the limits README documents (the API table), so that an answer that should have been
refused, or one that breaks a documented bound, fails the test instead of passing as OK."""

import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from google.protobuf.message import Message

from exchange.order.v1 import order_service_pb2 as opb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb

# README, "The API in short".
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_ADDRESSES_PER_CALL = 1000
MAX_DEPOSITS_PER_REPORT = 1000

# The repeated field of each paginated answer.
PAGES = {
    "ListOrders": "orders",
    "ListOrderEvents": "events",
    "ListWallets": "wallets",
    "ListLateDeposits": "deposits",
    "ListDeposits": "deposits",
}


def page_limit(requested: int) -> int:
    """How many items a page may hold for a requested page_size (0: the default)."""
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def _is_amount(text: str) -> bool:
    """A decimal string, never a float's spelling."""
    try:
        return Decimal(text).is_finite() and "e" not in text.lower()
    except InvalidOperation:
        return False


def _order(order: opb.Order) -> list[str]:
    wrong = []
    if not _is_uuid(order.id):
        wrong.append(f"order id {order.id!r} is not a UUID")
    if not _is_amount(order.amount):
        wrong.append(f"order amount {order.amount!r} is not a decimal string")
    if order.wallet_address and order.queue_position:
        wrong.append("an order with an address and a queue place")
    return wrong


def _pool_stats(response: wpb.GetPoolStatsResponse) -> list[str]:
    wrong = []
    for n in response.networks:
        if n.total != n.available + n.allocated + n.cooling + n.disabled:
            wrong.append(f"{n.network}: total {n.total} is not the sum of the states")
        if n.held_by_watermark > n.cooling:
            wrong.append(f"{n.network}: more held by the watermark than cooling")
    return wrong


def _added(request: wpb.AddWalletsRequest, response: wpb.AddWalletsResponse) -> list[str]:
    wrong = []
    if len(request.addresses) > MAX_ADDRESSES_PER_CALL:
        wrong.append(f"{len(request.addresses)} addresses taken in one call")
    sent = {a.lower() for a in request.addresses}
    answered = [a.lower() for a in [*response.added, *response.duplicates]]
    if set(answered) != sent:
        wrong.append("added and duplicates are not the addresses sent")
    if len(set(response.added)) != len(response.added):
        wrong.append("an address added twice")
    return wrong


def _report(request: wpb.ReportDepositsRequest, response: wpb.ReportDepositsResponse) -> list[str]:
    wrong = []
    if len(request.deposits) > MAX_DEPOSITS_PER_REPORT:
        wrong.append(f"{len(request.deposits)} deposits taken in one report")
    if response.recorded + response.repeated != len({(d.txid, d.index) for d in request.deposits}):
        wrong.append("recorded and repeated do not account for the deposits sent")
    if response.late + response.unattributed > response.recorded:
        wrong.append("more late or unattributed than recorded")
    return wrong


Check = Callable[[Any, Any], list[str]]
CHECKS: dict[str, Check] = {
    "CreateOrder": lambda _, r: _order(r.order),
    "GetOrder": lambda _, r: _order(r.order),
    "UpdateOrderStatus": lambda _, r: _order(r.order),
    "ListOrders": lambda _, r: [w for o in r.orders for w in _order(o)],
    "GetPoolStats": lambda _, r: _pool_stats(r),
    "AddWallets": _added,
    "ReportDeposits": _report,
}


def wrong_with(name: str, request: Message, response: Message) -> list[str]:
    """What an OK answer of RPC `name` to `request` says that the contract rules out."""
    wrong = CHECKS.get(name, lambda _, __: [])(request, response)
    if name in PAGES:
        items: Sequence[Any] = getattr(response, PAGES[name])
        limit = page_limit(getattr(request, "page_size", 0))
        if len(items) > limit:
            wrong.append(f"{len(items)} items in a page of at most {limit}")
    return wrong
