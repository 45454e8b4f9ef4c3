"""Two replicas of each service on one database: they start together, share the work, and
no background loop does any of it twice. Each test runs with the watermark guard on, as
production runs (a chain watcher reports a block every 0.1 s and customers pay held wallets),
and off."""

# The generated async stub types exist only in the stubs (.pyi).
from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import grpc
import pytest

from exchange.order.v1 import order_service_pb2 as opb
from exchange.order.v1 import order_service_pb2_grpc as order_grpc
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pool_grpc
from scripts.processes import ServiceProcess
from tests.chaos import ChaosReport, log_problems, no_work_done_twice
from tests.chaos.checks import money_counts
from tests.chaos.watcher import ChainWatcher
from tests.databases import DatabaseFactory
from tests.e2e.conftest import own_stack
from tests.e2e.containers import ContainerService
from tests.e2e.roles import service_role_urls
from tests.e2e.stack import (
    CLIENT_TOKEN,
    OPERATOR_TOKEN,
    bearer,
    replica,
    replicas_target,
    stop_replicas,
)
from tests.e2e.test_release_flow import eth_address
from tests.invariants import check_all
from tests.invariants_api import Api
from tests.waiting import HANG_GUARD_SECONDS

WALLETS = 8
KEPT = 24  # moved to PROCESSING at once, then finished in waves (some left live)
EXPIRING = 6  # left PENDING until the expiry loop cancels them
LEFT_LIVE = 4
TTL_SECONDS = 2
# With the guard on: a released wallet waits for the watcher to scan this many blocks past it.
CONFIRMATIONS = 2
# As the chaos runs set them (tests/chaos/run.py): no metrics, a quicker hand-off sweep.
QUIET = {
    "ORDER_METRICS_ADDR": "off",
    "WALLET_POOL_METRICS_ADDR": "off",
    "HAND_OFF_SWEEP_SECONDS": "0.5",
}


@dataclass
class Replicas:
    pools: list[ServiceProcess | ContainerService]
    orders: list[ServiceProcess | ContainerService]
    order_stubs: list[order_grpc.OrderServiceAsyncStub]
    pool_stub: pool_grpc.WalletPoolServiceAsyncStub
    database_url: str
    # With the guard on: the ETH chain watcher, reporting until stopped.
    watcher: ChainWatcher | None = None
    watcher_report: ChaosReport | None = None
    _stop_watcher: asyncio.Event | None = None
    _watching: asyncio.Task[None] | None = None

    @property
    def api(self) -> Api:
        return Api(self.order_stubs[0], self.pool_stub, bearer(OPERATOR_TOKEN))

    def start_watcher(self, database_url: str) -> None:
        """A block every 0.1 s, and customers paying held wallets (never released ones: a
        late payment would keep a wallet out of the waves, and so would a counted payment
        retracted after its order's release, so no block is orphaned; never PENDING ones: an
        order that received money outlives its payment window, and the expiring ones must
        expire)."""
        self.watcher_report = ChaosReport(seed=14, seconds=0)
        self.watcher = ChainWatcher(
            self.pool_stub,
            database_url,
            self.watcher_report,
            seed=14,
            late_payers=False,
            orphans=False,
            tick_seconds=0.1,
            payee_statuses=("PROCESSING",),
        )
        self._stop_watcher = asyncio.Event()
        self._watching = asyncio.create_task(self.watcher.run(self._stop_watcher))

    async def stop_watcher(self) -> None:
        """The watcher stops reporting (before the checks: what it acknowledges is fixed)."""
        if self._stop_watcher is not None and self._watching is not None:
            self._stop_watcher.set()
            await self._watching
            assert self.watcher_report is not None
            assert self.watcher_report.violations == []


