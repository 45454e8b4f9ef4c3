"""gRPC face of the order service: protobuf in, use case, protobuf out. Errors are mapped by
the shared interceptor."""

from collections.abc import AsyncIterator, Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

import grpc

from exchange.order.v1 import order_service_pb2 as pb
from exchange.order.v1 import order_service_pb2_grpc as pb_grpc
from order_service import domain
from order_service.events import EventFilter, EventType, OrderEvent
from order_service.manager import OrderManager
from order_service.payment import PaymentStatus
from shared.auth import CLIENT, OPERATOR, SUBSCRIBER, current_principal, method_policy
from shared.errors import InvalidArgument
from shared.networks import parse_network
from shared.proto import from_pb, same_fields, to_pb
from shared.timestamps import parse_timestamp, to_timestamp
from shared.validation import parse_uuid

_SERVICE = pb.DESCRIPTOR.services_by_name["OrderService"]
SERVICE_NAME = _SERVICE.full_name
_READERS = frozenset({CLIENT, OPERATOR})
_LOG_READERS = frozenset({OPERATOR, SUBSCRIBER})
METHOD_ROLES = method_policy(
    SERVICE_NAME,
    _SERVICE.methods_by_name,
    {
        "CreateOrder": _READERS,
        "GetOrder": _READERS,
        "ListOrders": _READERS,
        "GetOrderHistory": _READERS,
        "UpdateOrderStatus": frozenset({OPERATOR}),
        "WatchOrder": _READERS,
        # The event log shows every order: for operators and the systems around the office.
        "ListOrderEvents": _LOG_READERS,
        "WatchOrderEvents": _LOG_READERS,
    },
)

Context = grpc.aio.ServicerContext[Any, Any]

_STATUS_TO_PB = to_pb(domain.OrderStatus, pb.OrderStatus, "ORDER_STATUS_")
_STATUS_FROM_PB = from_pb(_STATUS_TO_PB)
_ALLOCATION_TO_PB = to_pb(domain.Allocation, pb.Allocation, "ALLOCATION_")
_EVENT_TYPE_TO_PB = to_pb(EventType, pb.OrderEventType, "ORDER_EVENT_TYPE_")
_EVENT_TYPE_FROM_PB = from_pb(_EVENT_TYPE_TO_PB)
_DEPOSIT_STATUS_TO_PB = to_pb(domain.DepositStatus, pb.DepositStatus, "DEPOSIT_STATUS_")
_DISPOSITION_TO_PB = to_pb(domain.DepositDisposition, pb.DepositDisposition, "DEPOSIT_DISPOSITION_")
_PAYMENT_TO_PB = to_pb(PaymentStatus, pb.PaymentStatus, "PAYMENT_STATUS_")
_RELEASE_TO_PB = to_pb(domain.WalletRelease, pb.WalletRelease, "WALLET_RELEASE_")


def _payment_to_pb(status: PaymentStatus | None) -> "pb.PaymentStatus.ValueType":
    return _PAYMENT_TO_PB[status] if status else pb.PAYMENT_STATUS_UNSPECIFIED


def _decimal(value: Decimal | None) -> str:
    return str(value) if value is not None else ""


def parse_status(number: int, *, required: bool) -> domain.OrderStatus | None:
    if number == pb.ORDER_STATUS_UNSPECIFIED and not required:
        return None
    status: domain.OrderStatus | None = _STATUS_FROM_PB.get(number)
    if status is None:
        raise InvalidArgument("status", f"{number} is not a valid order status")
    return status


def optional_time(request: pb.ListOrdersRequest, field: str) -> datetime | None:
    if not request.HasField(field):  # type: ignore[arg-type]
        return None
    return parse_timestamp(getattr(request, field), field)


def caller_scope() -> domain.OrderScope:
    """The orders the credential of the call being served may see."""
    return domain.OrderScope.of(current_principal.get())


def order_to_pb(order: domain.Order, ttl_seconds: float = 0.0) -> pb.Order:
    """`ttl_seconds`: the payment window (ORDER_TTL_SECONDS; 0: no expiry)."""
    message = pb.Order(
        id=str(order.id),
        status=_STATUS_TO_PB[order.status],
        network=order.network,
        amount=str(order.amount),
        wallet_address=order.wallet_address or "",
        queue_position=order.queue_position or 0,
        request_id=order.request_id or "",
        allocation=_ALLOCATION_TO_PB[domain.allocation_of(order)],
        wallet_release=_RELEASE_TO_PB[order.wallet_release],
        asset=order.asset,
        payment_status=_PAYMENT_TO_PB[order.payment_status],
        received_confirmed=str(order.received_confirmed),
        received_pending=str(order.received_pending),
    )
    message.create_time.FromDatetime(order.create_time)
    message.update_time.FromDatetime(order.update_time)
    window_end = domain.payment_window_end(order, ttl_seconds)
    if window_end is not None:
        message.payment_window_end_time.FromDatetime(window_end)
    return message


def deposit_to_pb(deposit: domain.OrderDeposit) -> pb.OrderDeposit:
    return pb.OrderDeposit(
        **same_fields(deposit, "txid", "index", "address", "block_height", "late"),
        amount=str(deposit.amount),
        block_time=to_timestamp(deposit.block_time),
        asset=deposit.asset or "",
        disposition=_DISPOSITION_TO_PB[deposit.disposition],
        token_contract=deposit.token_contract or "",
        confirmations=deposit.confirmations or 0,
        required_confirmations=deposit.required_confirmations or 0,
        status=_DEPOSIT_STATUS_TO_PB[deposit.status],
    )


