"""Hand-offs as they commit on any replica (PostgreSQL LISTEN), fanned out to watchers."""

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator

import asyncpg

from shared.listen import Listener
from wallet_pool_service.domain import HandOff

log = logging.getLogger(__name__)

CHANNEL = "wallet_pool_hand_off"
# A watcher this far behind is dropped (it reconnects and catches up by asking).
_WATCHER_BACKLOG = 10_000


class HandOffFeed:
    """Listens on one pooled connection while the service runs; `watch()` yields every
    hand-off committed from then on, by this replica or another."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._watchers: set[asyncio.Queue[HandOff | None]] = set()

    @contextlib.asynccontextmanager
    async def watch(self) -> AsyncIterator[AsyncIterator[HandOff]]:
        queue: asyncio.Queue[HandOff | None] = asyncio.Queue(_WATCHER_BACKLOG)
        self._watchers.add(queue)

        async def hand_offs() -> AsyncIterator[HandOff]:
            while (hand_off := await queue.get()) is not None:
                yield hand_off

        try:
            yield hand_offs()
        finally:
            self._watchers.discard(queue)

    def close(self) -> None:
        """End every watch (a stopping server; watchers reconnect elsewhere)."""
        for queue in list(self._watchers):
            self._end(queue)

    def _end(self, queue: "asyncio.Queue[HandOff | None]") -> None:
        self._watchers.discard(queue)
        if queue.full():
            queue.get_nowait()  # room for the end marker
        queue.put_nowait(None)

    def _publish(self, payload: str) -> None:
        fields = json.loads(payload)
        hand_off = HandOff(uuid.UUID(fields["order_id"]), fields["address"], fields["network"])
        for queue in list(self._watchers):
            try:
                queue.put_nowait(hand_off)
            except asyncio.QueueFull:
                log.warning("hand-off watcher too slow; dropped")
                self._end(queue)

    async def run(self) -> None:
        """Listen until cancelled, reconnecting after database outages."""
        await Listener(self._pool, "hand-off listener", {CHANNEL: self._publish}).run()
