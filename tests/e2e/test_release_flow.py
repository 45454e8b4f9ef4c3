"""End to end: both services as real processes, talking gRPC over sockets, on PostgreSQL."""

import asyncio
import contextlib
import json
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from exchange.order.v1 import order_service_pb2 as opb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from shared.addresses import eip55_checksum
from tests.e2e.conftest import own_stack
from tests.e2e.stack import OwnStack, Stack
from tests.waiting import HANG_GUARD_SECONDS

FINAL = [opb.ORDER_STATUS_COMPLETED, opb.ORDER_STATUS_CANCELLED]


def eth_address() -> str:
    return "0x" + secrets.token_hex(20)


async def add_wallets(stack: Stack, network: str, addresses: list[str]) -> None:
    response = await stack.pool.AddWallets(
        wpb.AddWalletsRequest(network=network, addresses=addresses), metadata=stack.operator
    )
    assert list(response.added) == addresses


async def create(stack: Stack, network: str = "ETH", amount: str = "0.5") -> opb.Order:
    response = await stack.orders.CreateOrder(
        opb.CreateOrderRequest(network=network, amount=amount), metadata=stack.client
    )
    return response.order


async def move(
    stack: Stack, order_id: str, status: int, reason: str = ""
) -> opb.UpdateOrderStatusResponse:
    request = opb.UpdateOrderStatusRequest(order_id=order_id, status=status, reason=reason)  # type: ignore[arg-type]
    response: opb.UpdateOrderStatusResponse = await stack.orders.UpdateOrderStatus(
        request, metadata=stack.operator
    )
    return response


async def finish(stack: Stack, order_id: str, status: int) -> opb.UpdateOrderStatusResponse:
    if status == opb.ORDER_STATUS_COMPLETED:
        await move(stack, order_id, opb.ORDER_STATUS_PROCESSING)
    return await move(stack, order_id, status, "e2e")


async def shown_address(
    stack: Stack, order_id: str, *, within: float, every: float = 0.05
) -> tuple[opb.Order, float]:
    """The order as GetOrder shows it once it has an address (or after `within` seconds),
    and how long that took."""
    started = time.monotonic()
    while True:
        seen = (
            await stack.orders.GetOrder(
                opb.GetOrderRequest(order_id=order_id), metadata=stack.client
            )
        ).order
        waited = time.monotonic() - started
        if seen.wallet_address or waited > within:
            return seen, waited
        await asyncio.sleep(every)


async def until_shown(stack: Stack, order_id: str) -> opb.Order:
    """The order once GetOrder shows it with an address; fails if it never does."""
    seen, waited = await shown_address(stack, order_id, within=HANG_GUARD_SECONDS)
    assert seen.wallet_address, f"no address shown after {waited:.0f} s"
    return seen


def metric(port: int, name: str, labels: dict[str, str]) -> float:
    """One sample of a service's /metrics (0 while the series is absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def watching_hand_offs(stack: OwnStack) -> None:
    """Returns once the order service's WatchHandOffs stream is open on the pool (the
    pool's count of started calls says so)."""
    labels = {
        "grpc_method": "WatchHandOffs",
        "grpc_service": "exchange.wallet_pool.v1.WalletPoolService",
        "grpc_type": "server_stream",
    }
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    port = stack.pool_process.metrics_port
    while not await asyncio.to_thread(metric, port, "grpc_server_started_total", labels):
        assert time.monotonic() < deadline, "the order service never watched hand-offs"
        await asyncio.sleep(0.05)


def rpc_log_codes(process_logs: str, method: str) -> list[str]:
    """The codes a service logged for the calls of `method` that ended."""
    codes = []
    for line in process_logs.splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if entry.get("event") == "rpc" and entry.get("method", "").endswith(f"/{method}"):
                codes.append(entry["code"])
    return codes


async def holder(db: asyncpg.Pool, address: str) -> str | None:
    value = await db.fetchval(
        "SELECT order_id FROM wallet_pool.wallets WHERE address = $1", address
    )
    return str(value) if value else None


