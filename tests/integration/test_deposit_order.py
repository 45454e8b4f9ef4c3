"""ListDeposits' promise, seen by its consumer: a reader that follows the deposits with a
cursor (`after_id`, as the order service does) never skips one, however reports commit. Ids
are drawn inside the report's transaction; if a report with a later id could commit before
one with an earlier id, a reader would move its cursor past the earlier one and never see
it. These tests write concurrently and compare what the reader saw with what was recorded:
they do not restate the query's ORDER BY."""

import asyncio
import random
import uuid

import asyncpg

from shared.assets import DEFAULT_ASSETS, AssetTable
from tests.integration.test_deposits import NETWORKS, configure_reuse_guard, deposit
from wallet_pool_service import deposits
from wallet_pool_service.domain import demo_addresses
from wallet_pool_service.manager import WalletPoolManager
from wallet_pool_service.repository import PostgresWalletAdapter


class CursorReader:
    """A consumer of ListDeposits: pages after its cursor, remembering each id it saw."""

    def __init__(self, manager: WalletPoolManager) -> None:
        self._manager = manager
        self.cursor = 0
        self.seen: list[int] = []

    async def read(self) -> None:
        while page := await self._manager.list_deposits(self.cursor, 7):
            self.seen.extend(d.id for d in page)
            self.cursor = page[-1].id


async def recorded_ids(db_pool: asyncpg.Pool) -> list[int]:
    """Every recorded deposit, read by a route other than ListDeposits."""
    rows = await db_pool.fetch("SELECT id FROM wallet_pool.deposits")
    return sorted(row["id"] for row in rows)


def classified(network: str, address: str) -> deposits.ClassifiedDeposit:
    """A coin deposit to `address`, its asset resolved as the manager does before the adapter."""
    return deposits.resolve(AssetTable(DEFAULT_ASSETS), network, deposit(address), "deposits[0]")


async def waiting_for_a_lock(db_pool: asyncpg.Pool, application_name: str) -> bool:
    """Whether the backend of `application_name` waits for a lock right now."""
    return bool(
        await db_pool.fetchval(
            """SELECT count(*) FROM pg_catalog.pg_stat_activity
               WHERE application_name = $1 AND wait_event_type = 'Lock'""",
            application_name,
        )
    )


async def test_a_report_that_draws_a_later_id_does_not_commit_before_an_earlier_one(
    db_pool: asyncpg.Pool, database_url: str
) -> None:
    await configure_reuse_guard(db_pool, dict.fromkeys(NETWORKS))
    manager = WalletPoolManager(db_pool, NETWORKS)
    [first_address] = demo_addresses("ETH", 1)
    [second_address] = demo_addresses("BTC", 1)
    reader = CursorReader(manager)
    # The first report stays uncommitted (a slow commit, say) after it drew its id.
    name = f"held-{uuid.uuid4().hex[:8]}"
    held = await asyncpg.connect(database_url, server_settings={"application_name": name})
    try:
        transaction = held.transaction()
        await transaction.start()
        await PostgresWalletAdapter(held).report_deposits(
            "ETH", [classified("ETH", first_address)], 100, 0
        )
        # A second report, on another network, starts meanwhile (from another connection
        # with a name of its own, so the test can see what it waits for).
        other = await asyncpg.connect(
            database_url, server_settings={"application_name": f"{name}-2"}
        )
        try:
            second = asyncio.ensure_future(
                PostgresWalletAdapter(other).report_deposits(
                    "BTC", [classified("BTC", second_address)], 100, 0
                )
            )
            # Either it committed (the bug this test exists for) or it waits on the lock.
            while not second.done() and not await waiting_for_a_lock(db_pool, f"{name}-2"):
                await asyncio.sleep(0.01)
            await reader.read()
            assert reader.seen == [], "a report committed while an earlier one was open"
            await transaction.commit()
            await second
        finally:
            await other.close()
    finally:
        await held.close()
    await reader.read()
    assert reader.seen == await recorded_ids(db_pool)
    assert len(reader.seen) == 2


async def test_a_cursor_reader_beside_concurrent_reporters_sees_every_deposit_once(
    db_pool: asyncpg.Pool,
) -> None:
    await configure_reuse_guard(db_pool, dict.fromkeys(NETWORKS))
    manager = WalletPoolManager(db_pool, NETWORKS)
    rng = random.Random(22)
    addresses = {network: demo_addresses(network, 40) for network in NETWORKS}
    reporters_done = asyncio.Event()
    reader = CursorReader(manager)

    async def reporter(network: str, start: int) -> None:
        # One scanned height for all: concurrent reports of a network must not go back.
        for batch in range(5):
            chosen = addresses[network][start + batch : start + batch + rng.randint(1, 4)]
            await manager.report_deposits(network, [deposit(a) for a in chosen], 200, 0)

    async def follow() -> None:
        while not reporters_done.is_set():
            await reader.read()
            await asyncio.sleep(0)
        await reader.read()

    following = asyncio.ensure_future(follow())
    await asyncio.gather(*(reporter(NETWORKS[i % 3], i * 3) for i in range(8)))
    reporters_done.set()
    await following
    recorded = await recorded_ids(db_pool)
    assert len(recorded) > 20
    assert sorted(reader.seen) == recorded, "the reader skipped or repeated a deposit"
