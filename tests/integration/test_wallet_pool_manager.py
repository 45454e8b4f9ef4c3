import asyncio
import uuid

import asyncpg
import pytest

from shared.errors import FailedPrecondition, InvalidArgument, NotFound
from tests.invariants import queue_blocks_add_up
from tests.waiting import HANG_GUARD_SECONDS, until
from wallet_pool_service.domain import (
    Allocation,
    HeldWallet,
    ReleasedOrder,
    ReleaseMismatch,
    WalletState,
    demo_addresses,
)
from wallet_pool_service.manager import WalletPoolManager
from wallet_pool_service.repository import PostgresQueueAdapter, PostgresWalletAdapter

NETWORKS = ("BTC", "ETH", "TRON")


@pytest.fixture
def manager(db_pool: asyncpg.Pool) -> WalletPoolManager:
    return WalletPoolManager(db_pool, NETWORKS)


async def _holder(db_pool: asyncpg.Pool, address: str) -> uuid.UUID | None:
    holder: uuid.UUID | None = await db_pool.fetchval(
        "SELECT order_id FROM wallet_pool.wallets WHERE address = $1", address
    )
    return holder


async def test_allocation_gives_a_wallet_and_repeating_it_gives_the_same_one(
    manager: WalletPoolManager, db_pool: asyncpg.Pool
) -> None:
    [address] = demo_addresses("ETH", 1)
    await manager.add_wallets("ETH", [address])
    order = uuid.uuid4()
    assert await manager.allocate_wallet(order, "eth") == Allocation(address=address)
    assert await manager.allocate_wallet(order, "ETH") == Allocation(address=address)
    assert await _holder(db_pool, address) == order


async def test_orders_queue_in_arrival_order_and_receive_released_wallets_first_come_first_served(
    manager: WalletPoolManager, db_pool: asyncpg.Pool
) -> None:
    [address] = demo_addresses("BTC", 1)
    await manager.add_wallets("BTC", [address])
    holder, first, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await manager.allocate_wallet(holder, "BTC")
    assert await manager.allocate_wallet(first, "BTC") == Allocation(queue_position=1)
    assert await manager.allocate_wallet(second, "BTC") == Allocation(queue_position=2)
    assert await manager.allocate_wallet(second, "BTC") == Allocation(queue_position=2)

    release = await manager.release_wallet(holder, address)
    assert release.released
    assert await _holder(db_pool, address) == first
    assert await manager.allocate_wallet(second, "BTC") == Allocation(queue_position=1)

    await manager.release_wallet(first, address)
    assert await _holder(db_pool, address) == second
    [stats] = await manager.get_pool_stats("BTC")
    assert (stats.total, stats.available, stats.allocated, stats.queued) == (1, 0, 1, 0)


async def test_a_newcomer_cannot_jump_the_queue_when_a_wallet_is_free(
    manager: WalletPoolManager, db_pool: asyncpg.Pool
) -> None:
    waiting = uuid.uuid4()
    assert await manager.allocate_wallet(waiting, "TRON") == Allocation(queue_position=1)
    # A wallet appears directly in the table (as after a crash mid hand-off): the newcomer
    # still queues behind the waiting order, and the sweep serves the waiting order.
    [address] = demo_addresses("TRON", 1)
    await db_pool.execute(
        "INSERT INTO wallet_pool.wallets (network, address) VALUES ('TRON', $1)", address
    )
    newcomer = uuid.uuid4()
    assert await manager.allocate_wallet(newcomer, "TRON") == Allocation(queue_position=1)
    assert await _holder(db_pool, address) == waiting


async def test_release_is_guarded_by_the_holder_and_harmless_to_repeat(
    manager: WalletPoolManager, db_pool: asyncpg.Pool
) -> None:
    a, b = demo_addresses("ETH", 2)
    await manager.add_wallets("ETH", [a, b])
    owner, stranger = uuid.uuid4(), uuid.uuid4()
    assert (await manager.allocate_wallet(owner, "ETH")).address == a

    assert not (await manager.release_wallet(stranger, a)).released
    with pytest.raises(ReleaseMismatch, match=f"does not hold {b}: it holds {a}"):
        await manager.release_wallet(owner, b)
    assert await _holder(db_pool, a) == owner

    assert (await manager.release_wallet(owner, a)).released
    assert not (await manager.release_wallet(owner, a)).released
    assert await _holder(db_pool, a) is None