@own_stack
@pytest.mark.parametrize("final", FINAL, ids=["completed", "cancelled"])
async def test_a_final_status_puts_the_wallet_back_in_the_pool(
    stack: Stack, db: asyncpg.Pool, final: int
) -> None:
    address = eth_address()
    await add_wallets(stack, "ETH", [address])
    order = await create(stack)
    assert order.wallet_address == address
    assert await holder(db, address) == order.id

    response = await finish(stack, order.id, final)

    assert response.order.status == final
    assert response.wallet_release == opb.WALLET_RELEASE_RELEASED
    assert await holder(db, address) is None
    stats = await stack.pool.GetPoolStats(
        wpb.GetPoolStatsRequest(network="ETH"), metadata=stack.operator
    )
    assert (stats.networks[0].available, stats.networks[0].allocated) == (1, 0)


@own_stack
async def test_an_order_waiting_in_the_queue_receives_the_released_wallet(
    stack: Stack, db: asyncpg.Pool
) -> None:
    address = eth_address()
    await add_wallets(stack, "ETH", [address])
    first = await create(stack)
    waiting = await create(stack)
    assert (waiting.wallet_address, waiting.queue_position) == ("", 1)

    await finish(stack, first.id, opb.ORDER_STATUS_COMPLETED)
    seen = await until_shown(stack, waiting.id)

    assert seen.wallet_address == address
    assert seen.queue_position == 0
    assert await holder(db, address) == waiting.id


@own_stack
async def test_a_release_while_the_pool_is_down_is_kept_and_delivered_when_it_is_back(
    stack: OwnStack, db: asyncpg.Pool
) -> None:
    address = eth_address()
    await add_wallets(stack, "ETH", [address])
    order = await create(stack)
    await move(stack, order.id, opb.ORDER_STATUS_PROCESSING)
    assert await stack.pool_process.stop() == 0

    response = await move(stack, order.id, opb.ORDER_STATUS_COMPLETED, "paid")

    assert response.order.status == opb.ORDER_STATUS_COMPLETED
    assert response.wallet_release == opb.WALLET_RELEASE_PENDING
    assert await holder(db, address) == order.id
    assert "wallet release failed; will retry" in stack.order_process.logs()

    await stack.pool_process.start()

    async def delivered() -> bool:
        done = await db.fetchval(
            "SELECT wallet_release = 'RELEASED' FROM orders.orders WHERE id = $1::uuid",
            order.id,
        )
        return bool(done)

    # The pool frees the wallet, then the order service records the delivery.
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while not await delivered() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert await delivered()
    assert await holder(db, address) is None


def status_details(error: grpc.aio.AioRpcError) -> status_pb2.Status:
    """The google.rpc.Status a server attached to an error."""
    metadata: Any = error.trailing_metadata() or ()
    for key, value in metadata:
        if key == "grpc-status-details-bin":
            assert isinstance(value, bytes)
            return status_pb2.Status.FromString(value)
    raise AssertionError(f"no status details in {error}")


