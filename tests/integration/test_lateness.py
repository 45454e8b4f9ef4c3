"""Whether a deposit is late: one rule (wallet_pool.deposit_is_late), by which reports and
releases both judge, and a release received after a deposit re-judging it with a new change
number, on PostgreSQL through the pool manager."""

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tests.integration.test_deposits import configure_reuse_guard, deposit
from wallet_pool_service.deposits import Attribution
from wallet_pool_service.domain import demo_addresses
from wallet_pool_service.manager import WalletPoolManager

END = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
BEFORE = END - timedelta(microseconds=1)
AFTER = END + timedelta(hours=1)

# (paid: the block's time, seen: when reported, the holding's end) -> late
RULE = [
    ((AFTER, AFTER, None), False),  # the order still holds the address
    ((BEFORE, BEFORE, END), False),  # paid and seen while held
    ((BEFORE, AFTER, END), False),  # paid while held, seen after (a watcher's lag)
    ((AFTER, BEFORE, END), False),  # seen while held: its block's time ran ahead of the clock
    ((END, END, END), True),  # at the end is after it
    ((AFTER, AFTER, END), True),  # paid and seen after
    ((AFTER, END, END), True),
    ((END, AFTER, END), True),
]


@pytest.mark.parametrize(("times", "late"), RULE)
async def test_the_rule_of_lateness(
    db_pool: asyncpg.Pool, times: tuple[datetime, datetime, datetime | None], late: bool
) -> None:
    verdict = await db_pool.fetchval("SELECT wallet_pool.deposit_is_late($1, $2, $3)", *times)
    assert verdict is late


@pytest.fixture
async def manager(db_pool: asyncpg.Pool) -> WalletPoolManager:
    await configure_reuse_guard(db_pool, {"BTC": None, "ETH": None, "TRON": None})
    return WalletPoolManager(db_pool, ("ETH",))


async def test_a_release_received_late_judges_again_what_was_reported_since_the_final_time(
    manager: WalletPoolManager, db_pool: asyncpg.Pool
) -> None:
    address, holder = await held_wallet(manager)
    # Seen before the order became final, its block's time ahead of the clock: on time.
    ahead = deposit(address, height=1, time=datetime.now(UTC) + timedelta(hours=1))
    await manager.report_deposits("ETH", [ahead], 1)
    assigned = await assigned_at(db_pool, holder)
    final_time = datetime.now(UTC)
    # Reported after the order became final, before its release reached the pool: one paid
    # before the final time, one after (on time in the pool's eyes until the release).
    paid_before = deposit(address, height=2, time=assigned)
    paid_after = deposit(address, height=2, time=final_time + timedelta(microseconds=1))
    await manager.report_deposits("ETH", [paid_before, paid_after], 2)
    reported = {d.chain.txid: d for d in await manager.list_deposit_changes(0, 100)}
    assert all(d.attribution is Attribution.ON_TIME for d in reported.values())
    last_before = max(d.change for d in reported.values())

    release = await manager.release_wallet(holder, address, final_time)

    changes = await manager.list_deposit_changes(last_before, 100)
    assert [(d.chain.txid, d.attribution) for d in changes] == [(paid_after.txid, Attribution.LATE)]
    assert changes[0].change <= release.deposit_change
    assert release.deposit_change == max(
        d.change for d in await manager.list_deposit_changes(0, 100)
    )
    everything = {d.chain.txid: d.attribution for d in await manager.list_deposit_changes(0, 100)}
    assert everything == {
        ahead.txid: Attribution.ON_TIME,
        paid_before.txid: Attribution.ON_TIME,
        paid_after.txid: Attribution.LATE,
    }
    # A repeated release (its answer lost) says the same number.
    again = await manager.release_wallet(holder, address, final_time)
    assert (again.released, again.deposit_change) == (False, release.deposit_change)


async def test_a_report_after_the_release_judges_by_the_same_rule(
    manager: WalletPoolManager, db_pool: asyncpg.Pool
) -> None:
    address, holder = await held_wallet(manager)
    assigned = await assigned_at(db_pool, holder)
    final_time = assigned + timedelta(microseconds=2)
    release = await manager.release_wallet(holder, address, final_time)
    assert release.deposit_change == 0
    paid_before = deposit(address, height=2, time=assigned + timedelta(microseconds=1))
    paid_after = deposit(address, height=2, time=final_time)
    await manager.report_deposits("ETH", [paid_before, paid_after], 2)
    verdicts = {d.chain.txid: d.attribution for d in await manager.list_deposit_changes(0, 100)}
    assert verdicts == {paid_before.txid: Attribution.ON_TIME, paid_after.txid: Attribution.LATE}


async def held_wallet(manager: WalletPoolManager) -> tuple[str, uuid.UUID]:
    """A new ETH wallet, allocated to a new order: (its address, the order)."""
    [address] = demo_addresses("ETH", 1)
    await manager.add_wallets("ETH", [address])
    holder = uuid.uuid4()
    await manager.allocate_wallet(holder, "ETH")
    return address, holder


async def assigned_at(db_pool: asyncpg.Pool, order_id: uuid.UUID) -> datetime:
    """When the order's holding began (a deposit is attributed from then on)."""
    began: datetime = await db_pool.fetchval(
        "SELECT assigned_at FROM wallet_pool.assignments WHERE order_id = $1", order_id
    )
    return began
