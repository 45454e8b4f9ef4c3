"""The order manager against a real database and a real wallet pool gRPC server on a socket."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import urlsplit

import asyncpg
import pytest

from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pool_grpc
from order_service.domain import (
    ChangeOutcomeUnknown,
    CreationOutcomeUnknown,
    IllegalTransition,
    OrderDeposit,
    OrderFilter,
    OrderNotFound,
    OrderScope,
    OrderStatus,
    PoolDeposit,
    RequestIdReused,
    WalletRelease,
)
from order_service.manager import OrderManager, ReleasePolicy
from order_service.payment import PaymentStatus, evaluate
from order_service.repository import PostgresOrderRepository
from order_service.wallet_pool_client import GrpcWalletPoolGateway, PoolAllocation
from shared.auth import SERVICE, Authenticator, Principal
from shared.db import is_database_outage
from shared.errors import OutcomeUnknown
from shared.grpc_server import GrpcServer
from tests.databases import DatabaseFactory
from tests.e2e.proxy import DatabaseProxy
from tests.waiting import HANG_GUARD_SECONDS, until
from wallet_pool_service.deposits import ChainDeposit
from wallet_pool_service.domain import demo_addresses
from wallet_pool_service.manager import WalletPoolManager
from wallet_pool_service.servicer import METHOD_ROLES, WalletPoolServicer

NETWORKS = ("BTC", "ETH", "TRON")
SERVICE_TOKEN = "integration-service-token"
EVERY_ORDER = OrderScope.every_order()
FAST_RETRY = ReleasePolicy(lease_seconds=5, backoff_base_seconds=0.05, backoff_cap_seconds=0.1)


@pytest.fixture
def pool_manager(db_pool: asyncpg.Pool) -> WalletPoolManager:
    return WalletPoolManager(db_pool, NETWORKS)


async def _start_pool_server(manager: WalletPoolManager, address: str) -> GrpcServer:
    servicer = WalletPoolServicer(manager)
    server = GrpcServer(
        address=address,
        service_names=[],
        register=lambda s: pool_grpc.add_WalletPoolServiceServicer_to_server(servicer, s),
        authenticator=Authenticator({SERVICE_TOKEN: Principal("orders", SERVICE)}, METHOD_ROLES),
        grace_seconds=1,
    )
    await server.start()
    return server


@pytest.fixture
async def pool_server(pool_manager: WalletPoolManager) -> AsyncIterator[GrpcServer]:
    server = await _start_pool_server(pool_manager, "127.0.0.1:0")
    yield server
    await server.stop()


@pytest.fixture
async def orders(db_pool: asyncpg.Pool, pool_server: GrpcServer) -> AsyncIterator[OrderManager]:
    gateway = GrpcWalletPoolGateway.connect(
        f"127.0.0.1:{pool_server.port}", timeout_seconds=1, token=SERVICE_TOKEN
    )
    yield OrderManager(db_pool, gateway, NETWORKS, FAST_RETRY)
    await gateway.close()


async def _finish(orders: OrderManager, order_id: uuid.UUID, status: OrderStatus) -> WalletRelease:
    if status is OrderStatus.COMPLETED:
        await orders.update_status(order_id, OrderStatus.PROCESSING, "", "test")
    _, release = await orders.update_status(order_id, status, "done", "test")
    return release


async def test_a_new_order_gets_a_wallet_and_returns_it_on_completion(
    orders: OrderManager, pool_manager: WalletPoolManager, db_pool: asyncpg.Pool
) -> None:
    [address] = demo_addresses("ETH", 1)
    await pool_manager.add_wallets("ETH", [address])
    order = await orders.create_order("ETH", Decimal("1.5"), None, "client")
    assert order.wallet_address == address and order.status is OrderStatus.PENDING

    assert await _finish(orders, order.id, OrderStatus.COMPLETED) is WalletRelease.RELEASED
    held = await db_pool.fetchval(
        "SELECT order_id FROM wallet_pool.wallets WHERE address = $1", address
    )
    assert held is None
    history = await db_pool.fetch(
        "SELECT from_status, to_status, actor FROM orders.status_history"
        " WHERE order_id = $1 ORDER BY id",
        order.id,
    )
    assert [tuple(r) for r in history] == [
        (None, "PENDING", "client"),
        ("PENDING", "PROCESSING", "test"),
        ("PROCESSING", "COMPLETED", "test"),
    ]


async def test_same_status_again_is_a_no_op_and_illegal_moves_are_refused(
    orders: OrderManager, db_pool: asyncpg.Pool
) -> None:
    order = await orders.create_order("BTC", Decimal("1"), None, "client")
    await orders.update_status(order.id, OrderStatus.PROCESSING, "", "op")
    again, release = await orders.update_status(order.id, OrderStatus.PROCESSING, "", "op")
    assert again.status is OrderStatus.PROCESSING and release is WalletRelease.NOT_NEEDED
    with pytest.raises(IllegalTransition):
        await orders.update_status(order.id, OrderStatus.PENDING, "", "op")
    rows = await db_pool.fetchval(
        "SELECT count(*) FROM orders.status_history WHERE order_id = $1", order.id
    )
    assert rows == 2


async def test_a_status_set_without_reading_first_still_refuses_what_the_lifecycle_does_not_allow(
    orders: OrderManager, db_pool: asyncpg.Pool
) -> None:
    """PROCESSING and COMPLETED are tried as a compare-and-set from their one predecessor;
    when that misses, the order is read and the answer is the same as ever."""
    with pytest.raises(OrderNotFound):
        await orders.update_status(uuid.uuid4(), OrderStatus.COMPLETED, "", "op")
    with pytest.raises(OrderNotFound):
        await orders.update_status(uuid.uuid4(), OrderStatus.PROCESSING, "", "op")
    order = await orders.create_order("BTC", Decimal("1"), None, "client")
    with pytest.raises(IllegalTransition):
        await orders.update_status(order.id, OrderStatus.COMPLETED, "", "op")
    await orders.update_status(order.id, OrderStatus.PROCESSING, "", "op")
    done, release = await orders.update_status(order.id, OrderStatus.COMPLETED, "paid", "op")
    assert done.status is OrderStatus.COMPLETED and release is WalletRelease.RELEASED
    again, _ = await orders.update_status(order.id, OrderStatus.COMPLETED, "", "op")
    assert again.status is OrderStatus.COMPLETED
    history = await db_pool.fetch(
        "SELECT from_status, to_status FROM orders.status_history WHERE order_id = $1 ORDER BY id",
        order.id,
    )
    assert [(r["from_status"], r["to_status"]) for r in history] == [
        (None, "PENDING"),
        ("PENDING", "PROCESSING"),
        ("PROCESSING", "COMPLETED"),
    ]


async def test_the_same_request_id_returns_the_same_order_and_refuses_other_parameters(
    orders: OrderManager,
) -> None:
    first = await orders.create_order("BTC", Decimal("2"), "key-1", "client")
    again = await orders.create_order("BTC", Decimal("2.0"), "key-1", "client")
    assert again.id == first.id
    with pytest.raises(RequestIdReused):
        await orders.create_order("BTC", Decimal("3"), "key-1", "client")


async def test_a_write_whose_answer_is_lost_has_an_unknown_outcome_unless_in_a_transaction(
    databases: DatabaseFactory, database_url: str, db_pool: asyncpg.Pool
) -> None:
    proxy = DatabaseProxy(databases.server_url)
    await proxy.start()
    order_id = uuid.uuid4()

    async def answer_lost(write: Callable[[asyncpg.Connection], Awaitable[object]]) -> Exception:
        """What `write` raises when the answer to the statement about the order is lost."""
        conn = await asyncpg.connect(proxy.url_for(urlsplit(database_url).path.lstrip("/")))
        proxy.lose_answer_to(order_id.bytes)
        try:
            await write(conn)
        except Exception as exc:
            return exc
        finally:
            await conn.close()
        raise AssertionError("the answer was not lost")

    async def cancel(conn: asyncpg.Connection) -> object:
        return await PostgresOrderRepository(conn).change_status(
            order_id, OrderStatus.PENDING, OrderStatus.CANCELLED, "", "test", None
        )

    async def cancel_in_transaction(conn: asyncpg.Connection) -> object:
        async with conn.transaction():
            return await cancel(conn)

    async def status() -> object:
        return await db_pool.fetchval("SELECT status FROM orders.orders WHERE id = $1", order_id)

    try:
        created = await answer_lost(
            lambda conn: PostgresOrderRepository(conn).create(
                order_id, "ETH", Decimal(1), None, "c"
            )
        )
        assert isinstance(created, CreationOutcomeUnknown), created
        assert "a retry may create a second order" in str(created)
        assert await status() == "PENDING"
        # Nothing commits before COMMIT: the server rolled the change back.
        in_transaction = await answer_lost(cancel_in_transaction)
        assert is_database_outage(in_transaction), in_transaction
        assert not isinstance(in_transaction, OutcomeUnknown)
        assert await status() == "PENDING"
        assert isinstance(await answer_lost(cancel), ChangeOutcomeUnknown)
        assert await status() == "CANCELLED"
    finally:
        await proxy.cut()


async def test_a_release_that_fails_is_kept_and_delivered_when_the_pool_is_back(
    orders: OrderManager,
    pool_manager: WalletPoolManager,
    pool_server: GrpcServer,
    db_pool: asyncpg.Pool,
) -> None:
    [address] = demo_addresses("BTC", 1)
    await pool_manager.add_wallets("BTC", [address])
    order = await orders.create_order("BTC", Decimal("1"), None, "client")
    await pool_server.stop()

    assert await _finish(orders, order.id, OrderStatus.CANCELLED) is WalletRelease.PENDING
    assert await orders.releases.deliver_due() is False
    still_held = await db_pool.fetchval(
        "SELECT order_id FROM wallet_pool.wallets WHERE address = $1", address
    )
    assert still_held == order.id

    restarted = await _start_pool_server(pool_manager, f"127.0.0.1:{pool_server.port}")
    try:
        deadline = time.monotonic() + HANG_GUARD_SECONDS
        while time.monotonic() < deadline:
            await orders.releases.deliver_due()
            pending = await db_pool.fetchval(
                "SELECT count(*) FROM orders.orders WHERE wallet_release = 'PENDING'"
            )
            if pending == 0:
                break
            await asyncio.sleep(0.05)
        held = await db_pool.fetchval(
            "SELECT order_id FROM wallet_pool.wallets WHERE address = $1", address
        )
        assert (pending, held) == (0, None)
    finally:
        await restarted.stop()


async def test_concurrent_completes_and_creates_never_give_one_wallet_to_two_live_orders(
    orders: OrderManager, pool_manager: WalletPoolManager, db_pool: asyncpg.Pool
) -> None:
    await pool_manager.add_wallets("ETH", demo_addresses("ETH", 10))
    first = [await orders.create_order("ETH", Decimal("1"), None, "c") for _ in range(10)]
    assert all(o.wallet_address for o in first)

    await asyncio.gather(
        *(_finish(orders, o.id, OrderStatus.COMPLETED) for o in first[:5]),
        *(_finish(orders, o.id, OrderStatus.CANCELLED) for o in first[5:]),
        *(orders.create_order("ETH", Decimal("1"), None, "c") for _ in range(30)),
    )

    async def caught_up() -> list[asyncpg.Record]:
        # What the services' loops do, until the ten wallets are back in use: a call that
        # missed its deadline on a busy machine leaves a release owed or an order waiting.
        await orders.releases.deliver_due()
        await pool_manager.hand_off_everywhere()
        await orders.allocation.sync_waiting_orders()
        live = await db_pool.fetch(
            "SELECT id, wallet_address FROM orders.orders WHERE status IN ('PENDING', 'PROCESSING')"
        )
        return live if sum(1 for r in live if r["wallet_address"]) >= 10 else []

    live = await until(caught_up, "the ten wallets in use by live orders again")
    shown = [r["wallet_address"] for r in live if r["wallet_address"]]
    assert len(live) == 30 and len(shown) == 10 and len(set(shown)) == 10
    pool_view = {
        r["address"]: r["order_id"]
        for r in await db_pool.fetch(
            "SELECT address, order_id FROM wallet_pool.wallets WHERE order_id IS NOT NULL"
        )
    }
    assert pool_view == {r["wallet_address"]: r["id"] for r in live if r["wallet_address"]}
    assert await db_pool.fetchval("SELECT count(*) FROM wallet_pool.queue") == 20


async def test_orders_list_newest_first_with_filters_and_pages_stable_under_inserts(
    orders: OrderManager,
) -> None:
    created = [await orders.create_order("BTC", Decimal(i + 1), None, "c") for i in range(7)]
    await orders.create_order("ETH", Decimal("1"), None, "c")
    await orders.update_status(created[0].id, OrderStatus.CANCELLED, "", "op")

    seen: list[uuid.UUID] = []
    token = ""
    while True:
        page, token = await orders.list_orders(OrderFilter(network="BTC"), 3, token, EVERY_ORDER)
        seen += [o.id for o in page]
        if not token:
            break
        await orders.create_order("BTC", Decimal("9"), None, "c")  # newer: not in later pages
    assert seen == [o.id for o in reversed(created)]

    pending, _ = await orders.list_orders(
        OrderFilter(status=OrderStatus.PENDING, network="BTC"), 500, "", EVERY_ORDER
    )
    assert created[0].id not in {o.id for o in pending}
    window, _ = await orders.list_orders(
        OrderFilter(created_after=created[2].create_time, created_before=created[5].create_time),
        0,
        "",
        EVERY_ORDER,
    )
    assert [o.id for o in window] == [created[4].id, created[3].id, created[2].id]


async def test_history_records_who_changed_what_and_why(orders: OrderManager) -> None:
    order = await orders.create_order("ETH", Decimal("1"), None, "shop")
    await orders.update_status(order.id, OrderStatus.PROCESSING, "deposit seen", "alice")
    await orders.update_status(order.id, OrderStatus.CANCELLED, "customer asked", "bob")
    history = await orders.get_history(order.id, EVERY_ORDER)
    assert [(h.from_status, h.to_status, h.actor, h.reason) for h in history] == [
        (None, OrderStatus.PENDING, "shop", "created"),
        (OrderStatus.PENDING, OrderStatus.PROCESSING, "alice", "deposit seen"),
        (OrderStatus.PROCESSING, OrderStatus.CANCELLED, "bob", "customer asked"),
    ]
    assert history[0].change_time <= history[1].change_time <= history[2].change_time


async def test_racing_status_changes_each_decide_on_the_status_the_other_left(
    orders: OrderManager, db_pool: asyncpg.Pool
) -> None:
    """A change checks the status it read is still there as it writes (compare-and-set), so
    the loser of a race decides again: CANCELLED after PROCESSING is allowed, PROCESSING
    after CANCELLED is not. The history stays one unbroken chain and one release is owed."""
    targets = [OrderStatus.PROCESSING, OrderStatus.CANCELLED] * 4
    for _ in range(10):
        order = await orders.create_order("BTC", Decimal("1"), None, "shop")
        outcomes = await asyncio.gather(
            *(orders.update_status(order.id, target, "", "op") for target in targets),
            return_exceptions=True,
        )
        for target, outcome in zip(targets, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                assert isinstance(outcome, IllegalTransition), outcome
                assert target is OrderStatus.PROCESSING
        history = await orders.get_history(order.id, EVERY_ORDER)
        chain = [h.to_status for h in history]
        assert [h.from_status for h in history[1:]] == chain[:-1]
        assert chain[-1] is OrderStatus.CANCELLED
        assert chain in (
            [OrderStatus.PENDING, OrderStatus.CANCELLED],
            [OrderStatus.PENDING, OrderStatus.PROCESSING, OrderStatus.CANCELLED],
        )
        owed = await db_pool.fetch(
            """SELECT o.wallet_release, p.release_time
               FROM orders.orders o JOIN orders.pending_releases p ON p.order_id = o.id
               WHERE o.id = $1""",
            order.id,
        )
        # Delivered, and shown so to the previous release too (its release_time).
        assert len(owed) == 1 and owed[0]["wallet_release"] == "RELEASED"
        assert owed[0]["release_time"] is not None
        assert (
            await db_pool.fetchval(
                "SELECT count(*) FROM wallet_pool.wallets WHERE order_id = $1", order.id
            )
            == 0
        )


async def test_request_ids_belong_to_their_creator_and_are_kept_past_a_day(
    orders: OrderManager, db_pool: asyncpg.Pool
) -> None:
    mine = await orders.create_order("BTC", Decimal("2"), "shared-key", "shop-a")
    theirs = await orders.create_order("BTC", Decimal("5"), "shared-key", "shop-b")
    assert theirs.id != mine.id and theirs.amount == Decimal("5")

    await db_pool.execute(
        "UPDATE orders.orders SET create_time = now() - interval '25 hours' WHERE id = $1",
        mine.id,
    )
    again = await orders.create_order("BTC", Decimal("2"), "shared-key", "shop-a")
    assert again.id == mine.id
    with pytest.raises(RequestIdReused):
        await orders.create_order("ETH", Decimal("2"), "shared-key", "shop-a")


async def _listed(
    orders: OrderManager, scope: OrderScope, network: str | None = None
) -> list[uuid.UUID]:
    """Every order `scope` lists, two to a page."""
    seen: list[uuid.UUID] = []
    token = ""
    while True:
        page, token = await orders.list_orders(OrderFilter(network=network), 2, token, scope)
        seen += [o.id for o in page]
        if not token:
            return seen


async def test_a_clients_scope_reads_and_lists_only_the_orders_it_created(
    orders: OrderManager,
) -> None:
    plan = [("BTC", "alice"), ("BTC", "bob"), ("ETH", "alice"), ("BTC", "bob"), ("BTC", "alice")]
    created = [
        await orders.create_order(network, Decimal(i + 1), None, creator)
        for i, (network, creator) in enumerate(plan)
    ]
    newest_first = list(reversed(created))
    everything = await _listed(orders, EVERY_ORDER)
    assert everything == [o.id for o in newest_first]
    for name in ("alice", "bob"):
        scope = OrderScope.created_by(name)
        own = [o for o in newest_first if o.created_by == name]
        # The listing's filter in SQL and the scope's own decision agree.
        assert await _listed(orders, scope) == [o.id for o in own]
        assert [o.id for o in newest_first if scope.sees(o)] == [o.id for o in own]
        assert await _listed(orders, scope, network="BTC") == [
            o.id for o in own if o.network == "BTC"
        ]
        for order in own:
            assert (await orders.get_order(order.id, scope)).id == order.id
            assert len(await orders.get_history(order.id, scope)) == 1
        for order in created:
            if order in own:
                continue
            with pytest.raises(OrderNotFound, match=f"^order_id: no order {order.id}$"):
                await orders.get_order(order.id, scope)
            with pytest.raises(OrderNotFound, match=f"^order_id: no order {order.id}$"):
                await orders.get_history(order.id, scope)
    assert await _listed(orders, OrderScope.created_by("carol")) == []


async def _backdate(db_pool: asyncpg.Pool, order_id: uuid.UUID, seconds: int) -> None:
    await db_pool.execute(
        """UPDATE orders.orders SET create_time = now() - make_interval(secs => $2),
                  payment_window_start = payment_window_start - make_interval(secs => $2)
           WHERE id = $1""",
        order_id,
        seconds,
    )


async def test_pending_orders_past_their_ttl_expire_once_as_the_system_and_free_their_wallet(
    db_pool: asyncpg.Pool, pool_server: GrpcServer, pool_manager: WalletPoolManager
) -> None:
    [address] = demo_addresses("ETH", 1)
    await pool_manager.add_wallets("ETH", [address])
    gateway = GrpcWalletPoolGateway.connect(
        f"127.0.0.1:{pool_server.port}", timeout_seconds=1, token=SERVICE_TOKEN
    )
    # Two replicas running the expiry loop at once.
    replicas = [
        OrderManager(db_pool, gateway, NETWORKS, FAST_RETRY, order_ttl_seconds=60) for _ in range(2)
    ]
    try:
        holding = await replicas[0].create_order("ETH", Decimal("1"), None, "c")
        waiting = await replicas[0].create_order("ETH", Decimal("1"), None, "c")
        young = await replicas[0].create_order("ETH", Decimal("1"), None, "c")
        processing = await replicas[0].create_order("ETH", Decimal("1"), None, "c")
        await replicas[0].update_status(processing.id, OrderStatus.PROCESSING, "", "op")
        assert (holding.wallet_address, waiting.queue_position) == (address, 1)
        for order in (holding, waiting, processing):
            await _backdate(db_pool, order.id, 3600)

        await asyncio.gather(*(r.expiry.expire_stale_orders() for r in replicas))

        for order in (holding, waiting):
            history = await replicas[1].get_history(order.id, EVERY_ORDER)
            assert [(h.to_status, h.actor, h.reason) for h in history[1:]] == [
                (OrderStatus.CANCELLED, "system", "expired")
            ]
        for order in (young, processing):
            assert (
                await replicas[1].get_order(order.id, EVERY_ORDER)
            ).status is not OrderStatus.CANCELLED
        # The expired holder's wallet went back to the pool, to the next order in the queue.
        assert (
            await db_pool.fetchval(
                "SELECT order_id FROM wallet_pool.wallets WHERE address = $1", address
            )
            == young.id
        )
        assert await db_pool.fetchval("SELECT count(*) FROM wallet_pool.queue") == 1
        assert await replicas[0].releases.count_pending() == 0
    finally:
        await gateway.close()


class CountingGateway:
    """The real gateway, counting the allocation calls that go through it."""

    def __init__(self, inner: GrpcWalletPoolGateway) -> None:
        self._inner = inner
        self.allocations: list[uuid.UUID] = []

    async def allocate(self, order_id: uuid.UUID, network: str, asset: str = "") -> PoolAllocation:
        self.allocations.append(order_id)
        return await self._inner.allocate(order_id, network, asset)

    async def release(self, order_id: uuid.UUID, address: str, final_time: datetime) -> int:
        return await self._inner.release(order_id, address, final_time)

    def watch_hand_offs(self) -> AsyncIterator[tuple[uuid.UUID, str]]:
        return self._inner.watch_hand_offs()

    async def deposits_after(self, after_id: int, limit: int) -> tuple[list[PoolDeposit], int]:
        return await self._inner.deposits_after(after_id, limit)

    async def deposit_changes(self, after_change: int, limit: int) -> tuple[list[PoolDeposit], int]:
        return await self._inner.deposit_changes(after_change, limit)


async def test_replicas_share_the_allocation_sync_without_asking_twice_about_an_order(
    db_pool: asyncpg.Pool, pool_server: GrpcServer, orders: OrderManager
) -> None:
    waiting = [await orders.create_order("BTC", Decimal("1"), None, "c") for _ in range(20)]
    assert all(o.queue_position for o in waiting)

    async def due() -> bool:
        # Each creator's lease on its new order (it asked the pool itself) has run out.
        return bool(
            await db_pool.fetchval(
                "SELECT count(*) = 20 FROM orders.orders WHERE next_sync_time <= now()"
            )
        )

    await until(due, "the waiting orders due for the allocation loop")
    gateway = GrpcWalletPoolGateway.connect(
        f"127.0.0.1:{pool_server.port}", timeout_seconds=1, token=SERVICE_TOKEN
    )
    counters = [CountingGateway(gateway) for _ in range(3)]
    replicas = [
        OrderManager(db_pool, counter, NETWORKS, FAST_RETRY, sync_lease_seconds=30)
        for counter in counters
    ]
    try:
        await asyncio.gather(*(r.allocation.sync_waiting_orders() for r in replicas))
        await asyncio.gather(*(r.allocation.sync_waiting_orders() for r in replicas))
    finally:
        await gateway.close()
    asked = [order_id for counter in counters for order_id in counter.allocations]
    assert sorted(asked) == sorted(o.id for o in waiting)


class HeldGateway(CountingGateway):
    """The real gateway, whose allocation calls wait until `go` is set."""

    def __init__(self, inner: GrpcWalletPoolGateway) -> None:
        super().__init__(inner)
        self.go = asyncio.Event()

    async def allocate(self, order_id: uuid.UUID, network: str, asset: str = "") -> PoolAllocation:
        self.allocations.append(order_id)
        await self.go.wait()
        return await self._inner.allocate(order_id, network, asset)


async def test_the_allocation_loop_leaves_a_new_order_to_its_creator_while_it_asks_the_pool(
    db_pool: asyncpg.Pool, pool_server: GrpcServer, pool_manager: WalletPoolManager
) -> None:
    await pool_manager.add_wallets("ETH", demo_addresses("ETH", 1))
    gateway = GrpcWalletPoolGateway.connect(
        f"127.0.0.1:{pool_server.port}", timeout_seconds=1, token=SERVICE_TOKEN
    )
    creator, other = HeldGateway(gateway), CountingGateway(gateway)
    creating = OrderManager(db_pool, creator, NETWORKS, FAST_RETRY, sync_lease_seconds=30)
    looping = OrderManager(db_pool, other, NETWORKS, FAST_RETRY, sync_lease_seconds=30)
    try:
        created = asyncio.create_task(creating.create_order("ETH", Decimal("1"), None, "c"))
        await until(lambda: asyncio.sleep(0, bool(creator.allocations)), "the creator asking")
        # Another replica's allocation loop, while the creator's call is in flight.
        await looping.allocation.sync_waiting_orders()
        creator.go.set()
        order = await created
    finally:
        await gateway.close()
    assert order.wallet_address
    assert (creator.allocations, other.allocations) == ([order.id], [])


async def test_changes_are_announced_to_other_replicas_by_the_sequencer_alone(
    db_pool: asyncpg.Pool, orders: OrderManager
) -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()

    def on_notify(*args: object) -> None:
        heard.put_nowait(str(args[3]))

    async with db_pool.acquire() as listening, db_pool.acquire() as writing:
        await listening.add_listener("order_events", on_notify)
        try:
            repository = PostgresOrderRepository(writing)
            order = await repository.create(uuid.uuid4(), "ETH", Decimal("1"), None, "test")
            assert order is not None
            await repository.change_status(
                order.id, OrderStatus.PENDING, OrderStatus.PROCESSING, "", "test", None
            )
            # The writing transactions notify nothing: PostgreSQL would serialise their commits.
            # Notifications arrive in commit order, so a marker committed after the writes is
            # the first one heard unless the writes notified.
            await writing.execute("NOTIFY order_events, 'marker'")
            assert await asyncio.wait_for(heard.get(), HANG_GUARD_SECONDS) == "marker"
            # A sequencer run announces the orders of the events it numbered.
            await orders.events.sequence_events()
            last = (await repository.event_log()).last_sequence
            announced = await asyncio.wait_for(heard.get(), HANG_GUARD_SECONDS)
            assert announced.split() == [str(last), str(order.id)]
            # A queue place that moved has no event: announced when asked; too many at once
            # become '*' (a notification holds less than 8000 bytes).
            await orders.events.sequence_events([order.id])
            announced = await asyncio.wait_for(heard.get(), HANG_GUARD_SECONDS)
            assert announced.split() == [str(last), str(order.id)]
            await orders.events.sequence_events([uuid.uuid4() for _ in range(300)])
            assert (await asyncio.wait_for(heard.get(), 2)).split() == [str(last), "*"]
        finally:
            await listening.remove_listener("order_events", on_notify)


async def test_the_holding_ends_when_the_order_became_final_for_the_pool_and_the_order(
    orders: OrderManager, pool_manager: WalletPoolManager, db_pool: asyncpg.Pool
) -> None:
    [address] = demo_addresses("ETH", 1)
    await pool_manager.add_wallets("ETH", [address])
    order = await orders.create_order("ETH", Decimal("1"), None, "client")
    assert order.wallet_address == address
    await _finish(orders, order.id, OrderStatus.CANCELLED)
    final_at = await db_pool.fetchval(
        "SELECT change_time FROM orders.status_history WHERE order_id = $1 AND to_status = $2",
        order.id,
        "CANCELLED",
    )
    # The release tells the pool when the order became final: its holding ends then, not
    # when the release arrived.
    released_at = await db_pool.fetchval(
        "SELECT released_at FROM wallet_pool.assignments WHERE order_id = $1", order.id
    )
    assert released_at == final_at
    reported = [
        ChainDeposit(address, txid, 0, Decimal("0.5"), 7, time, 1)
        for txid, time in (
            ("0xbefore", final_at - timedelta(milliseconds=1)),
            ("0xafter", final_at + timedelta(milliseconds=1)),
        )
    ]
    outcome = await pool_manager.report_deposits("ETH", reported, 7)
    assert (outcome.recorded, outcome.late) == (2, 1)

    await orders.deposits.sync()

    _, shown = await orders.get_order_with_deposits(order.id, EVERY_ORDER)
    assert [(d.txid, d.late) for d in shown] == [("0xbefore", False), ("0xafter", True)]


async def test_an_order_is_shown_with_the_payment_its_shown_deposits_make(
    orders: OrderManager, pool_manager: WalletPoolManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    [address] = demo_addresses("ETH", 1)
    await pool_manager.add_wallets("ETH", [address])
    order = await orders.create_order("ETH", Decimal("1"), None, "client")
    paid = ChainDeposit(address, "0xpaid", 0, Decimal("1"), 7, datetime.now(UTC), 64)
    assert (await pool_manager.report_deposits("ETH", [paid], 7)).recorded == 1
    # The deposit sync commits the deposit and the payment it makes between the read of the
    # order and the read of its deposits (once, when the read under test gets there).
    read_deposits = PostgresOrderRepository.deposits
    between_the_reads = [orders.deposits.sync]

    async def deposits_after_a_sync(
        self: PostgresOrderRepository, order_id: uuid.UUID
    ) -> list[OrderDeposit]:
        if between_the_reads:
            await between_the_reads.pop()()
        return await read_deposits(self, order_id)

    monkeypatch.setattr(PostgresOrderRepository, "deposits", deposits_after_a_sync)
    shown, deposits = await orders.get_order_with_deposits(order.id, EVERY_ORDER)
    assert not between_the_reads
    payment = evaluate(shown.amount, shown.asset, deposits, shown.tolerance)
    assert (shown.payment_status, shown.received_confirmed, shown.received_pending) == (
        payment.status,
        payment.received_confirmed,
        payment.received_pending,
    )
    # Read again: the deposit and the payment it made, together.
    shown, deposits = await orders.get_order_with_deposits(order.id, EVERY_ORDER)
    assert [d.txid for d in deposits] == ["0xpaid"]
    assert shown.payment_status is PaymentStatus.PAID
