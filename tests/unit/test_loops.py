import asyncio

from shared.loops import PeriodicTask


async def test_a_loop_stops_when_it_is_cancelled_just_as_it_is_woken() -> None:
    steps = 0

    async def step() -> bool:
        nonlocal steps
        steps += 1
        return False

    task = PeriodicTask("test", step, interval=60)
    task.start()
    for _ in range(5):
        await asyncio.sleep(0)  # the loop ran its step and now waits to be woken
    assert steps == 1
    # Stopped in the same turn as the wake-up: with asyncio.wait_for (Python 3.11) the
    # cancellation was swallowed, the loop ran on, and a stopping service never exited.
    stopping = asyncio.ensure_future(task.stop())
    task.wake()
    # Without the fix the loop ran on and stop() never returned: returning at all is the proof.
    await asyncio.wait_for(stopping, 30)
    assert steps == 1
