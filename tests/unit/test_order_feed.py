"""The feed's wake-ups: a change made here wakes its watchers at once; announcements from
the sequencer (any replica's) wake the orders they name, or all of them."""

import asyncio
import uuid

from order_service.feed import ORDER_EVENTS, OrderFeed


class Sequencer:
    def __init__(self, fail: bool = False) -> None:
        self.runs: list[set[uuid.UUID]] = []
        self.fail = fail

    async def __call__(self, announce: set[uuid.UUID]) -> None:
        self.runs.append(announce)
        if self.fail:
            raise RuntimeError("the sequencer failed")


async def settle(feed: OrderFeed) -> None:
    for _ in range(5):
        await asyncio.sleep(0)
    await feed.stop()


async def test_a_change_made_here_wakes_its_watchers_and_is_handed_to_the_sequencer() -> None:
    sequencer = Sequencer()
    feed = OrderFeed(10, sequencer)
    changed, other = uuid.uuid4(), uuid.uuid4()
    with feed.watch_order(changed) as woken, feed.watch_order(other) as not_woken:
        feed.changed(changed)
        assert woken.is_set()
        assert not not_woken.is_set()
    await settle(feed)
    assert sequencer.runs == [{changed}]


async def test_announcements_wake_the_named_orders_and_the_log_or_everyone_for_a_star() -> None:
    feed = OrderFeed(10, Sequencer())
    named, other = uuid.uuid4(), uuid.uuid4()
    announced = feed.handlers[ORDER_EVENTS]
    with (
        feed.watch_order(named) as named_woken,
        feed.watch_order(other) as other_woken,
        feed.watch_log() as log_woken,
    ):
        announced(f"7 {named}")
        assert named_woken.is_set() and log_woken.is_set()
        assert not other_woken.is_set()
        announced("8 *")
        assert other_woken.is_set()


async def test_ids_a_failed_run_did_not_announce_go_with_the_next_run() -> None:
    sequencer = Sequencer(fail=True)
    feed = OrderFeed(10, sequencer)
    first, second = uuid.uuid4(), uuid.uuid4()
    feed.changed(first)
    await settle(feed)
    sequencer.fail = False
    feed.changed(second)
    await settle(feed)
    assert sequencer.runs == [{first}, {first, second}]
