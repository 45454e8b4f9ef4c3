"""Deposit reports, attribution from the address history, late deposits and the watermark
guard, on PostgreSQL through the pool manager."""

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from shared.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from tests.invariants import (
    deposits_are_recorded_once_and_attributed,
    no_wallet_reused_over_a_deposit_or_before_its_watermark,
)
from tests.waiting import until
from wallet_pool_service.deposits import Attribution, ChainDeposit
from wallet_pool_service.domain import Allocation, WalletState, demo_addresses
from wallet_pool_service.manager import WalletPoolManager
from wallet_pool_service.repository import PostgresWalletAdapter

NETWORKS = ("BTC", "ETH", "TRON")


@pytest.fixture
async def manager(db_pool: asyncpg.Pool) -> WalletPoolManager:
    await configure_reuse_guard(db_pool, {"BTC": None, "ETH": 10, "TRON": None})
    return WalletPoolManager(db_pool, NETWORKS)


async def configure_reuse_guard(
    db_pool: asyncpg.Pool, confirmations: dict[str, int | None]
) -> None:
    """What a pool starting with this WALLET_REUSE_CONFIRMATIONS writes."""
    async with db_pool.acquire() as conn:
        await PostgresWalletAdapter(conn).configure_reuse_guard(confirmations)


def deposit(
    address: str,
    *,
    txid: str | None = None,
    index: int = 0,
    amount: str = "1.5",
    height: int = 100,
    time: datetime | None = None,
) -> ChainDeposit:
    return ChainDeposit(
        address=address,
        txid=txid or "0x" + uuid.uuid4().hex * 2,
        index=index,
        amount=Decimal(amount),
        block_height=height,
        block_time=time or datetime.now(UTC),
        confirmations=1,
    )


async def wallet_state(manager: WalletPoolManager, address: str) -> tuple[WalletState, str]:
    [wallet], _ = await manager.list_wallets("ETH", None, 500, "")
    assert wallet.address == address
    return wallet.state, wallet.cooling_reason


async def test_a_deposit_is_attributed_to_the_order_holding_the_address_and_reports_are_idempotent(
    manager: WalletPoolManager,
) -> None:
    [address] = demo_addresses("ETH", 1)
    await manager.add_wallets("ETH", [address])
    order = uuid.uuid4()
    await manager.allocate_wallet(order, "ETH")
    paid = deposit(address.upper().replace("0X", "0x"), height=100)

    first = await manager.report_deposits("ETH", [paid], 105)
    again = await manager.report_deposits("ETH", [paid], 105)

    assert (first.recorded, first.repeated, first.late, first.unattributed) == (1, 0, 0, 0)
    assert (again.recorded, again.repeated) == (0, 1)
    [recorded] = await manager.list_deposits(0, 50)
    assert recorded.order_id == order and recorded.attribution is Attribution.ON_TIME
    assert recorded.chain.address == address and recorded.chain.amount == Decimal("1.5")


async def test_a_deposit_to_an_unknown_address_is_kept_unattributed(
    manager: WalletPoolManager,
) -> None:
    [stranger] = demo_addresses("BTC", 1)
    outcome = await manager.report_deposits("BTC", [deposit(stranger)], 200)
    assert (outcome.recorded, outcome.unattributed) == (1, 1)
    [recorded] = await manager.list_deposits(0, 50)
    assert recorded.order_id is None and recorded.attribution is Attribution.UNATTRIBUTED


async def test_a_deposit_after_the_release_is_late_listed_and_holds_the_wallet_back_until_enabled(
    manager: WalletPoolManager,
) -> None:
    [address] = demo_addresses("TRON", 1)
    await manager.add_wallets("TRON", [address])
    order, waiting = uuid.uuid4(), uuid.uuid4()
    await manager.allocate_wallet(order, "TRON")
    await manager.allocate_wallet(waiting, "TRON")
    # The guard is off on TRON: the waiting order gets the wallet at once...
    released_at = datetime.now(UTC)
    await manager.release_wallet(order, address)
    await manager.release_wallet(waiting, address)
    # ...and when its order is over too, a payment made between the two releases belongs
    # to the waiting order, while one made after both is late (for the last holder).
    late = deposit(address, time=datetime.now(UTC) + timedelta(seconds=1), amount="2")

    outcome = await manager.report_deposits("TRON", [late], 300)

    assert (outcome.recorded, outcome.late) == (1, 1)
    [listed], token = await manager.list_late_deposits("TRON", 50, "")
    assert token == "" and listed.order_id == waiting
    assert listed.late_by is not None and listed.late_by > timedelta(0)
    assert listed.release_time is not None and listed.release_time >= released_at
    wallet = (await manager.list_wallets("TRON", WalletState.DISABLED, 50, ""))[0][0]
    assert wallet.address == address and wallet.disabled_reason.startswith("late deposit")
    assert str(waiting) in wallet.disabled_reason
    # Held out: a new order waits, until an operator enables the wallet again.
    newcomer = uuid.uuid4()
    assert await manager.allocate_wallet(newcomer, "TRON") == Allocation(queue_position=1)
    await manager.set_wallet_disabled(address, None)
    assert await manager.allocate_wallet(newcomer, "TRON") == Allocation(address=address)


