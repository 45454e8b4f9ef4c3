"""Waiting on the event itself in a test: a state polled until it holds. The hang guard only
turns a wait that never ends into a failure before the per-test timeout; it is no claim
about speed (bench/ measures how fast things are)."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

HANG_GUARD_SECONDS = 30.0

T = TypeVar("T")


async def until(check: Callable[[], Awaitable[T]], what: str, every: float = 0.02) -> T:
    """`check`'s first truthy result; fails naming `what` if it never comes."""
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while not (result := await check()):
        assert time.monotonic() < deadline, f"never happened: {what}"
        await asyncio.sleep(every)
    return result
