"""The original plan's check on `make run`'s own start (scripts/run_local.py as a real
process): create an order with a wallet, set it COMPLETED, and the wallet is available again
within 5 s; an order waiting in the queue gets it as fast. All through grpcurl, as a newcomer
types it. Meanwhile the reuse guard stays on and real: the wallet is COOLING first, and goes
only once make run's development chain has mined its blocks past the release."""

import asyncio
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.databases import DatabaseFactory
from tests.e2e.conftest import local_only
from tests.e2e.make_run import GRPCURL, MakeRun

ORDERS = "exchange.order.v1.OrderService/"
POOL = "exchange.wallet_pool.v1.WalletPoolService/"
# The plan's bound, and make run's development guard: 2 blocks of a chain mining one a second.
PLAN_SECONDS = 5.0
DEV_CONFIRMATIONS = 2
BLOCK_SECONDS = 1.0


@pytest.fixture
async def make_run(databases: DatabaseFactory, tmp_path: Path) -> Any:
    if not GRPCURL.exists():
        pytest.skip("grpcurl is installed by make setup")
    # A fresh, empty database: make run migrates it as on a new machine.
    run = await MakeRun.start(await databases.create(migrated=False), tmp_path / "data")
    try:
        yield run
    finally:
        assert await run.stop() == 0, "make run did not stop cleanly on Ctrl-C"


async def complete(run: MakeRun, order_id: str) -> dict[str, Any]:
    for status in ("ORDER_STATUS_PROCESSING", "ORDER_STATUS_COMPLETED"):
        answer: dict[str, Any] = await run.grpcurl(
            "operator",
            run.order_addr,
            ORDERS + "UpdateOrderStatus",
            {"order_id": order_id, "status": status},
        )
    return answer


async def wallets(run: MakeRun, network: str, state: str) -> dict[str, dict[str, Any]]:
    answer = await run.grpcurl(
        "operator", run.pool_addr, POOL + "ListWallets", {"network": network, "state": state}
    )
    return {w["address"]: w for w in answer["wallets"]}


async def pool_stats(run: MakeRun, network: str) -> dict[str, Any]:
    answer = await run.grpcurl(
        "operator", run.pool_addr, POOL + "GetPoolStats", {"network": network}
    )
    stats: dict[str, Any] = answer["networks"][0]
    return stats


async def seconds_until(probe: Any, since: float) -> float:
    """Seconds from `since` until `probe()` is true (the caller bounds it; the test's
    timeout ends a wallet that never comes back)."""
    loop = asyncio.get_running_loop()
    while not await probe():
        await asyncio.sleep(0.1)
    return loop.time() - since


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@local_only("starts `make run` (scripts/run_local.py) itself: host processes")
async def test_the_plans_check_a_completed_orders_wallet_is_available_within_5_s(
    make_run: MakeRun,
) -> None:
    # make run says, in one line, how the guard is set and where the heights come from.
    assert (
        "reuse guard: on, BTC 2 blocks, ETH 2 blocks, TRON 2 blocks past a release "
        "[WALLET_REUSE_CONFIRMATIONS=2]; heights from make run's development chains "
        "(BTC, ETH, TRON), a block every 1 s, reporting with the watcher token"
    ) in make_run.banner
    # And the confirmations deposits need: make run's demo setting, 2 blocks for every asset.
    assert "deposits: CONFIRMED at 2 confirmations for every asset" in make_run.banner
    loop = asyncio.get_running_loop()
    # 1. Create an order: it gets a wallet.
    order = (
        await make_run.grpcurl(
            "client",
            make_run.order_addr,
            ORDERS + "CreateOrder",
            {"network": "BTC", "amount": "0.015"},
        )
    )["order"]
    address = order["wallet_address"]
    assert order["allocation"] == "ALLOCATION_ASSIGNED" and address
    # 2. COMPLETED: the wallet is released.
    completed = await complete(make_run, order["id"])
    released_at = loop.time()
    assert completed["order"]["status"] == "ORDER_STATUS_COMPLETED"
    assert completed["wallet_release"] == "WALLET_RELEASE_RELEASED"
    # The guard holds it first (at least two blocks): COOLING, and it says what for.
    held = (await wallets(make_run, "BTC", "WALLET_STATE_COOLING"))[address]
    assert held["cooling_reason"].startswith("waits for ")
    # Its heights once the chain's watcher has reported past the release; none before.
    release, reuse = int(held["release_height"]), int(held["reuse_height"])
    assert (release, reuse) == (0, 0) or reuse == release + DEV_CONFIRMATIONS, held

    # 3. Available again, within the plan's 5 s: the wallet's state, and the pool stats.
    async def available() -> bool:
        return address in await wallets(make_run, "BTC", "WALLET_STATE_AVAILABLE")

    seconds = await seconds_until(available, released_at)
    print(f"\nBTC wallet available {seconds:.2f} s after COMPLETED answered")
    assert seconds < PLAN_SECONDS
    wallet = (await wallets(make_run, "BTC", "WALLET_STATE_AVAILABLE"))[address]
    stats = await pool_stats(make_run, "BTC")
    assert stats["reuse_guard"] and stats["reuse_confirmations"] == DEV_CONFIRMATIONS
    assert (stats["available"], stats["cooling"], stats["allocated"]) == (stats["total"], 0, 0)
    # It went because the chain passed its release by the confirmations, not before.
    release_height = int(wallet["release_height"])
    assert int(wallet["reuse_height"]) == release_height + DEV_CONFIRMATIONS
    assert int(stats["scanned_height"]) >= release_height + DEV_CONFIRMATIONS