async def test_a_released_wallet_waits_for_the_watermark_and_a_silent_watcher_stops_reuse(
    manager: WalletPoolManager,
) -> None:
    [address] = demo_addresses("ETH", 1)
    await manager.add_wallets("ETH", [address])
    first, second = uuid.uuid4(), uuid.uuid4()
    await manager.allocate_wallet(first, "ETH")
    await manager.release_wallet(first, address)

    # The watcher never reported: the wallet stays cooling, and stats say why.
    assert await manager.allocate_wallet(second, "ETH") == Allocation(queue_position=1)
    [stats] = await manager.get_pool_stats("ETH")
    assert (stats.cooling, stats.held_by_watermark, stats.available) == (1, 1, 0)
    assert "never reported" in stats.held_reason
    state, reason = await wallet_state(manager, address)
    assert state is WalletState.COOLING and "next report" in reason

    # Its first report gives the height of the release: 500 + 10 lets it go.
    await manager.report_deposits("ETH", [], 500)
    state, reason = await wallet_state(manager, address)
    assert state is WalletState.COOLING and "scan height 510 (scanned 500)" in reason
    await manager.report_deposits("ETH", [], 509)
    assert await manager.allocate_wallet(second, "ETH") == Allocation(queue_position=1)
    await manager.report_deposits("ETH", [], 510)
    # The report handed the wallet to the waiting order.
    assert await manager.allocate_wallet(second, "ETH") == Allocation(address=address)


async def test_a_watcher_catching_up_counts_a_release_from_the_chains_height_not_its_lag(
    manager: WalletPoolManager,
) -> None:
    [address] = demo_addresses("ETH", 1)
    await manager.add_wallets("ETH", [address])
    await manager.report_deposits("ETH", [], 1000)
    first, second = uuid.uuid4(), uuid.uuid4()
    await manager.allocate_wallet(first, "ETH")
    # The watcher stalls at 1000 while the chain moves on; the wallet is released meanwhile.
    await manager.release_wallet(first, address)
    await manager.allocate_wallet(second, "ETH")

    # One report catches up to the tip, 1100: the release counts from there (+10), not
    # from the 1000 scanned before it, so a payment in the blocks after 1100 is still seen.
    await manager.report_deposits("ETH", [], 1100)
    assert await manager.allocate_wallet(second, "ETH") == Allocation(queue_position=1)
    state, reason = await wallet_state(manager, address)
    assert state is WalletState.COOLING and "scan height 1110 (scanned 1100)" in reason
    # A lagging watcher names the chain's height apart from what it scanned.
    await manager.report_deposits("ETH", [], 1105, chain_height=1300)
    await manager.report_deposits("ETH", [], 1110)
    assert await manager.allocate_wallet(second, "ETH") == Allocation(address=address)
    with pytest.raises(InvalidArgument, match="chain_height"):
        await manager.report_deposits("ETH", [], 1120, chain_height=1119)


