"""A deposit's lifecycle on PostgreSQL through the pool manager: re-reports move its block
and confirmations (CONFIRMING -> CONFIRMED), never its address or amount; retractions make it
REVERTED (and a re-mined one comes back); a confirmed one reverted at or below the finalized
height is a finality violation; a counted one reverted after its order released the address
holds the wallet out; every change takes the next change number."""

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from shared.errors import AlreadyExists, InvalidArgument
from wallet_pool_service.deposits import (
    ChainDeposit,
    DepositKind,
    DepositStatus,
    Retraction,
    RetractionReason,
)
from wallet_pool_service.domain import WalletState, demo_addresses
from wallet_pool_service.manager import WalletPoolManager
from wallet_pool_service.metrics import FINALITY_VIOLATIONS

USDT_TRON = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"  # 20 confirmations


@pytest.fixture
async def manager(db_pool: asyncpg.Pool) -> WalletPoolManager:
    return WalletPoolManager(db_pool, ("BTC", "ETH", "TRON"))


def usdt(address: str, confirmations: int, height: int = 100, txid: str = "") -> ChainDeposit:
    return ChainDeposit(
        address=address,
        txid=txid or "0x" + uuid.uuid4().hex * 2,
        index=0,
        amount=Decimal("50"),
        block_height=height,
        block_time=datetime.now(UTC),
        confirmations=confirmations,
        kind=DepositKind.TOKEN,
        token_contract=USDT_TRON,
        block_hash=f"hash-{height}",
    )


def orphaned(deposit: ChainDeposit) -> Retraction:
    return Retraction(deposit.txid, deposit.kind, deposit.index, RetractionReason.ORPHANED)


async def only(manager: WalletPoolManager) -> tuple[DepositStatus, int, int, str | None, int]:
    [d] = await manager.list_deposit_changes(0, 50)
    return d.status, d.chain.confirmations, d.chain.block_height, d.chain.block_hash, d.change


async def test_confirmations_move_a_deposit_to_confirmed_and_each_change_is_numbered(
    manager: WalletPoolManager,
) -> None:
    [address] = demo_addresses("TRON", 1)
    first = usdt(address, 1, height=100)
    await manager.report_deposits("TRON", [first], 100)
    status, confirmations, _, _, change = await only(manager)
    assert (status, confirmations) == (DepositStatus.CONFIRMING, 1)

    # The same deposit, further down the chain, then in another block after a reorg.
    outcome = await manager.report_deposits("TRON", [replace(first, confirmations=12)], 111)
    assert (outcome.recorded, outcome.updated) == (0, 1)
    status, confirmations, _, _, second = await only(manager)
    assert (status, confirmations) == (DepositStatus.CONFIRMING, 12) and second > change
    moved = replace(first, confirmations=20, block_height=101, block_hash="hash-101b")
    await manager.report_deposits("TRON", [moved], 120)
    status, confirmations, height, block_hash, third = await only(manager)
    assert (status, confirmations, height, block_hash) == (
        DepositStatus.CONFIRMED,
        20,
        101,
        "hash-101b",
    )
    assert third > second
    # Nothing changed: no new change number; a confirmed deposit stays confirmed.
    again = await manager.report_deposits("TRON", [moved], 121)
    assert again.updated == 0 and (await only(manager))[4] == third
    await manager.report_deposits("TRON", [replace(moved, confirmations=3)], 122)
    status, confirmations, _, _, fourth = await only(manager)
    assert (status, confirmations) == (DepositStatus.CONFIRMED, 3) and fourth > third
    assert await manager.list_deposit_changes(fourth, 50) == []

    # Its address or amount never change.
    with pytest.raises(AlreadyExists):
        await manager.report_deposits("TRON", [replace(moved, amount=Decimal("51"))], 123)


async def test_a_retracted_deposit_is_reverted_and_comes_back_when_mined_again(
    manager: WalletPoolManager,
) -> None:
    [address] = demo_addresses("TRON", 1)
    paid = usdt(address, 5)
    await manager.report_deposits("TRON", [paid], 100)

    outcome = await manager.report_deposits("TRON", [], 101, retractions=[orphaned(paid)])
    assert (outcome.reverted, outcome.finality_violations) == (1, 0)
    [d] = await manager.list_deposit_changes(0, 50)
    assert (d.status, d.revert_reason, d.finality_violation) == (
        DepositStatus.REVERTED,
        "ORPHANED",
        False,
    )
    # Retracting it again, or a key never reported, changes nothing.
    unknown = Retraction("0xnever", DepositKind.TOKEN, 0, RetractionReason.REPLACED)
    again = await manager.report_deposits("TRON", [], 102, retractions=[orphaned(paid), unknown])
    assert again.reverted == 0

    # The same transaction mined again, in a later block.
    await manager.report_deposits("TRON", [replace(paid, block_height=103, confirmations=1)], 103)
    [back] = await manager.list_deposit_changes(0, 50)
    assert (back.status, back.chain.block_height, back.revert_reason) == (
        DepositStatus.CONFIRMING,
        103,
        None,
    )


async def test_a_confirmed_deposit_reverted_below_the_finalized_height_is_a_violation(
    manager: WalletPoolManager,
) -> None:
    [address] = demo_addresses("TRON", 1)
    paid = usdt(address, 25, height=100)
    await manager.report_deposits("TRON", [paid], 124, finalized_height=110)
    before = FINALITY_VIOLATIONS.labels("TRON")._value.get()

    outcome = await manager.report_deposits("TRON", [], 125, retractions=[orphaned(paid)])

    assert (outcome.reverted, outcome.finality_violations) == (1, 1)
    assert FINALITY_VIOLATIONS.labels("TRON")._value.get() == before + 1
    [d] = await manager.list_deposit_changes(0, 50)
    assert d.status is DepositStatus.REVERTED and d.finality_violation
    with pytest.raises(InvalidArgument) as refused:
        await manager.report_deposits("TRON", [], 130, finalized_height=131)
    assert refused.value.field == "finalized_height"


async def test_a_counted_deposit_reverted_after_its_order_released_the_address_holds_it_out(
    manager: WalletPoolManager,
) -> None:
    [address] = demo_addresses("TRON", 1)
    await manager.add_wallets("TRON", [address])
    order = uuid.uuid4()
    await manager.allocate_wallet(order, "TRON", "USDT")
    paid = replace(usdt(address, 25), block_time=datetime.now(UTC) - timedelta(seconds=0))
    await manager.report_deposits("TRON", [paid], 125)
    await manager.release_wallet(order, address)
    [wallet], _ = await manager.list_wallets("TRON", None, 50, "")
    assert not wallet.disabled

    await manager.report_deposits("TRON", [], 126, retractions=[orphaned(paid)])

    [wallet], _ = await manager.list_wallets("TRON", WalletState.DISABLED, 50, "")
    assert wallet.disabled_reason.startswith(f"reverted deposit {paid.txid}:0 of 50 (ORPHANED)")
    assert str(order) in wallet.disabled_reason