@pytest.fixture(params=["guard-on", "guard-off"])
async def replicas(
    databases: DatabaseFactory, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Replicas]:
    """Two of each: processes, or extra containers on the stack's network (the pools behind
    one network alias, as compose's scaled services)."""
    guarded = request.param == "guard-on"
    # An empty database: the two replicas of each service migrate it as they start together.
    url = await databases.create(migrated=False)
    extra = {
        **QUIET,
        "ORDER_TTL_SECONDS": str(TTL_SECONDS),
        "EXPIRY_CHECK_SECONDS": "0.2",
        "WALLET_COOLDOWN_SECONDS": "0",
        "WALLET_REUSE_CONFIRMATIONS": f"ETH:{CONFIRMATIONS}" if guarded else "off",
        # Each service as its own role, as in production.
        **await service_role_urls(url),
    }
    alias = f"e2e-pools-{uuid.uuid4().hex[:8]}"
    pools = [
        replica("wallet_pool_service", url, tmp_path / f"wallet_pool_{name}.log", extra, alias)
        for name in "ab"
    ]
    channels: list[grpc.aio.Channel] = []
    services = list(pools)
    try:
        pool_ports = await asyncio.gather(*(pool.start() for pool in pools))
        # One target for both pool replicas; the order service's channel balances over them.
        order_extra = {**extra, "WALLET_POOL_TARGET": replicas_target(pools)}
        orders = [
            replica("order_service", url, tmp_path / f"order_{name}.log", order_extra)
            for name in "ab"
        ]
        services += orders
        order_ports = await asyncio.gather(*(order.start() for order in orders))
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for port in order_ports]
        channels.append(grpc.aio.insecure_channel(f"127.0.0.1:{pool_ports[0]}"))
        started = Replicas(
            pools,
            orders,
            [order_grpc.OrderServiceStub(channel) for channel in channels[:2]],
            pool_grpc.WalletPoolServiceStub(channels[2]),
            url,
        )
        if guarded:
            started.start_watcher(url)
        yield started
        await started.stop_watcher()
        for service in services:
            assert service.running(), f"{service.module} died:\n{service.logs()[-3000:]}"
    finally:
        for channel in channels:
            await channel.close(None)
        await stop_replicas(services)


@pytest.fixture
async def db(replicas: Replicas) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(replicas.database_url, min_size=1, max_size=2)
    assert pool is not None
    yield pool
    await pool.close()


async def update(
    stub: order_grpc.OrderServiceAsyncStub, order_id: str, status: int, reason: str = ""
) -> opb.UpdateOrderStatusResponse:
    request = opb.UpdateOrderStatusRequest(order_id=order_id, status=status, reason=reason)  # type: ignore[arg-type]
    response: opb.UpdateOrderStatusResponse = await stub.UpdateOrderStatus(
        request, metadata=bearer(OPERATOR_TOKEN), timeout=10
    )
    return response


async def addresses(
    stubs: list[order_grpc.OrderServiceAsyncStub], order_ids: list[str]
) -> dict[str, str]:
    """Each order's address as the order service shows it, read through both replicas."""
    responses = await asyncio.gather(
        *(
            stubs[i % 2].GetOrder(
                opb.GetOrderRequest(order_id=order_id), metadata=bearer(CLIENT_TOKEN), timeout=10
            )
            for i, order_id in enumerate(order_ids)
        )
    )
    return {r.order.id: r.order.wallet_address for r in responses}


