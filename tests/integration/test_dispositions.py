"""Assets and dispositions on PostgreSQL through the pool manager: a native transfer and a
token log of one transaction are two deposits; every deposit is recorded with exactly one
disposition; dust, spam tokens and the wrong asset never hold a wallet out."""

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from shared.errors import AlreadyExists, InvalidArgument
from tests.invariants import deposits_have_one_disposition_and_only_counted_ones_hold_or_count
from wallet_pool_service.deposits import ChainDeposit, DepositKind, Disposition
from wallet_pool_service.domain import Allocation, WalletState, demo_addresses
from wallet_pool_service.manager import WalletPoolManager

USDT_ETH = "0xdac17f958d2ee523a2206206994597c13d831ec7"
FAKE_USDT = "0x" + "ab" * 20


@pytest.fixture
async def manager(db_pool: asyncpg.Pool) -> WalletPoolManager:
    return WalletPoolManager(db_pool, ("BTC", "ETH", "TRON"))


def transfer(
    address: str,
    amount: str,
    *,
    txid: str | None = None,
    contract: str | None = None,
    index: int = 0,
    time: datetime | None = None,
) -> ChainDeposit:
    return ChainDeposit(
        address=address,
        txid=txid or "0x" + uuid.uuid4().hex * 2,
        index=index,
        amount=Decimal(amount),
        block_height=100,
        block_time=time or datetime.now(UTC),
        confirmations=1,
        kind=DepositKind.TOKEN if contract else DepositKind.NATIVE,
        token_contract=contract,
    )


