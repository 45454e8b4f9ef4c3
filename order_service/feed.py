"""What watchers wait for: order changes and a growing event log, as they commit on any
replica, and the sequencer of the log run after those commits.

A change wakes the watchers on the replica that made it at once; the sequencer run it asks
for then announces it to every replica (PostgreSQL NOTIFY, migration 006). Only sequencer
runs notify, because PostgreSQL serialises the commits of notifying transactions.

A watcher is woken, not sent data: it reads what changed itself, at its own pace, so a slow
consumer holds nothing here and slows nobody down.
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator

from order_service.metrics import WATCH_STREAMS
from shared.db import is_database_outage
from shared.errors import ResourceExhausted
from shared.listen import Handler

log = logging.getLogger(__name__)

# Payload: the log's last sequence, then the ids of the orders that changed, or '*' for all.
ORDER_EVENTS = "order_events"


class OrderFeed:
    """Wakes the watchers of an order when it changes, and the consumers of the event log
    when it grows; runs `sequence` (numbering committed events and announcing the orders it
    is given) after each change made here, one run at a time per replica. At most
    `max_streams` watchers at once."""

    def __init__(
        self, max_streams: int, sequence: Callable[[set[uuid.UUID]], Awaitable[object]]
    ) -> None:
        self._max_streams = max_streams
        self._sequence = sequence
        self._orders: dict[uuid.UUID, set[asyncio.Event]] = {}
        self._log: set[asyncio.Event] = set()
        self._streams = 0
        self.closed = False
        self._sequencer: asyncio.Task[None] | None = None
        self._sequence_again = False
        self._unannounced: set[uuid.UUID] = set()

    @property
    def handlers(self) -> dict[str, Handler]:
        return {ORDER_EVENTS: self._announced}

    def changed(self, *order_ids: uuid.UUID) -> None:
        """Orders changed here and committed: wake their watchers, and have the sequencer
        number the events and announce the orders to the other replicas."""
        for order_id in order_ids:
            self._wake_order(order_id)
        self._unannounced.update(order_ids)
        self.run_sequencer()

    def on_connect(self) -> None:
        """Listening (re)started: whatever changed meanwhile is looked at again."""
        self._wake_all()
        self.run_sequencer()

    @contextlib.contextmanager
    def watch_order(self, order_id: uuid.UUID) -> Iterator[asyncio.Event]:
        """An event set whenever the order may have changed (and when the feed closes)."""
        wake = asyncio.Event()
        with self._stream("WatchOrder"):
            self._orders.setdefault(order_id, set()).add(wake)
            try:
                yield wake
            finally:
                watchers = self._orders[order_id]
                watchers.discard(wake)
                if not watchers:
                    del self._orders[order_id]

    @contextlib.contextmanager
    def watch_log(self) -> Iterator[asyncio.Event]:
        """An event set whenever the log may have grown (and when the feed closes)."""
        wake = asyncio.Event()
        with self._stream("WatchOrderEvents"):
            self._log.add(wake)
            try:
                yield wake
            finally:
                self._log.discard(wake)

    def close(self) -> None:
        """A stopping server: every watcher wakes and ends (clients watch again elsewhere)."""
        self.closed = True
        self._wake_all()

    def run_sequencer(self) -> None:
        """Number the committed events soon; a run in progress runs once more after."""
        if self._sequencer is not None and not self._sequencer.done():
            self._sequence_again = True
            return
        self._sequencer = asyncio.create_task(self._sequence_while_asked(), name="sequencer")

    async def stop(self) -> None:
        if self._sequencer is not None:
            self._sequencer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sequencer

    @contextlib.contextmanager
    def _stream(self, rpc: str) -> Iterator[None]:
        if self._streams >= self._max_streams:
            raise ResourceExhausted(
                f"this replica serves its limit of {self._max_streams} watch streams; "
                "retry later or on another replica"
            )
        self._streams += 1
        WATCH_STREAMS.labels(rpc).inc()
        try:
            yield
        finally:
            self._streams -= 1
            WATCH_STREAMS.labels(rpc).dec()

    async def _sequence_while_asked(self) -> None:
        while True:
            self._sequence_again = False
            announce, self._unannounced = self._unannounced, set()
            try:
                await self._sequence(announce)
            except Exception as exc:
                # The sequencer loop is the safety net; the announcements wait for a next run.
                self._unannounced |= announce
                if not is_database_outage(exc):
                    log.exception("sequencing events failed")
                return
            if not self._sequence_again:
                return

    def _announced(self, payload: str) -> None:
        _last_sequence, *order_ids = payload.split()
        if order_ids == ["*"]:
            self._wake_all()
            return
        for order_id in order_ids:
            self._wake_order(uuid.UUID(order_id))
        for wake in self._log:
            wake.set()

    def _wake_order(self, order_id: uuid.UUID) -> None:
        for wake in self._orders.get(order_id, ()):
            wake.set()

    def _wake_all(self) -> None:
        for watchers in self._orders.values():
            for wake in watchers:
                wake.set()
        for wake in self._log:
            wake.set()