@own_stack
async def test_two_replicas_of_each_service_serve_every_order_once_and_expire_each_once(
    replicas: Replicas, db: asyncpg.Pool
) -> None:
    stubs = replicas.order_stubs
    added = await replicas.pool_stub.AddWallets(
        wpb.AddWalletsRequest(network="ETH", addresses=[eth_address() for _ in range(WALLETS)]),
        metadata=bearer(OPERATOR_TOKEN),
    )
    assert len(added.added) == WALLETS
    acknowledged: dict[uuid.UUID, str] = {}
    kept: list[str] = []
    expiring: list[str] = []

    async def start(index: int) -> None:
        """Created through one replica; all but the expiring ones moved on through the other
        at once (a PENDING order older than the TTL would expire)."""
        created = await stubs[index % 2].CreateOrder(
            opb.CreateOrderRequest(network="ETH", amount="1.5", request_id=f"replicas-{index}"),
            metadata=bearer(CLIENT_TOKEN),
            timeout=10,
        )
        order_id = created.order.id
        acknowledged[uuid.UUID(order_id)] = "PENDING"
        if index % 5 == 4:
            expiring.append(order_id)
            return
        try:
            await update(stubs[(index + 1) % 2], order_id, opb.ORDER_STATUS_PROCESSING)
        except grpc.aio.AioRpcError as exc:
            # Only if the machine was so slow that the order outlived its TTL first.
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            expiring.append(order_id)
            return
        acknowledged[uuid.UUID(order_id)] = "PROCESSING"
        kept.append(order_id)

    await asyncio.gather(*(start(i) for i in range(KEPT + EXPIRING)))
    assert len(expiring) >= EXPIRING

    # The expiry loops of both order replicas cancel the stale PENDING orders (once each).
    deadline = time.monotonic() + TTL_SECONDS + HANG_GUARD_SECONDS
    while time.monotonic() < deadline:
        still = await db.fetchval(
            "SELECT count(*) FROM orders.orders WHERE id = ANY($1::uuid[]) AND status = 'PENDING'",
            expiring,
        )
        if not still:
            break
        await asyncio.sleep(0.1)
    assert not still, f"{still} PENDING orders outlived their TTL by {HANG_GUARD_SECONDS} s"

    # Finish the orders that hold a wallet, in waves spread over both replicas: every freed
    # wallet goes to the head of the queue, and the waiting orders learn their address.
    live = list(kept)
    wave = 0
    while len(live) > LEFT_LIVE:
        expected = min(len(live), WALLETS)
        deadline = time.monotonic() + HANG_GUARD_SECONDS
        while True:
            shown = await addresses(stubs, live)
            holders = [order_id for order_id in live if shown[order_id]]
            if len(holders) >= expected or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert len(holders) == expected, f"wave {wave}: {len(holders)} of {expected} served"
        batch = holders[: len(live) - LEFT_LIVE]
        finals = [opb.ORDER_STATUS_COMPLETED, opb.ORDER_STATUS_CANCELLED]
        responses = await asyncio.gather(
            *(
                update(stubs[(wave + i) % 2], order_id, finals[i % 2], f"wave {wave}")
                for i, order_id in enumerate(batch)
            )
        )
        for i, (order_id, response) in enumerate(zip(batch, responses, strict=True)):
            assert response.wallet_release == opb.WALLET_RELEASE_RELEASED
            acknowledged[uuid.UUID(order_id)] = "COMPLETED" if i % 2 == 0 else "CANCELLED"
        live = [order_id for order_id in live if order_id not in batch]
        wave += 1
    assert wave >= 3

    await replicas.stop_watcher()
    deposits = replicas.watcher.acknowledged if replicas.watcher else {}
    assert (
        await check_all(db, acknowledged, deposits=deposits, api=replicas.api, payments=True) == []
    )
    async with db.acquire() as conn:
        assert await no_work_done_twice(conn) == []
        counts = await money_counts(conn)
    if replicas.watcher is not None:
        # The waves reused wallets through the guard, and customers paid while it ran.
        assert counts.guarded_reuses >= WALLETS and counts.orders_paid >= 1, counts
    all_ids = [*kept, *expiring]

    # Every order was given a wallet at most once, and each address it shows is its one.
    assert (
        await db.fetch(
            """SELECT order_id, count(*) FROM wallet_pool.assignments
               GROUP BY order_id HAVING count(*) > 1"""
        )
        == []
    )
    served = await db.fetch(
        """SELECT o.id, o.status, o.wallet_address, a.address AS assigned,
                  a.released_at AS unassigned_at
           FROM orders.orders o
           LEFT JOIN wallet_pool.assignments a ON a.order_id = o.id
           WHERE o.id = ANY($1::uuid[])""",
        all_ids,
    )
    for row in served:
        if row["wallet_address"] is not None or row["assigned"] is None:
            assert row["wallet_address"] == row["assigned"], dict(row)
        else:
            # The pool handed a wallet to an order that had just expired, before the order's
            # release reached it; that release gave the wallet back.
            assert row["status"] == "CANCELLED" and row["unassigned_at"] is not None, dict(row)
    assert all(row["assigned"] for row in served if str(row["id"]) in kept)

    # One 'created' row per order and never the same status twice.
    history = await db.fetch(
        """SELECT order_id, from_status, to_status, actor, reason FROM orders.status_history
           WHERE order_id = ANY($1::uuid[]) ORDER BY id""",
        all_ids,
    )
    by_order: dict[str, list[asyncpg.Record]] = {}
    for row in history:
        by_order.setdefault(str(row["order_id"]), []).append(row)
    assert set(by_order) == set(all_ids)
    for order_id, rows in by_order.items():
        statuses = [row["to_status"] for row in rows]
        assert [row["from_status"] for row in rows].count(None) == 1, (order_id, statuses)
        assert len(statuses) == len(set(statuses)), (order_id, statuses)
        system = [(row["to_status"], row["reason"]) for row in rows if row["actor"] == "system"]
        # Each expired order was cancelled exactly once, by the system, although both
        # replicas run the expiry loop; no other order was.
        assert system == ([("CANCELLED", "expired")] if order_id in expiring else []), rows

    # Each release was delivered once, at the first attempt (the pool was up throughout).
    releases = await db.fetch(
        """SELECT p.order_id, p.attempts, o.wallet_release
           FROM orders.pending_releases p JOIN orders.orders o ON o.id = p.order_id
           WHERE p.order_id = ANY($1::uuid[])""",
        all_ids,
    )
    assert len(releases) == len(all_ids) - LEFT_LIVE
    for release in releases:
        assert release["wallet_release"] == "RELEASED" and release["attempts"] == 1, dict(release)

    # Both pool replicas were called, waiting orders were served by hand-offs, and every
    # replica's logs are clean.
    for pool in replicas.pools:
        assert "WalletPoolService/AllocateWallet" in pool.logs()
    handed = sum(
        pool.logs().count('"event": "wallet handed to queued order"') for pool in replicas.pools
    )
    assert handed >= KEPT - WALLETS
    expired_logs = sum(order.logs().count('"event": "order expired"') for order in replicas.orders)
    assert expired_logs == len(expiring)
    for process in [*replicas.pools, *replicas.orders]:
        assert log_problems(process.logs()) == [], process.module