async def test_a_release_naming_a_wallet_the_order_does_not_hold_changes_nothing(
    manager: WalletPoolManager, db_pool: asyncpg.Pool
) -> None:
    w_a, w_b = demo_addresses("ETH", 2)
    await manager.add_wallets("ETH", [w_a, w_b])
    a, b, c = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await manager.allocate_wallet(a, "ETH")
    await manager.allocate_wallet(b, "ETH")
    assert await manager.allocate_wallet(c, "ETH") == Allocation(queue_position=1)

    with pytest.raises(ReleaseMismatch, match="waits in the ETH queue"):
        await manager.release_wallet(c, w_a)
    with pytest.raises(ReleaseMismatch, match=f"it holds {w_b}"):
        await manager.release_wallet(b, w_a)

    # B keeps its wallet (asking again gets it), C its place; A's release then serves C.
    assert await manager.allocate_wallet(b, "ETH") == Allocation(address=w_b)
    assert await manager.allocate_wallet(c, "ETH") == Allocation(queue_position=1)
    assert (await manager.release_wallet(a, w_a)).released
    assert await _holder(db_pool, w_a) == c


async def test_a_late_release_cannot_free_a_wallet_that_moved_on(
    manager: WalletPoolManager, db_pool: asyncpg.Pool
) -> None:
    [address] = demo_addresses("BTC", 1)
    await manager.add_wallets("BTC", [address])
    first, second = uuid.uuid4(), uuid.uuid4()
    await manager.allocate_wallet(first, "BTC")
    await manager.release_wallet(first, address)
    assert (await manager.allocate_wallet(second, "BTC")).address == address
    assert not (await manager.release_wallet(first, address)).released
    assert await _holder(db_pool, address) == second


async def test_a_released_order_never_gets_another_wallet(manager: WalletPoolManager) -> None:
    await manager.add_wallets("ETH", demo_addresses("ETH", 2))
    order = uuid.uuid4()
    await manager.allocate_wallet(order, "ETH")
    await manager.release_wallet(order)
    with pytest.raises(FailedPrecondition, match="already released"):
        await manager.allocate_wallet(order, "ETH")


async def test_releasing_a_queued_order_takes_it_out_of_the_queue(
    manager: WalletPoolManager,
) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    await manager.allocate_wallet(first, "BTC")
    await manager.allocate_wallet(second, "BTC")
    release = await manager.release_wallet(first)
    assert (release.released, release.dequeued) == (False, True)
    assert await manager.allocate_wallet(second, "BTC") == Allocation(queue_position=1)


async def test_an_order_keeps_its_network(manager: WalletPoolManager) -> None:
    await manager.add_wallets("ETH", demo_addresses("ETH", 1))
    order = uuid.uuid4()
    await manager.allocate_wallet(order, "ETH")
    with pytest.raises(FailedPrecondition, match=r"^network: "):
        await manager.allocate_wallet(order, "BTC")


async def test_the_least_recently_released_wallet_is_given_first(
    manager: WalletPoolManager,
) -> None:
    a, b, c = demo_addresses("ETH", 3)
    await manager.add_wallets("ETH", [a, b, c])
    orders = [uuid.uuid4() for _ in range(3)]
    given = [(await manager.allocate_wallet(o, "ETH")).address for o in orders]
    assert given == [a, b, c]
    for order, address in zip([orders[1], orders[0], orders[2]], [b, a, c], strict=True):
        await manager.release_wallet(order, address)
    assert (await manager.allocate_wallet(uuid.uuid4(), "ETH")).address == b


