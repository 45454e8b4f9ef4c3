"""Background loops that run a step periodically until stopped, surviving the step's failures."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from shared.db import is_database_outage, is_schema_change

log = logging.getLogger(__name__)


class PeriodicTask:
    """Runs `step` every `interval` seconds; `wake()` runs it early.

    A step returning True did a full batch, so the next one starts at once.
    """

    def __init__(self, name: str, step: Callable[[], Awaitable[bool]], interval: float) -> None:
        self.name = name
        self._step = step
        self._interval = interval
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    def wake(self) -> None:
        self._wakeup.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            busy = False
            try:
                busy = await self._step()
            except Exception as exc:
                if is_database_outage(exc):
                    log.warning("loop step: database unavailable", extra={"loop": self.name})
                elif is_schema_change(exc):
                    log.warning(
                        "loop step: schema changed, trying again", extra={"loop": self.name}
                    )
                    busy = True
                else:
                    log.exception("loop step failed", extra={"loop": self.name})
            if busy:
                await asyncio.sleep(0)
                continue
            self._wakeup.clear()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation
            # that arrives as the awaited event completes, and the loop would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._wakeup.wait()
