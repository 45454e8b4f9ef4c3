"""The event log read right at its retention edge, as a hostile consumer would: a 1 s retention,
orders changing all the time, deletion running every few milliseconds, and readers asking for
the oldest events kept. Every read is exact: a page starts right after its cursor, or the call
answers OUT_OF_RANGE naming a later place to continue from; after_sequence 0 always starts at
the oldest event kept, never OUT_OF_RANGE."""

import asyncio
import contextlib
import re
from dataclasses import dataclass, field

import asyncpg
import grpc
import pytest

from exchange.order.v1 import order_service_pb2 as opb
from tests.e2e.conftest import own_stack
from tests.e2e.stack import Stack
from tests.e2e.test_release_flow import add_wallets, create, eth_address, move

# Bounded by counts, not time: enough reads to meet the edge many times over.
LIST_READERS, LIST_ROUNDS = 2, 700
WATCH_ROUNDS = 250
WRITERS = 2
CONTINUE_FROM = re.compile(r"continue from after_sequence (\d+)")


@dataclass
class Tally:
    reads: int = 0
    refusals: int = 0
    skips: list[str] = field(default_factory=list)
    wrong_refusals: list[str] = field(default_factory=list)

    def refused(self, cursor: int, error: grpc.aio.AioRpcError) -> None:
        """An OUT_OF_RANGE for `cursor` is right only when it names a later place."""
        found = CONTINUE_FROM.search(error.details() or "")
        if error.code() != grpc.StatusCode.OUT_OF_RANGE or cursor == 0:
            self.wrong_refusals.append(f"after {cursor}: {error.code().name} {error.details()}")
        elif found is None or int(found.group(1)) <= cursor:
            self.wrong_refusals.append(f"after {cursor}: {error.details()}")
        else:
            self.refusals += 1

    def first_after(self, cursor: int, sequence: int) -> None:
        if sequence != cursor + 1:
            self.skips.append(f"after {cursor} the read started at {sequence}")

    def summary(self) -> str:
        return (
            f"reads {self.reads}, refusals {self.refusals}, skips {len(self.skips)}, "
            f"wrong refusals {len(self.wrong_refusals)}"
        )


async def write(stack: Stack, stop: asyncio.Event) -> None:
    """Orders created and cancelled in a loop: four events each (the wallet comes back)."""
    while not stop.is_set():
        order = await create(stack)
        await move(stack, order.id, opb.ORDER_STATUS_CANCELLED)


async def delete(db: asyncpg.Pool, stop: asyncio.Event) -> None:
    """The retention step the service runs, run again and again: the head moves all the time."""
    while not stop.is_set():
        await db.fetchval("SELECT orders.expire_events(now() - make_interval(secs => 1), 1000)")
        await asyncio.sleep(0.002)


async def list_at_the_edge(stack: Stack, tally: Tally) -> None:
    for _ in range(LIST_ROUNDS):
        tally.reads += 1
        try:
            oldest = await stack.orders.ListOrderEvents(
                opb.ListOrderEventsRequest(page_size=1), metadata=stack.operator
            )
        except grpc.aio.AioRpcError as error:
            tally.refused(0, error)
            continue
        if not oldest.events:
            continue
        cursor = oldest.events[0].sequence - 1
        tally.reads += 1
        try:
            page = await stack.orders.ListOrderEvents(
                opb.ListOrderEventsRequest(after_sequence=cursor), metadata=stack.operator
            )
        except grpc.aio.AioRpcError as error:
            tally.refused(cursor, error)
            continue
        if page.events:
            tally.first_after(cursor, page.events[0].sequence)
        elif page.last_sequence > cursor:
            tally.skips.append(f"after {cursor}: empty page, the log ends at {page.last_sequence}")


async def first_watched(stack: Stack, cursor: int) -> int:
    call = stack.orders.WatchOrderEvents(
        opb.WatchOrderEventsRequest(after_sequence=cursor), metadata=stack.operator, timeout=30
    )
    try:
        response = await call.read()
    finally:
        call.cancel()
    assert isinstance(response, opb.WatchOrderEventsResponse)
    return response.event.sequence


async def watch_at_the_edge(stack: Stack, tally: Tally) -> None:
    for _ in range(WATCH_ROUNDS):
        tally.reads += 1
        try:
            oldest = await first_watched(stack, 0)
        except grpc.aio.AioRpcError as error:
            tally.refused(0, error)
            continue
        tally.reads += 1
        try:
            first = await first_watched(stack, oldest - 1)
        except grpc.aio.AioRpcError as error:
            tally.refused(oldest - 1, error)
            continue
        tally.first_after(oldest - 1, first)


@own_stack
@pytest.mark.stack_env(EVENT_RETENTION_SECONDS="1", EVENT_SEQUENCER_SECONDS="0.05")
@pytest.mark.timeout(600)
async def test_reads_at_the_retention_edge_never_skip_and_never_refuse_a_fresh_start(
    stack: Stack, db: asyncpg.Pool
) -> None:
    await add_wallets(stack, "ETH", [eth_address() for _ in range(2 * WRITERS)])
    stop = asyncio.Event()
    background = [asyncio.ensure_future(write(stack, stop)) for _ in range(WRITERS)]
    background.append(asyncio.ensure_future(delete(db, stop)))
    tally = Tally()
    try:
        # The log is past its first deletion before the readers start.
        await asyncio.sleep(1.5)
        readers = [list_at_the_edge(stack, tally) for _ in range(LIST_READERS)]
        await asyncio.gather(*readers, watch_at_the_edge(stack, tally))
    finally:
        stop.set()
        for task in background:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await task
    print(f"retention edge: {tally.summary()}")

    assert tally.skips == [] and tally.wrong_refusals == [], f"{tally.summary()}\n" + "\n".join(
        (tally.skips + tally.wrong_refusals)[:20]
    )
    assert tally.reads >= 2000 and tally.refusals > 0, tally.summary()