@local_only("starts `make run` (scripts/run_local.py) itself: host processes")
async def test_the_plans_check_a_waiting_order_gets_the_released_wallet_within_5_s(
    make_run: MakeRun,
) -> None:
    loop = asyncio.get_running_loop()
    free = (await pool_stats(make_run, "TRON"))["available"]
    holders = [
        (
            await make_run.grpcurl(
                "client",
                make_run.order_addr,
                ORDERS + "CreateOrder",
                {"network": "TRON", "amount": "10"},
            )
        )["order"]
        for _ in range(free)
    ]
    waiting = (
        await make_run.grpcurl(
            "client",
            make_run.order_addr,
            ORDERS + "CreateOrder",
            {"network": "TRON", "amount": "2"},
        )
    )["order"]
    assert waiting["allocation"] == "ALLOCATION_QUEUED"
    first = holders[0]
    assert (await complete(make_run, first["id"]))["wallet_release"] == "WALLET_RELEASE_RELEASED"
    released_at = loop.time()

    async def handed_over() -> bool:
        order = (
            await make_run.grpcurl(
                "client", make_run.order_addr, ORDERS + "GetOrder", {"order_id": waiting["id"]}
            )
        )["order"]
        return bool(order["wallet_address"])

    seconds = await seconds_until(handed_over, released_at)
    print(f"\nTRON waiting order got the wallet {seconds:.2f} s after COMPLETED answered")
    assert seconds < PLAN_SECONDS
    order = (
        await make_run.grpcurl(
            "client", make_run.order_addr, ORDERS + "GetOrder", {"order_id": waiting["id"]}
        )
    )["order"]
    assert order["wallet_address"] == first["wallet_address"]
    # Not before the guard let it go: the chain mines a block a second at most, so two
    # blocks past the release are at least two seconds after it (the address history).
    history = await make_run.grpcurl(
        "operator",
        make_run.pool_addr,
        POOL + "GetWalletHistory",
        {"address": order["wallet_address"]},
    )
    before, after = history["assignments"][-2:]
    assert (before["order_id"], after["order_id"]) == (first["id"], waiting["id"])
    gap = (_time(after["assign_time"]) - _time(before["release_time"])).total_seconds()
    print(f"guard held it {gap:.2f} s")
    assert gap >= DEV_CONFIRMATIONS * BLOCK_SECONDS - 0.05