async def test_adding_wallets_reports_duplicates_and_serves_the_queue(
    manager: WalletPoolManager, db_pool: asyncpg.Pool
) -> None:
    waiting = uuid.uuid4()
    await manager.allocate_wallet(waiting, "BTC")
    a, b = demo_addresses("BTC", 2)
    result = await manager.add_wallets("BTC", [a, b, a])
    assert (result.added, result.duplicates) == ([a, b], [a])
    again = await manager.add_wallets("btc", [b])
    assert (again.added, again.duplicates) == ([], [b])
    assert await _holder(db_pool, a) == waiting
    with pytest.raises(InvalidArgument, match=r"^addresses\[0\]: "):
        await manager.add_wallets("BTC", ["0x52908400098527886E0F7030069857D2E4169EE7"])
    with pytest.raises(InvalidArgument, match=r"^network: "):
        await manager.add_wallets("DOGE", [a])


async def test_queue_places_stay_exact_across_blocks_as_orders_leave_anywhere(
    manager: WalletPoolManager, db_pool: asyncpg.Pool
) -> None:
    """Places are read from per-block counts (blocks of 1,024 sequence numbers) plus a count
    within one block: they must match a plain count of everyone ahead, wherever orders
    leave and whichever networks interleave."""
    waiting = [uuid.uuid4() for _ in range(2600)]
    others = [uuid.uuid4() for _ in range(600)]
    await db_pool.execute(
        """INSERT INTO wallet_pool.queue (order_id, network)
           SELECT o, CASE WHEN i % 5 = 0 THEN 'BTC' ELSE 'ETH' END
           FROM unnest($1::uuid[]) WITH ORDINALITY AS t (o, i)""",
        [*waiting, *others],
    )
    gone = list(dict.fromkeys(waiting[::7] + waiting[1000:1100] + waiting[-5:]))
    for order_id in gone:
        assert (await manager.release_wallet(order_id)).dequeued

    expected = await db_pool.fetch(
        """SELECT order_id, network,
                  rank() OVER (PARTITION BY network ORDER BY seq) AS place
           FROM wallet_pool.queue"""
    )
    assert len(expected) == 3200 - len(gone)
    for row in expected[::13] + expected[-3:]:
        allocation = await manager.allocate_wallet(row["order_id"], row["network"])
        assert allocation.queue_position == row["place"], row
    stats = {s.network: s.queued for s in await manager.get_pool_stats()}
    assert stats["ETH"] + stats["BTC"] == len(expected)
    async with db_pool.acquire() as conn:
        assert await queue_blocks_add_up(conn) == []
    # Emptied blocks are dropped, so the blocks ahead of a place stay few.
    await db_pool.execute("DELETE FROM wallet_pool.queue")
    assert await db_pool.fetchval("SELECT count(*) FROM wallet_pool.queue_blocks") == 0


async def test_200_concurrent_allocations_over_100_wallets_give_100_distinct_wallets_and_queue_100(
    manager: WalletPoolManager, db_pool: asyncpg.Pool
) -> None:
    await manager.add_wallets("ETH", demo_addresses("ETH", 100))
    orders = [uuid.uuid4() for _ in range(200)]
    results = await asyncio.gather(*(manager.allocate_wallet(o, "ETH") for o in orders))

    addresses = [r.address for r in results if r.address is not None]
    positions = sorted(r.queue_position for r in results if r.queue_position is not None)
    assert len(addresses) == 100 and len(set(addresses)) == 100
    assert len(positions) == 100 and len(set(positions)) == 100
    held = await db_pool.fetchval(
        "SELECT count(DISTINCT order_id) FROM wallet_pool.wallets WHERE order_id IS NOT NULL"
    )
    queued = await db_pool.fetchval("SELECT count(*) FROM wallet_pool.queue")
    assert (held, queued) == (100, 100)
    both = await db_pool.fetchval(
        "SELECT count(*) FROM wallet_pool.queue q JOIN wallet_pool.wallets w USING (order_id)"
    )
    assert both == 0