async def test_a_deposit_after_the_order_became_final_is_late_though_the_release_came_later(
    manager: WalletPoolManager, db_pool: asyncpg.Pool
) -> None:
    [address] = demo_addresses("ETH", 1)
    await manager.add_wallets("ETH", [address])
    await manager.report_deposits("ETH", [], 1000)
    holder = uuid.uuid4()
    await manager.allocate_wallet(holder, "ETH")
    final_time = datetime.now(UTC)
    # Paid after the order became final, reported before its release reached the pool.
    paid = deposit(address, height=1001, time=final_time + timedelta(seconds=0.1))
    assert (await manager.report_deposits("ETH", [paid], 1001)).late == 0
    # The release reaches the pool after the payment's block time (by the database's clock,
    # which a release that ended the holding on arrival would use): only the order's final
    # time can make the deposit late.
    await until(
        lambda: db_pool.fetchval("SELECT now() > $1::timestamptz", paid.block_time),
        "the database's clock passed the payment",
    )

    await manager.release_wallet(holder, address, final_time)

    late, _ = await manager.list_late_deposits("ETH", 100, "")
    assert [(d.chain.txid, d.order_id) for d in late] == [(paid.txid, holder)]
    [wallet], _ = await manager.list_wallets("ETH", None, 500, "")
    assert wallet.state is WalletState.DISABLED
    assert wallet.disabled_reason.startswith(f"late deposit {paid.txid}:0 of 1.5, ")


async def test_turning_the_guard_off_lets_go_the_wallets_it_holds(
    manager: WalletPoolManager, db_pool: asyncpg.Pool
) -> None:
    [address] = demo_addresses("ETH", 1)
    await manager.add_wallets("ETH", [address])
    first, second = uuid.uuid4(), uuid.uuid4()
    await manager.allocate_wallet(first, "ETH")
    await manager.release_wallet(first, address)
    # No watcher ever reported: held. Restarted with the guard off, it is free again.
    assert await manager.allocate_wallet(second, "ETH") == Allocation(queue_position=1)
    await configure_reuse_guard(db_pool, {"BTC": None, "ETH": None, "TRON": None})
    await manager.hand_off_everywhere()
    assert await manager.allocate_wallet(second, "ETH") == Allocation(address=address)


async def test_a_late_deposit_on_a_wallet_disabled_already_adds_its_reason(
    manager: WalletPoolManager,
) -> None:
    [address] = demo_addresses("ETH", 1)
    await manager.add_wallets("ETH", [address])
    await manager.report_deposits("ETH", [], 1000)
    holder = uuid.uuid4()
    await manager.allocate_wallet(holder, "ETH")
    await manager.release_wallet(holder, address)
    await manager.set_wallet_disabled(address, "maintenance")

    late = deposit(address, height=1001, time=datetime.now(UTC) + timedelta(seconds=1))
    assert (await manager.report_deposits("ETH", [late], 1001)).late == 1

    [wallet], _ = await manager.list_wallets("ETH", None, 500, "")
    assert wallet.disabled_reason.startswith("maintenance; late deposit ")


async def test_a_late_deposit_reported_before_the_watermark_keeps_the_wallet_from_reuse(
    manager: WalletPoolManager,
) -> None:
    [address] = demo_addresses("ETH", 1)
    await manager.add_wallets("ETH", [address])
    await manager.report_deposits("ETH", [], 1000)
    first, second = uuid.uuid4(), uuid.uuid4()
    await manager.allocate_wallet(first, "ETH")
    await manager.release_wallet(first, address)
    await manager.allocate_wallet(second, "ETH")

    # In the same report as the height that would let the wallet go: the deposit wins.
    late = deposit(address, height=1005, time=datetime.now(UTC) + timedelta(seconds=1))
    outcome = await manager.report_deposits("ETH", [late], 1010)

    assert outcome.late == 1
    assert await manager.allocate_wallet(second, "ETH") == Allocation(queue_position=1)
    [stats] = await manager.get_pool_stats("ETH")
    assert (stats.disabled, stats.queued) == (1, 1)


async def test_with_the_guard_off_a_released_wallet_is_reused_at_once(
    manager: WalletPoolManager,
) -> None:
    [address] = demo_addresses("BTC", 1)
    await manager.add_wallets("BTC", [address])
    first, second = uuid.uuid4(), uuid.uuid4()
    await manager.allocate_wallet(first, "BTC")
    await manager.release_wallet(first, address)
    assert await manager.allocate_wallet(second, "BTC") == Allocation(address=address)


async def test_a_scanned_height_going_back_is_refused_and_records_nothing(
    manager: WalletPoolManager,
) -> None:
    [address] = demo_addresses("ETH", 1)
    await manager.report_deposits("ETH", [], 700)
    with pytest.raises(FailedPrecondition, match=r"^scanned_height: 699 is below .* \(700\)"):
        await manager.report_deposits("ETH", [deposit(address, height=600)], 699)
    assert await manager.list_deposits(0, 50) == []
    [stats] = await manager.get_pool_stats("ETH")
    assert stats.scanned_height == 700