@own_stack
async def test_a_consumer_cut_off_at_random_gets_every_event_of_two_writing_replicas_once(
    replicas: Replicas, db: asyncpg.Pool
) -> None:
    stubs = replicas.order_stubs
    await replicas.pool_stub.AddWallets(
        wpb.AddWalletsRequest(network="ETH", addresses=[eth_address() for _ in range(WALLETS)]),
        metadata=bearer(OPERATOR_TOKEN),
    )
    received: list[opb.OrderEvent] = []
    writing = True
    reconnects = 0

    async def consume() -> None:
        """Follows the log through either replica, cutting its own stream after a random
        number of events and reconnecting with the last sequence it saw."""
        nonlocal reconnects
        rng = random.Random(14)
        while True:
            last = received[-1].sequence if received else 0
            call = stubs[rng.randrange(2)].WatchOrderEvents(
                opb.WatchOrderEventsRequest(after_sequence=last), metadata=bearer(OPERATOR_TOKEN)
            )
            try:
                # A random number of events, or until the stream stays quiet a while.
                for _ in range(rng.randint(1, 12)):
                    response = await asyncio.wait_for(call.read(), 0.5)
                    assert isinstance(response, opb.WatchOrderEventsResponse)
                    received.append(response.event)
            except TimeoutError:
                pass
            finally:
                call.cancel()
            if not writing and received and received[-1].sequence == await last_sequence():
                return
            reconnects += 1
            await asyncio.sleep(rng.random() * 0.05)

    async def last_sequence() -> int:
        value: int = await db.fetchval("SELECT last_sequence FROM orders.event_log")
        return value

    async def lifecycle(index: int) -> None:
        created = await stubs[index % 2].CreateOrder(
            opb.CreateOrderRequest(network="ETH", amount="1"), metadata=bearer(CLIENT_TOKEN)
        )
        order_id = created.order.id
        await update(stubs[(index + 1) % 2], order_id, opb.ORDER_STATUS_PROCESSING)
        await update(stubs[index % 2], order_id, opb.ORDER_STATUS_CANCELLED, "feed")

    consumer = asyncio.ensure_future(consume())
    await asyncio.gather(*(lifecycle(i) for i in range(40)))
    # Once every event is numbered, the consumer catches up to the end of the log and stops.
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while await db.fetchval("SELECT count(*) FROM orders.order_events WHERE sequence IS NULL"):
        assert time.monotonic() < deadline, "events left without a sequence"
        await asyncio.sleep(0.1)
    writing = False
    await asyncio.wait_for(consumer, HANG_GUARD_SECONDS)

    table = await db.fetch(
        "SELECT sequence, order_id, type, status FROM orders.order_events ORDER BY sequence"
    )
    assert [e.sequence for e in received] == list(range(1, len(table) + 1))
    assert [(e.order_id, e.type, e.status) for e in received] == [
        (
            str(r["order_id"]),
            opb.OrderEventType.Value(f"ORDER_EVENT_TYPE_{r['type']}"),
            opb.OrderStatus.Value(f"ORDER_STATUS_{r['status']}"),
        )
        for r in table
    ]
    assert reconnects >= 10
    # Each order's events are in the order they happened.
    by_order: dict[str, list[int]] = {}
    for event in received:
        by_order.setdefault(event.order_id, []).append(event.status)
    assert len(by_order) == 40
    for statuses in by_order.values():
        assert statuses[0] == opb.ORDER_STATUS_PENDING
        assert statuses[-2:] == [opb.ORDER_STATUS_CANCELLED] * 2  # cancelled, then released
        assert statuses == sorted(statuses, key=[1, 2, 4].index)


