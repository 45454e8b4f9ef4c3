"""The event feed through the failovers: a consumer follows `WatchOrderEvents` the whole run,
reconnecting with the last sequence it received whenever its stream breaks (the primary
died, the service found the new one), as a real consumer would. After each promotion, and at
the end, every sequence it received must name the same event in the promoted primary's
table: a sequence shown before a failover is never given to another event after it."""

from __future__ import annotations

import asyncio
import contextlib
import time

import grpc

from exchange.order.v1 import order_service_pb2 as opb
from shared.db import Connection
from tests.chaos.feed import event_status, event_type
from tests.e2e.stack import LocalStack

# (order id, type, status), as the feed sent it and as the table has it.
Event = tuple[str, str, str]


class FailoverFeed:
    def __init__(self, stack: LocalStack) -> None:
        self.stack = stack
        self.received: dict[int, Event] = {}
        self.last = 0
        self.reconnects = 0
        # A sequence other than the next one, as the stream sent it.
        self.out_of_order: list[str] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="failover feed consumer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def catch_up(self, conn: Connection, seconds: float) -> bool:
        """Wait until everything the log shows now has been received."""
        end: int = await conn.fetchval("SELECT confirmed_through FROM orders.event_log")
        deadline = time.monotonic() + seconds
        while self.last < end and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return self.last >= end

    async def compare(self, conn: Connection) -> tuple[int, list[str]]:
        """How many received sequences were checked against `conn`'s table, and those that
        name another event there, or none."""
        received = dict(self.received)
        rows = await conn.fetch(
            "SELECT sequence, order_id, type, status FROM orders.order_events "
            "WHERE sequence = ANY($1::bigint[])",
            list(received),
        )
        table = {r["sequence"]: (str(r["order_id"]), r["type"], r["status"]) for r in rows}
        differ = [
            f"sequence {s}: the feed sent {event}, the promoted primary has {table.get(s)}"
            for s, event in sorted(received.items())
            if table.get(s) != event
        ]
        return len(received), differ

    async def _follow(self) -> None:
        stack = self.stack
        while True:
            stream = stack.orders.WatchOrderEvents(
                opb.WatchOrderEventsRequest(after_sequence=self.last), metadata=stack.operator
            )
            try:
                async for response in stream:
                    self._receive(response.event)
            except grpc.aio.AioRpcError:
                pass  # the failover: connect again, from the last sequence received
            finally:
                stream.cancel()
            self.reconnects += 1
            await asyncio.sleep(0.2)

    def _receive(self, event: opb.OrderEvent) -> None:
        if event.sequence != self.last + 1:
            self.out_of_order.append(f"after {self.last} the stream sent {event.sequence}")
        self.received[event.sequence] = (event.order_id, event_type(event), event_status(event))
        self.last = max(self.last, event.sequence)