async def test_concurrent_releases_and_allocations_never_share_a_wallet_and_serve_the_queue(
    manager: WalletPoolManager, db_pool: asyncpg.Pool
) -> None:
    await manager.add_wallets("BTC", demo_addresses("BTC", 20))
    holders = [uuid.uuid4() for _ in range(20)]
    first = await asyncio.gather(*(manager.allocate_wallet(o, "BTC") for o in holders))
    newcomers = [uuid.uuid4() for _ in range(60)]

    await asyncio.gather(
        *(manager.release_wallet(o, a.address or "") for o, a in zip(holders, first, strict=True)),
        *(manager.allocate_wallet(o, "BTC") for o in newcomers),
    )
    await manager.hand_off_everywhere()

    rows = await db_pool.fetch(
        "SELECT order_id FROM wallet_pool.wallets WHERE order_id IS NOT NULL"
    )
    holding = {row["order_id"] for row in rows}
    assert len(holding) == 20 and holding <= set(newcomers)
    queued = await db_pool.fetchval("SELECT count(*) FROM wallet_pool.queue")
    assert queued == 40
    free = await db_pool.fetchval("SELECT count(*) FROM wallet_pool.wallets WHERE order_id IS NULL")
    assert free == 0


async def test_no_wallet_stays_free_beside_a_waiting_order_without_the_sweep(
    manager: WalletPoolManager, db_pool: asyncpg.Pool
) -> None:
    """Releases and orders joining the queue at once, round after round: every wallet freed
    goes to a waiting order by the calls themselves, with no sweep to catch one left over."""
    await manager.add_wallets("TRON", demo_addresses("TRON", 10))
    holders = [uuid.uuid4() for _ in range(10)]
    for order in holders:
        assert (await manager.allocate_wallet(order, "TRON")).address is not None
    for _ in range(5):
        newcomers = [uuid.uuid4() for _ in range(10)]
        await asyncio.gather(
            *(manager.release_wallet(order) for order in holders),
            *(manager.allocate_wallet(order, "TRON") for order in newcomers),
        )
        free = await db_pool.fetchval(
            "SELECT count(*) FROM wallet_pool.wallets WHERE order_id IS NULL"
        )
        queued = await db_pool.fetchval("SELECT count(*) FROM wallet_pool.queue")
        assert (free, queued) == (0, 0)
        holders = newcomers


async def test_a_hand_off_after_a_commit_waits_for_an_order_joining_the_queue(
    database_url: str,
) -> None:
    """An order joins the queue (uncommitted) while a wallet comes free and its hand-off
    runs: the hand-off waits for the join to commit, then gives the wallet to that order."""
    joining, freeing = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    joining_seen_from_outside = await asyncpg.connect(database_url)
    try:
        order = uuid.uuid4()
        [address] = demo_addresses("TRON", 1)
        join = joining.transaction()
        await join.start()
        assert (await PostgresWalletAdapter(joining).allocate(order, "TRON")).enqueued
        await freeing.execute(
            "INSERT INTO wallet_pool.wallets (network, address) VALUES ('TRON', $1)", address
        )
        hand_off = asyncio.create_task(PostgresQueueAdapter(freeing).hand_off_waiting("TRON"))
        # The hand-off either finished (having found nobody waiting: the bug) or waits on
        # the join's lock; asked of the server, not timed.
        pid = freeing.get_server_pid()

        async def settled() -> bool:
            waits = await joining_seen_from_outside.fetchval(
                "SELECT wait_event_type = 'Lock' FROM pg_catalog.pg_stat_activity WHERE pid = $1",
                pid,
            )
            return hand_off.done() or bool(waits)

        await until(settled, "the hand-off finished or waits on a lock")
        assert not hand_off.done()  # it would have found nobody waiting
        await join.commit()
        assert await asyncio.wait_for(hand_off, HANG_GUARD_SECONDS) == (order, address)
    finally:
        await joining.close()
        await freeing.close()
        await joining_seen_from_outside.close()