@own_stack
async def test_a_watch_on_one_replica_prints_the_hand_off_another_replica_served(
    replicas: Replicas,
) -> None:
    watching, serving = replicas.order_stubs
    address = eth_address()
    await replicas.pool_stub.AddWallets(
        wpb.AddWalletsRequest(network="ETH", addresses=[address]), metadata=bearer(OPERATOR_TOKEN)
    )
    client = bearer(CLIENT_TOKEN)
    request = opb.CreateOrderRequest(network="ETH", amount="1")
    holder = (await serving.CreateOrder(request, metadata=client)).order
    waiting = (await watching.CreateOrder(request, metadata=client)).order
    watch = watching.WatchOrder(opb.WatchOrderRequest(order_id=waiting.id), metadata=client)
    first = await watch.read()
    assert isinstance(first, opb.WatchOrderResponse)
    assert first.order.allocation == opb.ALLOCATION_QUEUED

    await update(serving, holder.id, opb.ORDER_STATUS_PROCESSING)
    await update(serving, holder.id, opb.ORDER_STATUS_COMPLETED)
    # With the guard on the hand-off waits for the watcher's blocks, and the watch may print
    # other changes of the waiting order first: read on until it shows an address.
    printed: list[opb.WatchOrderResponse] = []

    async def until_addressed() -> opb.WatchOrderResponse:
        while True:
            seen = await watch.read()
            assert isinstance(seen, opb.WatchOrderResponse), (seen, printed)
            if seen.order.wallet_address:
                return seen
            printed.append(seen)

    seen = await asyncio.wait_for(until_addressed(), HANG_GUARD_SECONDS)
    assert seen.order.wallet_address == address, printed
    watch.cancel()
