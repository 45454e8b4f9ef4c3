"""The event feed's consumer (reconnecting from the last sequence it received, as a real one
would) and the checks of what it received against the log."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from typing import Any

import grpc

from exchange.order.v1 import order_service_pb2 as opb
from exchange.order.v1 import order_service_pb2_grpc as order_grpc
from shared.db import Connection
from tests.chaos.report import TRANSIENT, ChaosReport
from tests.e2e.stack import bearer

# The credential the consumer follows the log with (a subscriber, as the systems around the
# office would); the run adds it to the order service's AUTH_TOKENS.
SUBSCRIBER_TOKEN = "chaos-subscriber-token"
SUBSCRIBER_CREDENTIAL = f"chaos-feed:subscriber:{SUBSCRIBER_TOKEN}"
# Events that carry a status change: CREATED (PENDING), STATUS_CHANGED, EXPIRED (CANCELLED).
_STATUS_EVENTS = frozenset({"CREATED", "STATUS_CHANGED", "EXPIRED"})
RANK = {"PENDING": 0, "PROCESSING": 1, "COMPLETED": 2, "CANCELLED": 2}


def event_type(event: opb.OrderEvent) -> str:
    return opb.OrderEventType.Name(event.type).removeprefix("ORDER_EVENT_TYPE_")


def status_name(status: opb.OrderStatus.ValueType) -> str:
    return opb.OrderStatus.Name(status).removeprefix("ORDER_STATUS_")


class FeedConsumer:
    """Follows the log until stopped, keeping every event received; a sequence other than
    the next one is a violation at once (with the chaos around it). `strict`: so is a stream
    that ends OK, or not transiently (the failover run only reconnects)."""

    def __init__(
        self,
        orders: order_grpc.OrderServiceAsyncStub,
        report: ChaosReport,
        seed: int,
        metadata: tuple[tuple[str, str], ...] = bearer(SUBSCRIBER_TOKEN),
        strict: bool = True,
    ) -> None:
        self.orders = orders
        self.report = report
        self.metadata = metadata
        self.strict = strict
        self.received: list[opb.OrderEvent] = []
        self.last = 0
        self._rng = random.Random(f"{seed}:feed")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._follow(), name="feed consumer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def catch_up(self, log_end: int, seconds: float) -> None:
        """A stream that stalls short of `log_end` is a violation; one more reconnect tells a
        stuck stream (the new one gets the rest) from a log that does not serve its events."""
        if await self._reached(log_end, seconds):
            return
        stalled_at = self.last
        await self.stop()
        self.report.feed.reconnects += 1
        self.start()
        again = await self._reached(log_end, 10)
        self.report.violation(
            f"feed: the stream stalled at sequence {stalled_at} while the log ends at "
            f"{log_end} (waited {seconds:.0f} s); a new stream "
            + (f"got the rest (to {self.last})" if again else f"stalled too, at {self.last}")
        )

    async def _reached(self, log_end: int, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while self.last < log_end and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return self.last >= log_end

    async def _follow(self) -> None:
        delay = 0.1
        opened = False
        while True:
            if opened:
                self.report.feed.reconnects += 1
            opened = True
            stream = self.orders.WatchOrderEvents(
                opb.WatchOrderEventsRequest(after_sequence=self.last), metadata=self.metadata
            )
            try:
                async for response in stream:
                    self._receive(response.event)
                    delay = 0.1
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                self.report.count("watch_events", code.name)
                if code not in TRANSIENT and self.strict:
                    self.report.violation(
                        f"feed: WatchOrderEvents after {self.last} answered {code.name}: "
                        f"{exc.details()}"
                    )
            else:
                self.report.count("watch_events", "OK")
                if self.strict:
                    self.report.violation(f"feed: WatchOrderEvents after {self.last} ended OK")
            finally:
                stream.cancel()
            await asyncio.sleep(delay * self._rng.uniform(0.5, 1.5))
            delay = min(delay * 2, 1.0)

    def _receive(self, event: opb.OrderEvent) -> None:
        self.received.append(event)
        self.report.feed.events += 1
        if event.sequence != self.last + 1:
            what = "repeated" if event.sequence <= self.last else "skipped to"
            self.report.violation(
                f"feed: after sequence {self.last} the stream {what} {event.sequence} "
                f"({event_type(event)} of {event.order_id})"
            )
        self.last = max(self.last, event.sequence)


def _named(events: Iterable[opb.OrderEvent]) -> dict[int, tuple[str, str, str]]:
    return {e.sequence: (e.order_id, event_type(e), status_name(e.status)) for e in events}


async def _table(conn: Connection, condition: str, arg: Any) -> dict[int, tuple[str, str, str]]:
    query = "SELECT sequence, order_id, type, status FROM orders.order_events WHERE sequence "
    rows = await conn.fetch(query + condition, arg)
    return {r["sequence"]: (str(r["order_id"]), r["type"], r["status"]) for r in rows}


async def compare(conn: Connection, received: list[opb.OrderEvent]) -> tuple[int, list[str]]:
    feed = _named(received)
    table = await _table(conn, "= ANY($1::bigint[])", list(feed))
    differ = [
        f"sequence {s}: the feed sent {event}, the promoted primary has {table.get(s)}"
        for s, event in sorted(feed.items())
        if table.get(s) != event
    ]
    return len(feed), differ


async def log_end(conn: Connection, report: ChaosReport, seconds: float) -> tuple[int, int]:
    """Where the log ends once every event committed so far is numbered (unnumbered ones
    after `seconds` are a violation), and the newest status history row then."""
    newest = await conn.fetchrow(
        """SELECT (SELECT coalesce(max(id), 0) FROM orders.order_events) AS event,
                  (SELECT coalesce(max(id), 0) FROM orders.status_history) AS history"""
    )
    assert newest is not None
    query = "SELECT count(*) FROM orders.order_events WHERE sequence IS NULL AND id <= $1"
    deadline = time.monotonic() + seconds
    while (left := await conn.fetchval(query, newest["event"])) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    if left:
        report.violation(f"feed: {left} committed events still have no sequence after {seconds} s")
    last: int = await conn.fetchval("SELECT last_sequence FROM orders.event_log")
    return last, newest["history"]


async def check_feed(
    conn: Connection,
    received: list[opb.OrderEvent],
    acknowledged: Iterable[tuple[uuid.UUID, str]],
    history_through: int,
) -> list[str]:
    """The feed is the log: 1..N once each in order, the table's events, every acknowledged
    change and history row through `history_through`, each order's status never back."""
    first: dict[int, opb.OrderEvent] = {}
    for event in received:
        first.setdefault(event.sequence, event)
    feed = _named(first.values())
    end = max(first, default=0)
    sequences = [e.sequence for e in received]
    violations = []
    if sequences != list(range(1, end + 1)):
        repeated = sorted(s for s, n in Counter(sequences).items() if n > 1)
        missing = sorted(set(range(1, end + 1)) - set(sequences))
        disorder = sum(1 for a, b in itertools.pairwise(sequences) if b < a)
        violations.append(
            f"the feed's sequences are not 1..{end} once each in order: "
            f"repeated {_some(repeated)}, missing {_some(missing)}, {disorder} steps back"
        )
    violations += await _against_table(conn, feed, end)
    violations += await _changes_missing(conn, feed, acknowledged, history_through, end)
    return violations + _out_of_order(first[s] for s in sorted(first))