async def test_a_disabled_wallet_is_never_allocated_and_a_held_one_leaves_after_its_order(
    manager: WalletPoolManager, db_pool: asyncpg.Pool
) -> None:
    idle, held = demo_addresses("ETH", 2)
    await manager.add_wallets("ETH", [idle, held])
    holder_order = uuid.uuid4()
    await manager.allocate_wallet(holder_order, "ETH")  # takes `idle` (the oldest)
    assert await _holder(db_pool, idle) == holder_order
    await manager.set_wallet_disabled(idle, "compromised")
    await manager.set_wallet_disabled(held, "rotated")

    newcomer = uuid.uuid4()
    assert await manager.allocate_wallet(newcomer, "ETH") == Allocation(queue_position=1)
    [stats] = await manager.get_pool_stats("ETH")
    assert (stats.available, stats.allocated, stats.disabled, stats.queued) == (0, 1, 1, 1)

    await manager.release_wallet(holder_order, idle)
    assert await _holder(db_pool, idle) is None
    [stats] = await manager.get_pool_stats("ETH")
    assert (stats.available, stats.allocated, stats.disabled, stats.queued) == (0, 0, 2, 1)

    enabled = await manager.set_wallet_disabled(held, None)
    assert not enabled.disabled
    assert await _holder(db_pool, held) == newcomer


async def test_stats_flag_networks_below_the_low_water_mark(db_pool: asyncpg.Pool) -> None:
    manager = WalletPoolManager(db_pool, NETWORKS, low_water_mark=2)
    await manager.add_wallets("BTC", demo_addresses("BTC", 2))
    stats = {s.network: s for s in await manager.get_pool_stats()}
    assert set(stats) == set(NETWORKS)
    assert not stats["BTC"].below_low_water_mark
    assert stats["ETH"].below_low_water_mark
    await manager.allocate_wallet(uuid.uuid4(), "BTC")
    [btc] = await manager.get_pool_stats("BTC")
    assert btc.below_low_water_mark


async def test_wallets_list_by_network_and_state_in_stable_pages(
    manager: WalletPoolManager,
) -> None:
    addresses = demo_addresses("TRON", 7)
    await manager.add_wallets("TRON", addresses)
    await manager.add_wallets("ETH", demo_addresses("ETH", 3))
    await manager.allocate_wallet(uuid.uuid4(), "TRON")

    seen, token = [], ""
    while True:
        page, token = await manager.list_wallets("TRON", None, 3, token)
        seen += [w.address for w in page]
        if not token:
            break
        if len(seen) == 3:
            # A wallet added between pages does not shift or repeat what comes next.
            await manager.add_wallets("ETH", demo_addresses("ETH", 4)[3:])
    assert seen == addresses
    allocated, _ = await manager.list_wallets("TRON", WalletState.ALLOCATED, 0, "")
    assert [w.address for w in allocated] == addresses[:1]
    available, _ = await manager.list_wallets("", WalletState.AVAILABLE, 500, "")
    assert len(available) == 6 + 4
    with pytest.raises(InvalidArgument, match=r"^page_token: "):
        await manager.list_wallets("", None, 0, "bm90LWEtdG9rZW4=")


async def test_wallet_history_names_every_holder_with_times(manager: WalletPoolManager) -> None:
    [address] = demo_addresses("BTC", 1)
    await manager.add_wallets("BTC", [address])
    first, second = uuid.uuid4(), uuid.uuid4()
    await manager.allocate_wallet(first, "BTC")
    await manager.allocate_wallet(second, "BTC")  # queued
    await manager.release_wallet(first, address)  # hands the wallet to `second`

    history = await manager.get_wallet_history(address)
    assert [h.order_id for h in history] == [first, second]
    assert history[0].release_time is not None
    assert history[0].assign_time <= history[0].release_time <= history[1].assign_time
    assert history[1].release_time is None
    with pytest.raises(NotFound, match=r"^address: "):
        await manager.get_wallet_history(demo_addresses("BTC", 2)[1])


