"""A sequence of the event log is shown only once the synchronous standby has it, so a failover
never gives a number a consumer has read to another event.

PostgreSQL keeps a commit invisible while it waits for the synchronous standby, unless the
wait is cut short: a cancelled session (as a statement timeout, an operator or a failover
tool does) commits on the primary alone, visibly. Here the standby stalls, every waiting
commit is cancelled (the status change and the sequencer's numbering of its event), the
primary dies and the standby is promoted: what a consumer read before must be what the new
primary has under the same sequences (README, Events: Failover)."""

import asyncio
import os
import signal
import time
from pathlib import Path

import asyncpg
import grpc
import pytest

from exchange.order.v1 import order_service_pb2 as opb
from tests.chaos.replication import STANDBY_NAME, Node, ReplicatedCluster
from tests.e2e.conftest import local_only
from tests.e2e.stack import LocalStack
from tests.e2e.test_release_flow import add_wallets, create, eth_address, move

Event = tuple[str, int, int]


async def stall_replication(primary: Node) -> int:
    """SIGSTOP the primary's WAL sender: the standby receives, and confirms, nothing more
    (WAL the sender had written to the socket would still reach a stalled standby)."""
    conn = await asyncpg.connect(primary.url())
    try:
        pid: int = await conn.fetchval(
            "SELECT pid FROM pg_stat_replication WHERE application_name = $1", STANDBY_NAME
        )
    finally:
        await conn.close()
    os.kill(pid, signal.SIGSTOP)
    return pid


async def read_log(stack: LocalStack) -> dict[int, Event]:
    """Every event shown, by sequence: (order, type, status)."""
    shown: dict[int, Event] = {}
    after = 0
    while True:
        page = await stack.orders.ListOrderEvents(
            opb.ListOrderEventsRequest(after_sequence=after, page_size=500),
            metadata=stack.operator,
            timeout=20,
        )
        for event in page.events:
            shown[event.sequence] = (event.order_id, event.type, event.status)
        if not page.events:
            return shown
        after = page.events[-1].sequence


async def cancel_waits(primary: Node, stop: asyncio.Event) -> None:
    """Cancel every commit waiting for the standby, again and again until `stop`."""
    conn = await asyncpg.connect(primary.url())
    try:
        while not stop.is_set():
            await conn.execute(
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
            )
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def numbered_on(primary: Node, beyond: int) -> int:
    """The primary's last sequence, once it is past `beyond`."""
    conn = await asyncpg.connect(primary.url())
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            last: int = await conn.fetchval("SELECT last_sequence FROM orders.event_log")
            if last > beyond:
                return last
            await asyncio.sleep(0.05)
    finally:
        await conn.close()
    raise AssertionError("the sequencer numbered nothing while the standby stalled")


async def until_serving(stack: LocalStack) -> dict[int, Event]:
    deadline = time.monotonic() + 30
    while True:
        try:
            await create(stack)
            return await read_log(stack)
        except grpc.aio.AioRpcError:
            assert time.monotonic() < deadline, "the services did not serve after the promotion"
            await asyncio.sleep(0.2)


@local_only("its own PostgreSQL primary and synchronous standby, the services as host processes")
@pytest.mark.timeout(300)
async def test_a_sequence_the_standby_lacks_is_never_shown_so_a_failover_renumbers_nothing(
    tmp_path: Path,
) -> None:
    cluster = ReplicatedCluster()
    stack: LocalStack | None = None
    try:
        await cluster.start()
        stack = await LocalStack.start(cluster.url(), tmp_path)
        await add_wallets(stack, "ETH", [eth_address() for _ in range(4)])
        order = await create(stack)
        seen = await read_log(stack)
        numbered_before = max(seen)
        await stall_replication(cluster.primary)
        stop = asyncio.Event()
        canceller = asyncio.ensure_future(cancel_waits(cluster.primary, stop))
        try:
            await move(stack, order.id, opb.ORDER_STATUS_PROCESSING)
            numbered = await numbered_on(cluster.primary, numbered_before)
            # Numbered on the primary alone: a consumer must not be shown it.
            seen |= await read_log(stack)
            shown_while_stalled = max(seen)
        finally:
            stop.set()
            await canceller
        # The stopped sender dies with the rest of the primary, its WAL unsent.
        await cluster.kill_primary()
        await cluster.promote()
        after = await until_serving(stack)
        await create(stack)
        after = await read_log(stack)
    finally:
        if stack is not None:
            await stack.close()
        await cluster.close()

    renumbered = {s: (event, after.get(s)) for s, event in seen.items() if after.get(s) != event}
    print(
        f"failover of a stalled standby: numbered {numbered} on the primary alone, "
        f"shown {shown_while_stalled}, sequences checked {len(seen)}, "
        f"renumbered {len(renumbered)}"
    )
    assert renumbered == {}
    assert shown_while_stalled == numbered_before < numbered
    assert max(after) > numbered_before