async def test_each_method_takes_only_its_roles_and_refuses_missing_or_wrong_tokens(
    stack: Stack,
) -> None:
    order_id = "00000000-0000-4000-8000-000000000000"
    anyone_wrong = (("authorization", "Bearer not-the-token"),)
    # (method, request, metadata of a role that may not call it)
    calls: list[tuple[Callable[..., Awaitable[Any]], Any, Any]] = [
        (
            stack.orders.UpdateOrderStatus,
            opb.UpdateOrderStatusRequest(order_id=order_id, status=opb.ORDER_STATUS_CANCELLED),
            stack.client,
        ),
        (
            stack.orders.CreateOrder,
            opb.CreateOrderRequest(network="ETH", amount="1"),
            stack.service,
        ),
        (
            stack.pool.AddWallets,
            wpb.AddWalletsRequest(network="ETH", addresses=[eth_address()]),
            stack.client,
        ),
        (
            stack.pool.AllocateWallet,
            wpb.AllocateWalletRequest(order_id=order_id, network="ETH"),
            stack.operator,
        ),
        (stack.pool.ReleaseWallet, wpb.ReleaseWalletRequest(order_id=order_id), stack.client),
        (stack.pool.ListWallets, wpb.ListWalletsRequest(), stack.client),
    ]
    for method, request, other_role in calls:
        for metadata, code in [
            ((), grpc.StatusCode.UNAUTHENTICATED),
            (anyone_wrong, grpc.StatusCode.PERMISSION_DENIED),
            (other_role, grpc.StatusCode.PERMISSION_DENIED),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await method(request, metadata=metadata)
            assert raised.value.code() == code, method
            for token in ("not-the-token", *stack.tokens):
                assert token not in (raised.value.details() or "")


async def test_client_mistakes_get_the_status_code_and_the_field_name(stack: Stack) -> None:
    unknown = "00000000-0000-4000-8000-000000000000"
    client, operator = stack.client, stack.operator
    cases = [
        (
            stack.orders.CreateOrder(
                opb.CreateOrderRequest(network="DOGE", amount="1"), metadata=client
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "network",
        ),
        (
            stack.orders.CreateOrder(
                opb.CreateOrderRequest(network="ETH", amount="1e5"), metadata=client
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "amount",
        ),
        (
            stack.orders.CreateOrder(
                opb.CreateOrderRequest(network="ETH", amount="-2"), metadata=client
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "amount",
        ),
        (
            stack.orders.CreateOrder(
                opb.CreateOrderRequest(network="ETH", amount="1", request_id="a\x00b"),
                metadata=client,
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "request_id",
        ),
        (
            stack.pool.DisableWallet(wpb.DisableWalletRequest(address="0x\x00"), metadata=operator),
            grpc.StatusCode.INVALID_ARGUMENT,
            "address",
        ),
        (
            stack.orders.GetOrder(opb.GetOrderRequest(order_id="42"), metadata=client),
            grpc.StatusCode.INVALID_ARGUMENT,
            "order_id",
        ),
        (
            stack.orders.GetOrder(opb.GetOrderRequest(order_id=unknown), metadata=client),
            grpc.StatusCode.NOT_FOUND,
            "order_id",
        ),
        (
            stack.orders.ListOrders(opb.ListOrdersRequest(page_token="nope"), metadata=client),
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_token",
        ),
        (
            stack.orders.UpdateOrderStatus(
                opb.UpdateOrderStatusRequest(order_id=unknown), metadata=operator
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "status",
        ),
        (
            stack.orders.UpdateOrderStatus(
                opb.UpdateOrderStatusRequest(order_id=unknown, status=opb.ORDER_STATUS_CANCELLED),
                metadata=operator,
            ),
            grpc.StatusCode.NOT_FOUND,
            "order_id",
        ),
        (
            stack.pool.AllocateWallet(
                wpb.AllocateWalletRequest(order_id="x", network="ETH"), metadata=stack.service
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "order_id",
        ),
        (
            stack.pool.AddWallets(
                wpb.AddWalletsRequest(network="ETH", addresses=["0x12"]), metadata=operator
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "addresses[0]",
        ),
        (
            stack.pool.GetWalletHistory(
                wpb.GetWalletHistoryRequest(address=eth_address()), metadata=operator
            ),
            grpc.StatusCode.NOT_FOUND,
            "address",
        ),
    ]
    call: Any
    for call, code, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == code, raised.value.details()
        assert (raised.value.details() or "").startswith(f"{field}: ")
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            [detail] = status_details(raised.value).details
            bad_request = error_details_pb2.BadRequest()
            assert detail.Unpack(bad_request)
            assert bad_request.field_violations[0].field == field


def checksummed_eth_address() -> str:
    """A new ETH address in EIP-55 mixed case, with letters in both cases."""
    while True:
        address = eip55_checksum(eth_address())
        if address[2:] not in (address[2:].lower(), address[2:].upper()):
            return address


@own_stack  # the phantom order must get this wallet: no other ETH wallet may be free
async def test_a_lookup_with_a_wrong_eip55_checksum_is_an_invalid_argument_in_every_call(
    stack: Stack,
) -> None:
    address = checksummed_eth_address()
    wrong = "0x" + address[2:].swapcase()  # every letter in the other case
    await stack.pool.AddWallets(
        wpb.AddWalletsRequest(network="ETH", addresses=[address]), metadata=stack.operator
    )
    order_id = str(uuid.uuid4())
    allocated = await stack.pool.AllocateWallet(
        wpb.AllocateWalletRequest(order_id=order_id, network="ETH"), metadata=stack.service
    )
    assert allocated.address == address.lower()
    pool, operator = stack.pool, stack.operator
    calls: dict[str, Callable[[str], Awaitable[Any]]] = {
        "DisableWallet": lambda a: pool.DisableWallet(
            wpb.DisableWalletRequest(address=a, reason="e2e"), metadata=operator
        ),
        "EnableWallet": lambda a: pool.EnableWallet(
            wpb.EnableWalletRequest(address=a), metadata=operator
        ),
        "GetWalletHistory": lambda a: pool.GetWalletHistory(
            wpb.GetWalletHistoryRequest(address=a), metadata=operator
        ),
        "ReleaseWallet": lambda a: pool.ReleaseWallet(
            wpb.ReleaseWalletRequest(order_id=order_id, address=a), metadata=stack.service
        ),
    }
    answers = {}
    for name, call in calls.items():
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(wrong)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert (raised.value.details() or "").startswith("address: "), name
        assert "EIP-55" in (raised.value.details() or ""), name
        [detail] = status_details(raised.value).details
        bad_request = error_details_pb2.BadRequest()
        assert detail.Unpack(bad_request)
        assert bad_request.field_violations[0].field == "address", name
        answers[name] = await call(address)
    assert answers["DisableWallet"].wallet.disabled
    assert not answers["EnableWallet"].wallet.disabled
    assert [a.order_id for a in answers["GetWalletHistory"].assignments] == [order_id]
    assert answers["ReleaseWallet"].released


async def test_an_illegal_transition_is_a_failed_precondition(stack: Stack) -> None:
    order = await create(stack, network="BTC")
    await finish(stack, order.id, opb.ORDER_STATUS_CANCELLED)
    again = await move(stack, order.id, opb.ORDER_STATUS_CANCELLED)
    assert again.order.status == opb.ORDER_STATUS_CANCELLED
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await move(stack, order.id, opb.ORDER_STATUS_PROCESSING)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "from CANCELLED to PROCESSING" in (raised.value.details() or "")
    [detail] = status_details(raised.value).details
    failure = error_details_pb2.PreconditionFailure()
    assert detail.Unpack(failure)
    assert failure.violations[0].subject == "status:CANCELLED"
    assert "allowed next: none" in failure.violations[0].description


def _grpcurl() -> str:
    found = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    if not Path(found).exists():
        pytest.skip("grpcurl is not installed")
    return found


async def test_grpcurl_lists_both_services_and_their_health_through_reflection(
    stack: Stack,
) -> None:
    grpcurl = _grpcurl()
    for address, service in [
        (stack.order_addr, "exchange.order.v1.OrderService"),
        (stack.pool_addr, "exchange.wallet_pool.v1.WalletPoolService"),
    ]:
        listed = subprocess.run(
            [grpcurl, "-plaintext", address, "list"], capture_output=True, text=True, check=True
        ).stdout.split()
        assert {service, "grpc.health.v1.Health"} <= set(listed)
        health = subprocess.run(
            [
                grpcurl,
                "-plaintext",
                "-d",
                f'{{"service": "{service}"}}',
                address,
                "grpc.health.v1.Health/Check",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert '"SERVING"' in health


@own_stack
async def test_sigterm_stops_both_services_cleanly(stack: OwnStack) -> None:
    assert await stack.order_process.stop(signal.SIGTERM) == 0
    assert await stack.pool_process.stop(signal.SIGTERM) == 0
    assert '"event": "stopped"' in stack.order_process.logs()


@own_stack
# The sweep and the allocation sync wait an hour: only the cooldown's own end serves the queue.
@pytest.mark.stack_env(
    WALLET_COOLDOWN_SECONDS="1", HAND_OFF_SWEEP_SECONDS="3600", ALLOCATION_SYNC_SECONDS="3600"
)
async def test_with_a_cooldown_the_released_wallet_rests_before_the_queue_gets_it(
    stack: Stack,
) -> None:
    address = eth_address()
    await add_wallets(stack, "ETH", [address])
    first = await create(stack)
    await finish(stack, first.id, opb.ORDER_STATUS_CANCELLED)
    waiting = await create(stack)
    assert (waiting.wallet_address, waiting.queue_position) == ("", 1)
    stats = await stack.pool.GetPoolStats(
        wpb.GetPoolStatsRequest(network="ETH"), metadata=stack.operator
    )
    assert (stats.networks[0].cooling, stats.networks[0].available) == (1, 0)
    listed = await stack.pool.ListWallets(
        wpb.ListWalletsRequest(state=wpb.WALLET_STATE_COOLING), metadata=stack.operator
    )
    assert [w.address for w in listed.wallets] == [address]
    cooldown_end = listed.wallets[0].cooldown_end_time.ToDatetime()

    seen = await until_shown(stack, waiting.id)
    assert seen.wallet_address == address
    # By the pool's own clock: the cooldown ends at least a second after the holding ended
    # (the release counts from when it reached the pool, which is later still), and the
    # waiting order got the wallet then, not before.
    history = await stack.pool.GetWalletHistory(
        wpb.GetWalletHistoryRequest(address=address), metadata=stack.operator
    )
    [before, after] = history.assignments
    assert (before.order_id, after.order_id) == (first.id, waiting.id)
    released = before.release_time.ToDatetime()
    assert cooldown_end - released >= timedelta(seconds=1)
    assert after.assign_time.ToDatetime() >= cooldown_end


@own_stack
# The allocation sync (polling) is slowed to once a minute: only the push can serve the
# waiting orders before the hang guard gives up.
@pytest.mark.stack_env(ALLOCATION_SYNC_SECONDS="60")
async def test_a_waiting_order_learns_its_wallet_by_push_without_polling(
    stack: OwnStack,
) -> None:
    address = eth_address()
    await add_wallets(stack, "ETH", [address])
    first = await create(stack)
    waiting = [await create(stack) for _ in range(3)]
    await watching_hand_offs(stack)
    for order, following in zip([first, *waiting[:-1]], waiting, strict=True):
        await move(stack, order.id, opb.ORDER_STATUS_CANCELLED)
        assert (await until_shown(stack, following.id)).wallet_address == address

    # A watched pool still stops at once: it ends its streams (OK) before the grace period,
    # rather than have them cancelled when the grace period is over.
    assert await stack.pool_process.stop() == 0
    assert rpc_log_codes(stack.pool_process.logs(), "WatchHandOffs") == ["OK"]


async def test_only_the_service_role_may_watch_hand_offs_and_garbage_is_refused(
    stack: Stack,
) -> None:
    for metadata, code in [
        ((), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", "Bearer not-the-token"),), grpc.StatusCode.PERMISSION_DENIED),
        (stack.operator, grpc.StatusCode.PERMISSION_DENIED),
    ]:
        call = stack.pool.WatchHandOffs(wpb.WatchHandOffsRequest(), metadata=metadata, timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call.read()
        assert raised.value.code() == code
    raw: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = stack.pool_channel.unary_stream(
        "/exchange.wallet_pool.v1.WalletPoolService/WatchHandOffs", None, None
    )
    garbage = raw(b"\xff\xff\xff", metadata=stack.service, timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await garbage.read()
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (raised.value.details() or "").startswith("request: ")


@own_stack
async def test_each_service_names_its_database_connections(stack: Stack, db: asyncpg.Pool) -> None:
    await create(stack, network="BTC")
    names = {
        r["application_name"]
        for r in await db.fetch(
            "SELECT application_name FROM pg_stat_activity WHERE datname = current_database()"
        )
    }
    assert {"order_service", "wallet_pool_service"} <= names
