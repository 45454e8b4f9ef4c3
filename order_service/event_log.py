"""The event log's use cases: numbering committed events (the sequencer), reading and
watching the log, and its retention."""

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Collection

from order_service import events
from order_service.feed import OrderFeed
from order_service.metrics import EVENTS_DELETED, EVENTS_SEQUENCED
from order_service.store import OrderStore
from shared.errors import Unavailable
from shared.pagination import page_size

log = logging.getLogger(__name__)

_EVENT_PAGE = 500
_SEQUENCE_BATCH = 5000
# How long a sequencer run waits for the synchronous standby to confirm what it numbered:
# it usually has it at once, or within a WAL flush of the primary.
_CONFIRM_TRIES = 100
_CONFIRM_PAUSE_SECONDS = 0.005
_EVENT_EXPIRY_BATCH = 1000
# A watch follows the whole log.
_EVERY_EVENT = events.EventFilter()


class EventLog:
    def __init__(self, store: OrderStore, feed: OrderFeed, retention_seconds: float) -> None:
        """`retention_seconds`: how long the log keeps events."""
        self._store = store
        self.feed = feed
        self._retention_seconds = retention_seconds

    async def list_events(
        self, after_sequence: int, requested_size: int, filters: events.EventFilter
    ) -> tuple[list[events.OrderEvent], int]:
        """A page of the log after `after_sequence`, and the log's last sequence. Every event
        committed before the call is numbered first, so a caller reads its own changes."""
        await self.sequence_events()
        # One snapshot: the page is exactly what is kept after the retention mark it was
        # checked against (a deletion committed between two reads would be skipped, OK).
        async with self._store.snapshot() as orders:
            log_ = await orders.event_log()
            after_sequence = events.start_of_reading(
                after_sequence, log_.last_sequence, log_.deleted_through
            )
            page = await orders.events_after(after_sequence, page_size(requested_size), filters)
        return page, log_.confirmed_through

    async def watch_events(self, after_sequence: int) -> AsyncIterator[events.OrderEvent]:
        """Every event after `after_sequence`, in sequence order, then each as it is
        numbered; the stream ends only with an error (retention passed the consumer, or
        the service is stopping). 0 starts at the oldest event kept when a page is read,
        until the stream has sent one: it is never behind retention."""
        cursor: int | None = None
        if after_sequence:
            async with self._store.statement() as orders:
                log_ = await orders.event_log()
            # Against what is numbered: after a failover a cursor may be past what the new
            # primary shows yet, never past what it numbered.
            cursor = events.start_of_reading(
                after_sequence, log_.last_sequence, log_.deleted_through
            )
        with self.feed.watch_log() as grew:
            while True:
                grew.clear()
                page = await self._events_to_watch(cursor)
                for event in page:
                    yield event
                    cursor = event.sequence
                if len(page) < _EVENT_PAGE:
                    await grew.wait()
                    if self.feed.closed:
                        raise Unavailable("the service is stopping; watch again")

    async def _events_to_watch(self, cursor: int | None) -> list[events.OrderEvent]:
        """The next page of a watch after `cursor` (None: from the oldest event kept)."""
        if cursor is None:
            async with self._store.snapshot() as orders:
                deleted = (await orders.event_log()).deleted_through
                return await orders.events_after(deleted, _EVENT_PAGE, _EVERY_EVENT)
        async with self._store.statement() as orders:
            page = await orders.events_after(cursor, _EVENT_PAGE, _EVERY_EVENT)
            if page and page[0].sequence != cursor + 1:
                # Sequences are dense: only retention leaves a hole before a page.
                deleted = (await orders.event_log()).deleted_through
                raise events.EventsDeleted(cursor, deleted)
        return page

    async def sequence_events(self, announce: Collection[uuid.UUID] = ()) -> bool:
        """Sequencer step: number the committed events that have no sequence yet, and
        announce their orders and `announce` to every replica."""
        while True:
            async with self._store.statement() as orders:
                numbered = await orders.sequence_events(_SEQUENCE_BATCH, announce)
            EVENTS_SEQUENCED.inc(numbered)
            if numbered < _SEQUENCE_BATCH:
                break
            announce = ()
        await self._confirm_events()
        return False

    async def _confirm_events(self) -> None:
        """Show what is numbered once the synchronous standby has it (at once without one).
        It usually has it already: the numbering's commit waited for it. The next run of the
        sequencer (at the latest its safety-net loop) tries again when it still lags."""
        for _ in range(_CONFIRM_TRIES):
            async with self._store.statement() as orders:
                if await orders.confirm_events() == 0:
                    return
            await asyncio.sleep(_CONFIRM_PAUSE_SECONDS)
        log.warning("numbered events wait for the synchronous standby to confirm them")

    async def expire_events(self) -> bool:
        """Retention-loop step: delete events older than the retention. True if a full batch."""
        async with self._store.statement() as orders:
            deleted = await orders.expire_events(self._retention_seconds, _EVENT_EXPIRY_BATCH)
        EVENTS_DELETED.inc(deleted)
        return deleted == _EVENT_EXPIRY_BATCH