async def assert_invariant(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        assert await deposits_have_one_disposition_and_only_counted_ones_hold_or_count(conn) == []


async def test_a_native_transfer_and_a_token_log_of_one_transaction_are_two_deposits(
    manager: WalletPoolManager, db_pool: asyncpg.Pool
) -> None:
    [address] = demo_addresses("ETH", 1)
    await manager.add_wallets("ETH", [address])
    order = uuid.uuid4()
    await manager.allocate_wallet(order, "ETH", "USDT")
    txid = "0x" + "cd" * 32
    both = [
        transfer(address, "0.01", txid=txid),
        # The checksummed contract is the same asset.
        transfer(address, "125.5", txid=txid, contract=USDT_ETH.upper().replace("0X", "0x")),
    ]

    first = await manager.report_deposits("ETH", both, 100)
    again = await manager.report_deposits("ETH", both, 100)

    assert (first.recorded, again.recorded, again.repeated) == (2, 0, 2)
    recorded = await manager.list_deposits(0, 50)
    assert sorted((d.chain.kind, d.chain.index, d.asset, d.disposition) for d in recorded) == [
        (DepositKind.NATIVE, 0, "", Disposition.WRONG_ASSET),
        (DepositKind.TOKEN, 0, "USDT", Disposition.COUNTED),
    ]
    token = next(d for d in recorded if d.chain.kind is DepositKind.TOKEN)
    assert token.chain.token_contract == USDT_ETH and token.order_id == order
    await assert_invariant(db_pool)


async def test_dust_and_spam_tokens_to_a_released_wallet_are_recorded_late_but_never_disable_it(
    manager: WalletPoolManager, db_pool: asyncpg.Pool
) -> None:
    [address] = demo_addresses("TRON", 1)
    await manager.add_wallets("TRON", [address])
    order = uuid.uuid4()
    await manager.allocate_wallet(order, "TRON")
    await manager.release_wallet(order, address)
    later = datetime.now(UTC) + timedelta(seconds=1)
    fake = "TXLAQ63Xg1NAzckPwKHvzw7CSEmLMEqcdj"  # a valid TRON address, not an asset
    strangers = [
        transfer(address, "0.000001", time=later),  # one sun
        transfer(address, "1000000", contract=fake, time=later),  # fake USDT
        transfer(address, "0.5", contract="TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t", time=later),
    ]

    outcome = await manager.report_deposits("TRON", strangers, 300)

    assert (outcome.recorded, outcome.late) == (3, 3)
    assert outcome.dispositions == {
        Disposition.COUNTED: 0,
        Disposition.DUST: 2,
        Disposition.UNKNOWN_ASSET: 1,
        Disposition.WRONG_ASSET: 0,
    }
    assert outcome.tally == {("late", "DUST"): 2, ("late", "UNKNOWN_ASSET"): 1}
    [wallet], _ = await manager.list_wallets("TRON", None, 50, "")
    assert wallet.state is WalletState.AVAILABLE and not wallet.disabled
    assert await manager.allocate_wallet(uuid.uuid4(), "TRON") == Allocation(address=address)
    await assert_invariant(db_pool)


async def test_a_counted_late_deposit_still_holds_its_wallet_out(
    manager: WalletPoolManager, db_pool: asyncpg.Pool
) -> None:
    [address] = demo_addresses("TRON", 1)
    await manager.add_wallets("TRON", [address])
    order = uuid.uuid4()
    await manager.allocate_wallet(order, "TRON", "USDT")
    await manager.release_wallet(order, address)
    late = transfer(
        address,
        "30",
        contract="TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t",
        time=datetime.now(UTC) + timedelta(seconds=1),
    )

    outcome = await manager.report_deposits("TRON", [late], 300)

    assert outcome.tally == {("late", "COUNTED"): 1}
    [wallet], _ = await manager.list_wallets("TRON", WalletState.DISABLED, 50, "")
    assert wallet.disabled_reason.startswith(f"late deposit {late.txid}:0 of 30")
    await assert_invariant(db_pool)


async def test_a_dust_deposit_made_late_by_the_release_does_not_disable_the_wallet(
    manager: WalletPoolManager, db_pool: asyncpg.Pool
) -> None:
    [address] = demo_addresses("ETH", 1)
    await manager.add_wallets("ETH", [address])
    holder = uuid.uuid4()
    await manager.allocate_wallet(holder, "ETH")
    final_time = datetime.now(UTC)
    # One wei, paid after the order became final and reported before the release came.
    dust = transfer(address, "0.000000000000000001", time=final_time + timedelta(seconds=0.1))
    await manager.report_deposits("ETH", [dust], 100)

    await manager.release_wallet(holder, address, final_time)

    [wallet], _ = await manager.list_wallets("ETH", None, 50, "")
    assert not wallet.disabled
    await assert_invariant(db_pool)


@pytest.mark.parametrize(
    ("network", "deposit", "field"),
    [
        # USDT has 6 decimals: a watcher that reports 7 is wrong.
        ("ETH", transfer(demo_addresses("ETH", 1)[0], "1.1234567", contract=USDT_ETH), "amount"),
        ("ETH", transfer(demo_addresses("ETH", 1)[0], "1", contract="0x1234"), "token_contract"),
        ("BTC", transfer(demo_addresses("BTC", 1)[0], "1", contract=USDT_ETH), "kind"),
        (
            "ETH",
            ChainDeposit(
                demo_addresses("ETH", 1)[0],
                "0xaa",
                0,
                Decimal(1),
                1,
                datetime.now(UTC),
                1,
                DepositKind.NATIVE,
                USDT_ETH,
            ),
            "token_contract",
        ),
        (
            "ETH",
            ChainDeposit(
                demo_addresses("ETH", 1)[0],
                "0xaa",
                0,
                Decimal(1),
                1,
                datetime.now(UTC),
                1,
                DepositKind.TOKEN,
                None,
            ),
            "token_contract",
        ),
    ],
    ids=[
        "too many decimals",
        "bad contract",
        "token on BTC",
        "native with contract",
        "token without",
    ],
)
async def test_a_malformed_token_deposit_is_refused_naming_its_field(
    manager: WalletPoolManager, network: str, deposit: ChainDeposit, field: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await manager.report_deposits(network, [deposit], 100)
    assert refused.value.field == f"deposits[0].{field}"
    assert await manager.list_deposits(0, 50) == []


async def test_a_key_reported_again_with_another_contract_is_refused_keeping_the_first(
    manager: WalletPoolManager,
) -> None:
    [address] = demo_addresses("ETH", 1)
    first = transfer(address, "5", txid="0xfeed", contract=USDT_ETH)
    await manager.report_deposits("ETH", [first], 100)
    forged = transfer(address, "5", txid="0xfeed", contract=FAKE_USDT)

    with pytest.raises(AlreadyExists, match=f"of contract {USDT_ETH}, not 5 to"):
        await manager.report_deposits("ETH", [forged], 101)

    [kept] = await manager.list_deposits(0, 50)
    assert kept.chain.token_contract == USDT_ETH and kept.disposition is Disposition.COUNTED


async def test_an_order_of_an_unknown_asset_is_refused_by_the_pool(
    manager: WalletPoolManager,
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        await manager.allocate_wallet(uuid.uuid4(), "BTC", "USDT")
    assert refused.value.field == "asset"