async def test_a_released_wallet_cools_down_before_anyone_gets_it_then_serves_the_queue(
    db_pool: asyncpg.Pool,
) -> None:
    manager = WalletPoolManager(db_pool, NETWORKS, cooldown_seconds=0.6)
    [address] = demo_addresses("TRON", 1)
    await manager.add_wallets("TRON", [address])
    first, newcomer = uuid.uuid4(), uuid.uuid4()
    await manager.allocate_wallet(first, "TRON")

    await manager.release_wallet(first, address)
    [stats] = await manager.get_pool_stats("TRON")
    assert (stats.available, stats.cooling, stats.allocated, stats.total) == (0, 1, 0, 1)
    [cooling], _ = await manager.list_wallets("TRON", WalletState.COOLING, 10, "")
    assert cooling.address == address and cooling.cooldown_end_time is not None
    assert await manager.allocate_wallet(newcomer, "TRON") == Allocation(queue_position=1)
    assert await _holder(db_pool, address) is None

    # Nobody calls anything: the cooldown's end hands the wallet to the waiting order, not
    # before it ends (by the database's clock, which set both times).
    await until(lambda: _holder(db_pool, address), "the cooldown's end served the queue")
    assert await _holder(db_pool, address) == newcomer
    assigned = await db_pool.fetchval(
        "SELECT assigned_at FROM wallet_pool.assignments WHERE order_id = $1", newcomer
    )
    assert assigned >= cooling.cooldown_end_time
    [stats] = await manager.get_pool_stats("TRON")
    assert (stats.available, stats.cooling, stats.allocated, stats.queued) == (0, 0, 1, 0)
    await manager.close()


async def test_without_cooldown_a_released_wallet_is_available_at_once(
    manager: WalletPoolManager,
) -> None:
    [address] = demo_addresses("ETH", 1)
    await manager.add_wallets("ETH", [address])
    order = uuid.uuid4()
    await manager.allocate_wallet(order, "ETH")
    await manager.release_wallet(order, address)
    [stats] = await manager.get_pool_stats("ETH")
    assert (stats.available, stats.cooling) == (1, 0)
    assert await manager.allocate_wallet(uuid.uuid4(), "ETH") == Allocation(address=address)


async def test_an_order_served_from_the_queue_while_it_asks_again_is_not_queued_twice(
    database_url: str,
) -> None:
    """The allocation sync asks about a waiting order while a release hands it a wallet: the
    ask sees the order waiting (the release has not committed) or holding (it has), never
    neither, so the order cannot join the queue again."""
    asking, releasing = await asyncpg.connect(database_url), await asyncpg.connect(database_url)
    try:
        order, behind = uuid.uuid4(), uuid.uuid4()
        [free, held] = demo_addresses("ETH", 2)
        await releasing.execute(
            "INSERT INTO wallet_pool.wallets (network, address) VALUES ('ETH', $1), ('ETH', $2)",
            free,
            held,
        )
        first, second = uuid.uuid4(), uuid.uuid4()
        pool = PostgresWalletAdapter(releasing)
        assert (await pool.allocate(first, "ETH")).claimed == free
        assert (await pool.allocate(second, "ETH")).claimed == held
        assert (await pool.allocate(order, "ETH")).enqueued
        assert (await pool.allocate(behind, "ETH")).enqueued
        wallets = PostgresWalletAdapter(asking)
        async with releasing.transaction():
            # `first` is released, and its wallet handed to `order`, not yet committed.
            released = await pool.mark_as_available(first, free, 0)
            assert released == ReleasedOrder(HeldWallet(free, "ETH"), False, (order, free))
            before = await wallets.allocate(order, "ETH")
        after = await wallets.allocate(order, "ETH")
        assert (before.place.waiting, before.place.held) == (("ETH", 1), None)
        assert (after.place.waiting, after.place.held) == (None, HeldWallet(free, "ETH"))
        assert not before.enqueued and not after.enqueued
        assert before.claimed is None and after.claimed is None
        queued = await asking.fetchval(
            "SELECT count(*) FROM wallet_pool.queue WHERE order_id = $1", order
        )
        assert queued == 0
    finally:
        await asking.close()
        await releasing.close()
