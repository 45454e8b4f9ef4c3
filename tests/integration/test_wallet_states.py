"""A wallet's state is derived in one place in SQL (the view wallet_states, whose AVAILABLE
is wallet_pool.claimable, which claims and hand-offs test too); the Python domain's
Wallet.state and what a claim really takes are held to it here, for a wallet in every
state."""

import uuid

import asyncpg

from wallet_pool_service.domain import Wallet, WalletState

# address -> (network, what it is, the state it is in)
WALLETS = {
    "held": ("ETH", "order_id = gen_random_uuid(), allocated_at = now()", WalletState.ALLOCATED),
    "disabled": ("ETH", "disabled_at = now(), disabled_reason = 'x'", WalletState.DISABLED),
    "held-disabled": (
        "ETH",
        "order_id = gen_random_uuid(), allocated_at = now(), disabled_at = now()",
        WalletState.ALLOCATED,
    ),
    "cooling": ("ETH", "cooldown_until = now() + interval '1 hour'", WalletState.COOLING),
    "cooled": ("ETH", "cooldown_until = now() - interval '1 second'", WalletState.AVAILABLE),
    "guard-unknown-height": ("ETH", "reuse_confirmations = 64", WalletState.COOLING),
    "guard-not-reached": (
        "ETH",
        "release_height = 100, reuse_confirmations = 64",
        WalletState.COOLING,
    ),
    "guard-reached": (
        "ETH",
        "release_height = 100, reuse_confirmations = 10",
        WalletState.AVAILABLE,
    ),
    "guard-no-watcher": ("BTC", "release_height = 1, reuse_confirmations = 0", WalletState.COOLING),
    "fresh": ("ETH", "released_at = NULL", WalletState.AVAILABLE),
    "fresh-btc": ("BTC", "released_at = NULL", WalletState.AVAILABLE),
}


async def _wallets_in_every_state(pool: asyncpg.Pool) -> None:
    await pool.execute(
        "INSERT INTO wallet_pool.chain_watermarks (network, scanned_height) VALUES ('ETH', 150)"
    )
    for address, (network, change, _) in WALLETS.items():
        await pool.execute(
            "INSERT INTO wallet_pool.wallets (network, address) VALUES ($1, $2)", network, address
        )
        await pool.execute(f"UPDATE wallet_pool.wallets SET {change} WHERE address = $1", address)


async def test_the_views_state_is_the_domains_for_a_wallet_in_every_state(
    db_pool: asyncpg.Pool,
) -> None:
    await _wallets_in_every_state(db_pool)
    rows = await db_pool.fetch("SELECT * FROM wallet_pool.wallet_states")
    assert {row["address"]: row["state"] for row in rows} == {
        address: state.value for address, (_, _, state) in WALLETS.items()
    }
    assert {row["address"]: Wallet.from_row(row).state.value for row in rows} == {
        row["address"]: row["state"] for row in rows
    }


async def test_a_claim_takes_exactly_the_wallets_the_view_calls_available(
    db_pool: asyncpg.Pool,
) -> None:
    await _wallets_in_every_state(db_pool)
    claimed = set()
    for network in ("ETH", "BTC"):
        while address := await db_pool.fetchval(
            "SELECT wallet_pool.claim_wallet($1, $2, clock_timestamp())", uuid.uuid4(), network
        ):
            claimed.add(address)
    assert claimed == {a for a, (_, _, state) in WALLETS.items() if state is WalletState.AVAILABLE}
