"""What an operations team sees: metrics, request ids in logs, health that follows the
database, and TLS."""

import asyncio
import itertools
import re
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from exchange.order.v1 import order_service_pb2 as opb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from shared.grpc_server import LIVENESS_SERVICE
from tests.databases import DatabaseFactory
from tests.e2e.certificates import self_signed_certificate
from tests.e2e.conftest import local_only, own_stack
from tests.e2e.proxy import DatabaseProxy
from tests.e2e.stack import LocalStack, OwnStack, Service
from tests.e2e.test_release_flow import add_wallets, create, eth_address, finish
from tests.waiting import HANG_GUARD_SECONDS, until


async def scrape(port: int) -> str:
    def fetch() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            body: bytes = response.read()
            return body.decode()

    return await asyncio.to_thread(fetch)


async def wait_for(predicate_text: str, port: int, seconds: float = HANG_GUARD_SECONDS) -> str:
    deadline = time.monotonic() + seconds
    while True:
        text = await scrape(port)
        if predicate_text in text or time.monotonic() > deadline:
            return text
        await asyncio.sleep(0.1)


@own_stack
async def test_metrics_count_rpcs_by_code_and_show_the_pool_and_releases(
    stack: OwnStack,
) -> None:
    await add_wallets(stack, "ETH", [eth_address()])
    order = await create(stack)
    await finish(stack, order.id, opb.ORDER_STATUS_CANCELLED)
    with pytest.raises(grpc.aio.AioRpcError):
        await stack.orders.GetOrder(opb.GetOrderRequest(order_id="nope"), metadata=stack.client)

    # A refused call is counted just after its status is sent (shared.grpc_server's guard):
    # on a busy machine the client can scrape first.
    orders = await wait_for(
        'grpc_code="INVALID_ARGUMENT",grpc_method="GetOrder"', stack.order_process.metrics_port
    )
    assert (
        'grpc_server_handled_total{grpc_code="OK",grpc_method="CreateOrder",'
        'grpc_service="exchange.order.v1.OrderService",grpc_type="unary"} 1.0' in orders
    )
    assert 'grpc_code="INVALID_ARGUMENT",grpc_method="GetOrder"' in orders
    assert 'grpc_server_handling_seconds_bucket{grpc_method="UpdateOrderStatus"' in orders
    assert 'order_release_attempts_total{outcome="released",path="inline"} 1.0' in orders
    assert "order_pending_releases 0.0" in orders

    pool = await wait_for(
        'wallet_pool_wallets{network="ETH",state="available"} 1.0', stack.pool_process.metrics_port
    )
    assert 'wallet_pool_wallets{network="ETH",state="available"} 1.0' in pool
    assert 'wallet_pool_queue_length{network="ETH"} 0.0' in pool
    assert 'wallet_pool_below_low_water_mark{network="ETH"} 1.0' in pool
    assert "available wallets below the low-water mark" in stack.pool_process.logs()


@own_stack
async def test_the_callers_request_id_is_logged_by_both_services(stack: OwnStack) -> None:
    await add_wallets(stack, "ETH", [eth_address()])
    order = await create(stack)
    await stack.orders.UpdateOrderStatus(
        opb.UpdateOrderStatusRequest(order_id=order.id, status=opb.ORDER_STATUS_CANCELLED),
        metadata=(*stack.operator, ("x-request-id", "e2e-request-42")),
    )

    async def logged(process: Service, *wanted: str) -> bool:
        # A call's log line may follow its answer (and the engine's log the container's).
        lines = [line for line in process.logs().splitlines() if "e2e-request-42" in line]
        return all(any(w in line for line in lines) for w in wanted)

    method = '"method": "/exchange.order.v1.OrderService/UpdateOrderStatus"'
    await until(lambda: logged(stack.order_process, method), "the order service's line")
    await until(
        lambda: logged(stack.pool_process, "ReleaseWallet", '"event": "wallet released"'),
        "the pool's lines",
    )


async def _health(channel: grpc.aio.Channel, service: str = "") -> int:
    try:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
    except grpc.aio.AioRpcError:
        return -1
    status: int = response.status
    return status


async def _wait_health(
    channel: grpc.aio.Channel, wanted: int, seconds: float = HANG_GUARD_SECONDS
) -> int:
    deadline = time.monotonic() + seconds
    while (status := await _health(channel)) != wanted and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return status


