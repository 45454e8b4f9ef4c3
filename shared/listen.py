"""PostgreSQL notifications (LISTEN) on one pooled connection, kept while the service runs."""

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

import asyncpg

from shared.db import connection, is_database_outage

log = logging.getLogger(__name__)

Handler = Callable[[str], None]


class Listener:
    """Calls `handlers[channel](payload)` for each notification committed on any replica,
    reconnecting after outages. `on_connect` runs each time listening (re)starts, for what was
    missed while it was not listening."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        name: str,
        handlers: Mapping[str, Handler],
        on_connect: Callable[[], None] = lambda: None,
        check_seconds: float = 5.0,
    ) -> None:
        self._pool = pool
        self._name = name
        self._handlers = dict(handlers)
        self._on_connect = on_connect
        self._check_seconds = check_seconds

    async def run(self) -> None:
        """Listen until cancelled, reconnecting after database outages."""
        while True:
            try:
                await self._listen()
            except Exception as exc:
                if not is_database_outage(exc):
                    log.exception(f"{self._name} failed")
                else:
                    log.warning(f"{self._name}: database unavailable")
            await asyncio.sleep(1.0)

    async def _listen(self) -> None:
        async with connection(self._pool) as conn:
            lost = asyncio.Event()

            def on_notify(_conn: object, _pid: int, channel: str, payload: object) -> None:
                self._handlers[channel](str(payload))

            def on_lost(_conn: object) -> None:
                lost.set()

            if await conn.fetchval("SELECT pg_backend_pid()") != conn.get_server_pid():
                # The process the connection started with is not the one serving it: a
                # pooler such as PgBouncer, which in transaction pooling drops notifications.
                log.warning(
                    f"{self._name}: connected through a connection pooler; LISTEN needs a "
                    "session of its own: point the service's *_LISTEN_DATABASE_URL at the "
                    "database server (or at session pooling)"
                )
            conn.add_termination_listener(on_lost)
            for channel in self._handlers:
                await conn.add_listener(channel, on_notify)
            try:
                self._on_connect()
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self._check_seconds):  # see shared.loops
                            await lost.wait()
                    if not lost.is_set():
                        # A server that vanished without closing the socket shows here.
                        await conn.fetchval("SELECT 1", timeout=self._check_seconds)
            finally:
                # The pool keeps the connection: leave nothing of this listener on it.
                conn.remove_termination_listener(on_lost)
                if not conn.is_closed():
                    for channel in self._handlers:
                        await conn.remove_listener(channel, on_notify)
