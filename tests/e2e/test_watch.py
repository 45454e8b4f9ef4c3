"""End to end: watching an order and following the event log, over real gRPC streams."""

import asyncio
import contextlib
import time
import uuid

import asyncpg
import grpc
import pytest

from exchange.order.v1 import order_service_pb2 as opb
from tests.e2e.conftest import own_stack
from tests.e2e.stack import OwnStack, Stack, bearer
from tests.e2e.test_operations import scrape
from tests.e2e.test_release_flow import add_wallets, create, eth_address, finish
from tests.waiting import HANG_GUARD_SECONDS, until

SUBSCRIBER = bearer("e2e-subscriber-token")
OTHER_CLIENT = bearer("e2e-other-client-token")
MORE_TOKENS = "feed:subscriber:e2e-subscriber-token,bob:client:e2e-other-client-token"


class Watch:
    """A WatchOrder stream read in the background: every order it printed, and its end."""

    def __init__(self, stack: Stack, order_id: str, metadata: tuple[tuple[str, str], ...]):
        self.orders: list[opb.Order] = []
        self.seen = asyncio.Event()
        self._call = stack.orders.WatchOrder(
            opb.WatchOrderRequest(order_id=order_id), metadata=metadata, timeout=30
        )
        self.ended = asyncio.ensure_future(self._read())

    async def _read(self) -> grpc.StatusCode:
        try:
            async for response in self._call:
                self.orders.append(response.order)
                self.seen.set()
        except grpc.aio.AioRpcError as error:
            return error.code()
        except asyncio.CancelledError:
            if not self._call.cancelled():
                raise
            return grpc.StatusCode.CANCELLED
        return grpc.StatusCode.OK

    async def until(self, shown: str, within: float = HANG_GUARD_SECONDS) -> opb.Order:
        """The first order printed whose fields, as text, contain `shown`."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            for order in self.orders:
                if shown in str(order):
                    return order
            self.seen.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.seen.wait(), deadline - time.monotonic())
        raise AssertionError(f"the watch never printed {shown!r}: {self.orders}")

    def cancel(self) -> None:
        self._call.cancel()


@own_stack
async def test_a_watch_on_a_waiting_order_prints_the_address_as_the_hand_off_commits(
    stack: Stack,
) -> None:
    address = eth_address()
    await add_wallets(stack, "ETH", [address])
    holder, waiting = await create(stack), await create(stack)
    watch = Watch(stack, waiting.id, stack.client)
    first = await watch.until("ALLOCATION_QUEUED")
    assert first.queue_position == 1

    await finish(stack, holder.id, opb.ORDER_STATUS_COMPLETED)
    assigned = await watch.until(address)
    assert (assigned.allocation, assigned.queue_position) == (opb.ALLOCATION_ASSIGNED, 0)

    await finish(stack, waiting.id, opb.ORDER_STATUS_CANCELLED)
    assert await asyncio.wait_for(watch.ended, HANG_GUARD_SECONDS) == grpc.StatusCode.OK
    last = watch.orders[-1]
    assert (last.status, last.wallet_release) == (
        opb.ORDER_STATUS_CANCELLED,
        opb.WALLET_RELEASE_RELEASED,
    )


@own_stack
async def test_a_watch_on_a_final_order_prints_it_once_and_ends(stack: Stack) -> None:
    await add_wallets(stack, "ETH", [eth_address()])
    order = await create(stack)
    await finish(stack, order.id, opb.ORDER_STATUS_COMPLETED)
    watch = Watch(stack, order.id, stack.client)
    assert await asyncio.wait_for(watch.ended, HANG_GUARD_SECONDS) == grpc.StatusCode.OK
    [shown] = watch.orders
    assert (shown.status, shown.wallet_release) == (
        opb.ORDER_STATUS_COMPLETED,
        opb.WALLET_RELEASE_RELEASED,
    )


@own_stack
async def test_an_order_the_pool_has_not_answered_for_says_so_then_gets_its_wallet(
    stack: OwnStack,
) -> None:
    address = eth_address()
    await add_wallets(stack, "ETH", [address])
    await stack.pool_process.freeze()
    try:
        order = await create(stack)
    finally:
        await stack.pool_process.thaw()
    assert (order.allocation, order.queue_position, order.wallet_address) == (
        opb.ALLOCATION_AWAITING_POOL,
        0,
        "",
    )
    watch = Watch(stack, order.id, stack.client)
    assert (await watch.until(address)).allocation == opb.ALLOCATION_ASSIGNED
    watch.cancel()


@own_stack
@pytest.mark.stack_env(AUTH_TOKENS=MORE_TOKENS)
async def test_clients_watch_their_own_orders_and_only_operators_and_subscribers_read_the_log(
    stack: Stack,
) -> None:
    await add_wallets(stack, "ETH", [eth_address()])
    order = await create(stack)
    for metadata, code in [(OTHER_CLIENT, grpc.StatusCode.NOT_FOUND), (SUBSCRIBER, None)]:
        watch = Watch(stack, order.id, metadata)
        ended = await asyncio.wait_for(watch.ended, HANG_GUARD_SECONDS)
        assert ended == (code or grpc.StatusCode.PERMISSION_DENIED)
    for metadata in (stack.client, OTHER_CLIENT):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stack.orders.ListOrderEvents(opb.ListOrderEventsRequest(), metadata=metadata)
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        events = stack.orders.WatchOrderEvents(opb.WatchOrderEventsRequest(), metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await events.read()
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED

    for metadata in (SUBSCRIBER, stack.operator):
        listed = await stack.orders.ListOrderEvents(
            opb.ListOrderEventsRequest(order_id=order.id), metadata=metadata
        )
        assert [e.type for e in listed.events] == [
            opb.ORDER_EVENT_TYPE_CREATED,
            opb.ORDER_EVENT_TYPE_WALLET_ASSIGNED,
        ]
        feed = stack.orders.WatchOrderEvents(opb.WatchOrderEventsRequest(), metadata=metadata)
        first = await feed.read()
        assert isinstance(first, opb.WatchOrderEventsResponse)
        assert first.event.sequence == 1
        feed.cancel()


@own_stack
async def test_the_log_records_a_lifecycle_in_order_with_who_and_why(
    stack: Stack, db: asyncpg.Pool
) -> None:
    address = eth_address()
    await add_wallets(stack, "ETH", [address])
    order = await create(stack)
    await finish(stack, order.id, opb.ORDER_STATUS_COMPLETED)
    listed = await stack.orders.ListOrderEvents(
        opb.ListOrderEventsRequest(order_id=order.id), metadata=stack.operator
    )
    assert [(e.type, e.status, e.actor, e.reason) for e in listed.events] == [
        (opb.ORDER_EVENT_TYPE_CREATED, opb.ORDER_STATUS_PENDING, "client", "created"),
        (opb.ORDER_EVENT_TYPE_WALLET_ASSIGNED, opb.ORDER_STATUS_PENDING, "", ""),
        (opb.ORDER_EVENT_TYPE_STATUS_CHANGED, opb.ORDER_STATUS_PROCESSING, "operator", ""),
        (opb.ORDER_EVENT_TYPE_STATUS_CHANGED, opb.ORDER_STATUS_COMPLETED, "operator", "e2e"),
        (opb.ORDER_EVENT_TYPE_RELEASE_DELIVERED, opb.ORDER_STATUS_COMPLETED, "", ""),
    ]
    assert all(e.wallet_address == address for e in listed.events[1:])
    sequences = [e.sequence for e in listed.events]
    assert sequences == sorted(sequences) and listed.last_sequence >= sequences[-1]

    only = await stack.orders.ListOrderEvents(
        opb.ListOrderEventsRequest(
            after_sequence=sequences[0], types=[opb.ORDER_EVENT_TYPE_STATUS_CHANGED], page_size=1
        ),
        metadata=stack.operator,
    )
    assert [e.sequence for e in only.events] == [sequences[2]]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stack.orders.ListOrderEvents(
            opb.ListOrderEventsRequest(types=[opb.OrderEventType.ValueType(99)]),
            metadata=stack.operator,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (refused.value.details() or "").startswith("types: ")


@own_stack
# Long enough that the events of the second order outlive the checks, however slow the
# machine; the first order's are waited out (their deletion is the event waited for).
@pytest.mark.stack_env(EVENT_RETENTION_SECONDS="5")
async def test_a_consumer_behind_the_retention_is_told_where_the_log_now_starts(
    stack: Stack,
) -> None:
    await add_wallets(stack, "ETH", [eth_address(), eth_address()])
    await create(stack)
    first = await stack.orders.ListOrderEvents(
        opb.ListOrderEventsRequest(), metadata=stack.operator
    )
    written = first.last_sequence

    async def deleted() -> bool:
        oldest = await stack.orders.ListOrderEvents(
            opb.ListOrderEventsRequest(page_size=1), metadata=stack.operator
        )
        return not oldest.events or oldest.events[0].sequence > written

    await until(deleted, "the retention deleted the first order's events")
    await create(stack)
    oldest = await stack.orders.ListOrderEvents(
        opb.ListOrderEventsRequest(page_size=1), metadata=stack.operator
    )
    kept_from = oldest.events[0].sequence
    assert kept_from == written + 1, "retention deleted nothing, or too much"

    with pytest.raises(grpc.aio.AioRpcError) as behind:
        await stack.orders.ListOrderEvents(
            opb.ListOrderEventsRequest(after_sequence=1), metadata=stack.operator
        )
    assert behind.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert f"continue from after_sequence {kept_from - 1}" in (behind.value.details() or "")
    feed = stack.orders.WatchOrderEvents(
        opb.WatchOrderEventsRequest(after_sequence=1), metadata=stack.operator
    )
    with pytest.raises(grpc.aio.AioRpcError) as behind:
        await feed.read()
    assert behind.value.code() == grpc.StatusCode.OUT_OF_RANGE
    resumed = stack.orders.WatchOrderEvents(
        opb.WatchOrderEventsRequest(after_sequence=kept_from - 1), metadata=stack.operator
    )
    event = await resumed.read()
    assert isinstance(event, opb.WatchOrderEventsResponse)
    assert event.event.sequence == kept_from
    resumed.cancel()


@own_stack
@pytest.mark.stack_env(MAX_WATCH_STREAMS="2")
async def test_open_streams_are_bounded_and_counted(stack: OwnStack) -> None:
    await add_wallets(stack, "ETH", [eth_address()])
    order = await create(stack)
    watches = [Watch(stack, order.id, stack.client) for _ in range(2)]
    for watch in watches:
        await watch.until(order.id)
    metrics = await scrape(stack.order_process.metrics_port)
    assert 'order_watch_streams{rpc="WatchOrder"} 2.0' in metrics
    third = Watch(stack, str(uuid.UUID(order.id)), stack.client)
    assert (
        await asyncio.wait_for(third.ended, HANG_GUARD_SECONDS)
        == grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    for watch in watches:
        watch.cancel()
        await watch.ended
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while 'order_watch_streams{rpc="WatchOrder"} 0.0' not in metrics:
        assert time.monotonic() < deadline, "closed watches are still counted"
        await asyncio.sleep(0.1)
        metrics = await scrape(stack.order_process.metrics_port)