def event_to_pb(event: OrderEvent) -> pb.OrderEvent:
    return pb.OrderEvent(
        sequence=event.sequence,
        type=_EVENT_TYPE_TO_PB[event.type],
        order_id=str(event.order_id),
        event_time=to_timestamp(event.event_time),
        status=_STATUS_TO_PB[event.status],
        from_status=_STATUS_TO_PB[event.from_status]
        if event.from_status
        else pb.ORDER_STATUS_UNSPECIFIED,
        actor=event.actor,
        reason=event.reason,
        network=event.network,
        wallet_address=event.wallet_address or "",
        queue_position=event.queue_position or 0,
        deposit=deposit_to_pb(event.deposit) if event.deposit else None,
        payment_status=_payment_to_pb(event.payment_status),
        from_payment_status=_payment_to_pb(event.from_payment_status),
        received_confirmed=_decimal(event.received_confirmed),
        received_pending=_decimal(event.received_pending),
    )


def parse_event_types(numbers: Iterable[int]) -> frozenset[EventType]:
    types = set()
    for number in numbers:
        kind: EventType | None = _EVENT_TYPE_FROM_PB.get(number)
        if kind is None:
            raise InvalidArgument("types", f"{number} is not a valid order event type")
        types.add(kind)
    return frozenset(types)


def change_to_pb(change: domain.StatusChange) -> pb.StatusChange:
    return pb.StatusChange(
        from_status=_STATUS_TO_PB[change.from_status]
        if change.from_status
        else pb.ORDER_STATUS_UNSPECIFIED,
        to_status=_STATUS_TO_PB[change.to_status],
        actor=change.actor,
        reason=change.reason,
        change_time=to_timestamp(change.change_time),
        payment_status=_payment_to_pb(change.payment_status),
    )


class OrderServicer(pb_grpc.OrderServiceServicer):
    def __init__(self, manager: OrderManager) -> None:
        self._manager = manager

    def _order(self, order: domain.Order) -> pb.Order:
        return order_to_pb(order, self._manager.order_ttl_seconds)

    async def CreateOrder(
        self, request: pb.CreateOrderRequest, context: Context
    ) -> pb.CreateOrderResponse:
        network = parse_network(request.network, self._manager.networks)
        amount = domain.parse_amount(request.amount)
        request_id = domain.parse_request_id(request.request_id)
        order = await self._manager.create_order(
            network, amount, request_id, current_principal.get().name, request.asset
        )
        return pb.CreateOrderResponse(order=self._order(order))

    async def GetOrder(self, request: pb.GetOrderRequest, context: Context) -> pb.GetOrderResponse:
        order_id, scope = parse_uuid(request.order_id, "order_id"), caller_scope()
        order, deposits = await self._manager.get_order_with_deposits(order_id, scope)
        return pb.GetOrderResponse(
            order=self._order(order),
            deposits=[deposit_to_pb(d) for d in deposits],
        )

    async def ListOrders(
        self, request: pb.ListOrdersRequest, context: Context
    ) -> pb.ListOrdersResponse:
        network = request.network
        filters = domain.OrderFilter(
            status=parse_status(request.status, required=False),
            network=parse_network(network, self._manager.networks) if network else None,
            created_after=optional_time(request, "created_after"),
            created_before=optional_time(request, "created_before"),
        )
        orders, next_token = await self._manager.list_orders(
            filters, request.page_size, request.page_token, caller_scope()
        )
        return pb.ListOrdersResponse(
            orders=[self._order(o) for o in orders],
            next_page_token=next_token,
        )

    async def UpdateOrderStatus(
        self, request: pb.UpdateOrderStatusRequest, context: Context
    ) -> pb.UpdateOrderStatusResponse:
        order_id = parse_uuid(request.order_id, "order_id")
        status = parse_status(request.status, required=True)
        assert status is not None
        reason = domain.parse_reason(request.reason)
        order, release = await self._manager.update_status(
            order_id, status, reason, current_principal.get().name
        )
        return pb.UpdateOrderStatusResponse(
            order=self._order(order),
            wallet_release=_RELEASE_TO_PB[release],
        )

    async def GetOrderHistory(
        self, request: pb.GetOrderHistoryRequest, context: Context
    ) -> pb.GetOrderHistoryResponse:
        changes = await self._manager.get_history(
            parse_uuid(request.order_id, "order_id"), caller_scope()
        )
        return pb.GetOrderHistoryResponse(changes=[change_to_pb(c) for c in changes])

    async def WatchOrder(
        self, request: pb.WatchOrderRequest, context: Context
    ) -> AsyncIterator[pb.WatchOrderResponse]:
        order_id = parse_uuid(request.order_id, "order_id")
        async for order in self._manager.watch_order(order_id, caller_scope()):
            yield pb.WatchOrderResponse(order=self._order(order))

    async def ListOrderEvents(
        self, request: pb.ListOrderEventsRequest, context: Context
    ) -> pb.ListOrderEventsResponse:
        filters = EventFilter(
            order_id=parse_uuid(request.order_id, "order_id") if request.order_id else None,
            types=parse_event_types(request.types),
        )
        events, last = await self._manager.events.list_events(
            request.after_sequence, request.page_size, filters
        )
        return pb.ListOrderEventsResponse(
            events=[event_to_pb(e) for e in events], last_sequence=last
        )

    async def WatchOrderEvents(
        self, request: pb.WatchOrderEventsRequest, context: Context
    ) -> AsyncIterator[pb.WatchOrderEventsResponse]:
        async for event in self._manager.events.watch_events(request.after_sequence):
            yield pb.WatchOrderEventsResponse(event=event_to_pb(event))