async def test_a_txid_reported_again_with_another_amount_is_refused_and_the_first_is_kept(
    manager: WalletPoolManager,
) -> None:
    [address] = demo_addresses("ETH", 1)
    first = deposit(address, txid="0xabc", amount="1.5")
    await manager.report_deposits("ETH", [first], 100)
    changed = deposit(address, txid="0xabc", amount="2.5")
    other = deposit(address, txid="0xdef")

    with pytest.raises(AlreadyExists, match=r"^deposits\[1\]: ETH deposit 0xabc:0 was recorded"):
        await manager.report_deposits("ETH", [other, changed], 101)

    [kept] = await manager.list_deposits(0, 50)
    assert kept.chain.amount == Decimal("1.5")
    [stats] = await manager.get_pool_stats("ETH")
    assert stats.scanned_height == 100


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"block_height": 2**62}, "deposits[0].block_height"),
        ({"block_height": 101}, "deposits[0].block_height"),
        ({"address": "0x123"}, "deposits[0].address"),
        ({"address": ""}, "deposits[0].address"),
        ({"txid": ""}, "deposits[0].txid"),
        ({"txid": "x" * 129}, "deposits[0].txid"),
    ],
)
async def test_a_malformed_deposit_is_refused_naming_its_field(
    manager: WalletPoolManager, change: dict[str, object], field: str
) -> None:
    [address] = demo_addresses("ETH", 1)
    fields = {**deposit(address).__dict__, "block_height": 100, **change}
    with pytest.raises(InvalidArgument) as refused:
        await manager.report_deposits("ETH", [ChainDeposit(**fields)], 100)
    assert refused.value.field == field


async def test_concurrent_reports_record_each_deposit_once(
    manager: WalletPoolManager,
) -> None:
    addresses = demo_addresses("ETH", 20)
    batch = [deposit(a, txid=f"0x{i:064x}", height=i) for i, a in enumerate(addresses)]
    outcomes = await asyncio.gather(
        *(manager.report_deposits("ETH", batch[i:] + batch[:i], 50) for i in range(8))
    )
    assert sum(o.recorded for o in outcomes) == len(batch)
    recorded = await manager.list_deposits(0, 500)
    assert sorted(d.chain.txid for d in recorded) == sorted(d.txid for d in batch)
    assert [d.id for d in recorded] == sorted(d.id for d in recorded)


async def test_the_reuse_and_deposit_invariants_hold_after_guarded_reuse_and_catch_tampering(
    manager: WalletPoolManager, db_pool: asyncpg.Pool
) -> None:
    [address] = demo_addresses("ETH", 1)
    await manager.add_wallets("ETH", [address])
    await manager.report_deposits("ETH", [], 100)
    first, second = uuid.uuid4(), uuid.uuid4()
    await manager.allocate_wallet(first, "ETH")
    paid = deposit(address, height=101)
    await manager.report_deposits("ETH", [paid], 101)
    await manager.release_wallet(first, address)
    # The next report gives the release its height (101), the one after lets it go.
    await manager.report_deposits("ETH", [], 101)
    await manager.report_deposits("ETH", [], 111)
    assert await manager.allocate_wallet(second, "ETH") == Allocation(address=address)
    acknowledged = {("ETH", paid.txid, 0): (address, paid.amount)}
    async with db_pool.acquire() as conn:
        assert await no_wallet_reused_over_a_deposit_or_before_its_watermark(conn) == []
        assert await deposits_are_recorded_once_and_attributed(conn, acknowledged) == []

        # A hand-over before the watermark, a late deposit seen before it, a deposit
        # attributed to the wrong order, and one acknowledged but lost: each is caught.
        await conn.execute(
            "UPDATE wallet_pool.assignments SET scanned_height = 105 WHERE order_id = $1", second
        )
        await conn.execute(
            """INSERT INTO wallet_pool.deposits (network, txid, output_index, address, amount,
                   block_height, block_time, confirmations, order_id)
               VALUES ('ETH', '0xlate', 0, $1, 1, 104, now(), 1, $2)""",
            address,
            first,
        )
        [early, seen] = await no_wallet_reused_over_a_deposit_or_before_its_watermark(conn)
        assert "before its watermark 111" in early and "deposit 0xlate" in seen
        lost = {**acknowledged, ("ETH", "0xlost", 0): (address, Decimal(1))}
        [missing, misattributed] = await deposits_are_recorded_once_and_attributed(conn, lost)
        assert "0xlate" in misattributed and "0xlost" in missing