@local_only(
    "cuts the database through a TCP proxy on the host's loopback, out of the containers' reach"
)
async def test_during_a_database_outage_services_stay_up_not_serving_and_recover(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    direct_url = await databases.create(migrated=False)
    proxy = DatabaseProxy(databases.server_url)
    await proxy.start()
    stack = await LocalStack.start(proxy.url_for(urlsplit(direct_url).path.lstrip("/")), tmp_path)
    try:
        await add_wallets(stack, "ETH", [eth_address()])
        order = await create(stack)
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING

        await proxy.cut()
        assert await _wait_health(stack.order_channel, not_serving) == not_serving
        assert await _wait_health(stack.pool_channel, not_serving) == not_serving
        assert (
            'grpc_health_serving{grpc_service="exchange.order.v1.OrderService"} 0.0'
            in await scrape(stack.order_process.metrics_port)
        )
        # Liveness stays SERVING: the processes work, only their database is away.
        for channel in (stack.order_channel, stack.pool_channel):
            assert await _health(channel, LIVENESS_SERVICE) == serving
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stack.orders.GetOrder(
                opb.GetOrderRequest(order_id=order.id), metadata=stack.client
            )
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stack.pool.GetPoolStats(wpb.GetPoolStatsRequest(), metadata=stack.operator)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE

        await proxy.start()
        assert await _wait_health(stack.order_channel, serving) == serving
        assert await _wait_health(stack.pool_channel, serving) == serving
        pool_metrics = await scrape(stack.pool_process.metrics_port)
        pool_service = 'grpc_service="exchange.wallet_pool.v1.WalletPoolService"'
        assert f"grpc_health_serving{{{pool_service}}} 1.0" in pool_metrics
        changes = re.search(
            rf"^grpc_health_changes_total{{{pool_service}}} (\S+)$", pool_metrics, re.MULTILINE
        )
        assert changes is not None and float(changes.group(1)) >= 2  # down, then up again
        again = await stack.orders.GetOrder(
            opb.GetOrderRequest(order_id=order.id), metadata=stack.client
        )
        assert again.order.wallet_address == order.wallet_address
        assert stack.order_process.running()
    finally:
        await stack.close()
        await proxy.cut()


@local_only("TLS with a certificate for localhost made on the host; the containers serve plaintext")
async def test_both_servers_and_the_internal_channel_can_use_tls(
    databases: DatabaseFactory, tmp_path: Path
) -> None:
    cert, key = self_signed_certificate(tmp_path, "localhost", "127.0.0.1")
    credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
    stack = await LocalStack.start(
        await databases.create(migrated=False),
        tmp_path,
        extra_env={
            "TLS_CERT_FILE": str(cert),
            "TLS_KEY_FILE": str(key),
            "WALLET_POOL_TLS_CA_FILE": str(cert),
        },
        credentials=credentials,
    )
    try:
        await add_wallets(stack, "ETH", [eth_address()])
        order = await create(stack)  # the order service reached the pool over TLS
        assert order.wallet_address
        plaintext = grpc.aio.insecure_channel(stack.order_addr)
        try:
            assert await _health(plaintext) == -1
        finally:
            await plaintext.close(None)
    finally:
        await stack.close()


# Against containers: SIGTERM through `docker stop`, to the service as PID 1.
@own_stack
async def test_sigterm_under_load_fails_no_call_the_server_accepted(
    stack: OwnStack, db: asyncpg.Pool
) -> None:
    """Clients keep creating orders through the stop, each until a call fails. Every call is
    then looked up by its request_id: one the server committed must have been answered OK
    with that order; one answered UNAVAILABLE must have committed nothing."""
    answers: dict[str, tuple[grpc.StatusCode, str]] = {}
    details: dict[str, str] = {}

    async def client(name: int) -> None:
        for index in itertools.count():
            request_id = f"load-{name}-{index}"
            try:
                created = await stack.orders.CreateOrder(
                    opb.CreateOrderRequest(network="BTC", amount="1", request_id=request_id),
                    metadata=stack.client,
                    timeout=10,
                )
            except grpc.aio.AioRpcError as exc:
                answers[request_id] = (exc.code(), "")
                details[request_id] = exc.details() or ""
                return
            answers[request_id] = (grpc.StatusCode.OK, created.order.id)

    clients = [asyncio.ensure_future(client(name)) for name in range(8)]
    # Stop once the server has committed some of the calls, with others still coming.
    await until(lambda: db.fetchval("SELECT count(*) FROM orders.orders"), "a call committed")
    stopped = asyncio.ensure_future(stack.order_process.stop())
    await asyncio.gather(*clients)
    assert await stopped == 0

    rows = await db.fetch("SELECT request_id, id::text AS id FROM orders.orders")
    committed = {row["request_id"]: row["id"] for row in rows}
    wrong = []
    # A call still queued in gRPC's core, before any handler, when the server stops is
    # answered CANCELLED, not UNAVAILABLE (grpc/grpc#41785, open): refused, so it must have
    # committed nothing either.
    refused = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
    for request_id, (code, order_id) in sorted(answers.items()):
        stored = committed.get(request_id)
        if code == grpc.StatusCode.OK and stored != order_id:
            wrong.append(f"{request_id}: answered OK with {order_id}, stored {stored}")
        elif code in refused and stored is not None:
            wrong.append(f"{request_id}: committed as {stored}, answered {code.name}")
        elif code != grpc.StatusCode.OK and code not in refused:
            wrong.append(f"{request_id}: answered {code} ({details[request_id]})")
    assert wrong == []
    assert set(committed) <= set(answers), "an order no client asked for"
    codes = [code for code, _ in answers.values()]
    # Calls were answered OK through the drain, and the clients saw the server go.
    assert codes.count(grpc.StatusCode.OK) > 0
    assert sum(codes.count(code) for code in refused) == len(clients)