async def _against_table(
    conn: Connection, feed: dict[int, tuple[str, str, str]], end: int
) -> list[str]:
    table = await _table(conn, "<= $1", end)
    violations = []
    if set(table) != set(range(1, end + 1)):
        missing = sorted(set(range(1, end + 1)) - set(table))
        violations.append(f"orders.order_events lacks sequences {_some(missing)} of 1..{end}")
    differ = [s for s in sorted(set(feed) | set(table)) if feed.get(s) != table.get(s)]
    violations += [
        f"sequence {s}: the feed sent {feed.get(s)}, the table has {table.get(s)}"
        for s in differ[:20]
    ]
    if len(differ) > 20:
        violations.append(f"... and {len(differ) - 20} more sequences differ")
    return violations


async def _changes_missing(
    conn: Connection,
    feed: dict[int, tuple[str, str, str]],
    acknowledged: Iterable[tuple[uuid.UUID, str]],
    history_through: int,
    end: int,
) -> list[str]:
    statuses = {
        (uuid.UUID(order_id), status)
        for order_id, kind, status in feed.values()
        if kind in _STATUS_EVENTS
    }
    lost = sorted(set(acknowledged) - statuses)
    violations = [f"acknowledged {status} of order {o} is not in the feed" for o, status in lost]
    # A change still in flight when the end was read may be numbered after `end`.
    history = await conn.fetch(
        """SELECT order_id, to_status FROM orders.status_history h
           WHERE id <= $1 AND NOT EXISTS (
               SELECT 1 FROM orders.order_events e
               WHERE e.order_id = h.order_id AND e.status = h.to_status
                 AND e.type = ANY($3) AND e.sequence > $2)""",
        history_through,
        end,
        sorted(_STATUS_EVENTS),
    )
    return violations + [
        f"{r['to_status']} of order {r['order_id']} is in its history, not in the feed"
        for r in history
        if (r["order_id"], r["to_status"]) not in statuses
    ]


def _out_of_order(events: Iterable[opb.OrderEvent]) -> list[str]:
    seen: dict[str, str] = {}
    violations = []
    for event in events:
        status = status_name(event.status)
        before = seen.get(event.order_id)
        if before is None and event_type(event) != "CREATED":
            violations.append(f"order {event.order_id}: {event_type(event)} before CREATED")
        elif before is not None and RANK.get(status, -1) < RANK.get(before, -1):
            violations.append(
                f"order {event.order_id}: {event_type(event)} {status} (sequence "
                f"{event.sequence}) after {before}"
            )
        seen[event.order_id] = status
    return violations


def _some(numbers: list[int]) -> str:
    shown = ", ".join(map(str, numbers[:10]))
    return f"[{shown}{', …' if len(numbers) > 10 else ''}] ({len(numbers)})"
