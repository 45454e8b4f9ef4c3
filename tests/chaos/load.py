"""The clients' side of the chaos run: concurrent order lifecycles over gRPC, retried as a
client would while services or the database are down, and an operator adding wallets now and
then. It remembers what the services acknowledged, for the checks at the end."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from exchange.order.v1 import order_service_pb2 as opb
from exchange.order.v1 import order_service_pb2_grpc as order_grpc
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pool_grpc
from tests.chaos.feed import RANK, status_name
from tests.chaos.report import TRANSIENT, ChaosReport
from tests.e2e.stack import CLIENT_TOKEN, OPERATOR_TOKEN, bearer

# Reconnect fast once a service answers again (gRPC's default backoff grows to two minutes).
CLIENT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


async def health(stub: health_pb2_grpc.HealthStub) -> int:
    """The service's gRPC health status; -1 when it does not answer."""
    with contextlib.suppress(grpc.aio.AioRpcError):
        return int((await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)).status)
    return -1


def eth_address(rng: random.Random) -> str:
    return "0x" + rng.randbytes(20).hex()


class Load:
    """Order lifecycles (`worker`, as many as run at once) and wallet deliveries
    (`operator`), until `stop` is set. Every answer is counted in the report; answers that
    are wrong whatever the chaos did are violations."""

    def __init__(
        self,
        orders: order_grpc.OrderServiceAsyncStub,
        pool: pool_grpc.WalletPoolServiceAsyncStub,
        report: ChaosReport,
        seed: int,
    ) -> None:
        self.orders = orders
        self.pool = pool
        self.report = report
        self.seed = seed
        # order id -> the last status acknowledged for it (invariant 5)
        self.acknowledged: dict[uuid.UUID, str] = {}
        # (order id, status) for every creation (PENDING) and status update acknowledged
        self.acknowledged_statuses: set[tuple[uuid.UUID, str]] = set()
        self.stop = asyncio.Event()
        self._wallet_rng = random.Random(f"{seed}:wallets")
        self._lifecycles = 0

    async def _call(
        self,
        kind: str,
        call: Callable[[], Awaitable[Any]],
        subject: str = "",
        vetted: frozenset[grpc.StatusCode] = frozenset(),
    ) -> tuple[grpc.StatusCode, Any]:
        """One attempt; every answer is counted. Answers neither transient nor `vetted` (by
        the caller) are violations."""
        try:
            response = await call()
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            self.report.count(kind, code)
            if code not in TRANSIENT and code not in vetted:
                self.report.violation(f"{kind} {subject} answered {code.name}: {exc.details()}")
            return code, None
        self.report.count(kind, grpc.StatusCode.OK)
        return grpc.StatusCode.OK, response

    async def _retry(
        self,
        kind: str,
        call: Callable[[], Awaitable[Any]],
        subject: str,
        rng: random.Random,
        vetted: frozenset[grpc.StatusCode] = frozenset(),
    ) -> tuple[grpc.StatusCode, Any]:
        """Retry transient failures for a while, as a client would; the last answer."""
        deadline = time.monotonic() + 30
        delay = 0.1
        while True:
            code, response = await self._call(kind, call, subject, vetted)
            if code not in TRANSIENT or time.monotonic() > deadline:
                return code, response
            await asyncio.sleep(delay * rng.uniform(0.5, 1.5))
            delay = min(delay * 2, 1.0)

    async def add_wallets(self, count: int) -> None:
        addresses = [eth_address(self._wallet_rng) for _ in range(count)]
        request = wpb.AddWalletsRequest(network="ETH", addresses=addresses)
        await self._retry(
            "add_wallets",
            lambda: self.pool.AddWallets(request, metadata=bearer(OPERATOR_TOKEN), timeout=5),
            f"{count} wallets",
            self._wallet_rng,
        )

    async def _update(
        self,
        order_id: str,
        status: opb.OrderStatus.ValueType,
        rng: random.Random,
        reason: str = "",
    ) -> bool:
        """Move the order on (retrying); True once acknowledged."""
        name = status_name(status)
        request = opb.UpdateOrderStatusRequest(order_id=order_id, status=status, reason=reason)
        # A PENDING order may have expired meanwhile: then FAILED_PRECONDITION is right.
        pending = self.acknowledged[uuid.UUID(order_id)] == "PENDING"
        code, response = await self._retry(
            f"update_{name.lower()}",
            lambda: self.orders.UpdateOrderStatus(
                request, metadata=bearer(OPERATOR_TOKEN), timeout=5
            ),
            order_id,
            rng,
            frozenset({grpc.StatusCode.FAILED_PRECONDITION}) if pending else frozenset(),
        )
        if code is grpc.StatusCode.FAILED_PRECONDITION:
            await self._expect_expired(order_id, name, rng)
            return False
        if response is None:
            return False
        if response.order.status != status:
            self.report.violation(
                f"update of {order_id} to {name} answered {response.order.status}"
            )
        self.acknowledged[uuid.UUID(order_id)] = name
        self.acknowledged_statuses.add((uuid.UUID(order_id), name))
        return True

    async def _expect_expired(self, order_id: str, wanted: str, rng: random.Random) -> None:
        """A PENDING order refused a move: only the expiry may have come first."""
        _, response = await self._retry(
            "get_history",
            lambda: self.orders.GetOrderHistory(
                opb.GetOrderHistoryRequest(order_id=order_id),
                metadata=bearer(CLIENT_TOKEN),
                timeout=5,
            ),
            order_id,
            rng,
        )
        if response is None:
            return
        changes = [(status_name(c.to_status), c.actor, c.reason) for c in response.changes]
        if ("CANCELLED", "system", "expired") not in changes:
            self.report.violation(f"{order_id} refused {wanted} but did not expire: {changes}")
        else:
            self.report.count("expired_first", grpc.StatusCode.FAILED_PRECONDITION)

    # -- the workload -----------------------------------------------------------------------

    async def _lifecycle(self, index: int) -> None:
        """create -> (PROCESSING ->) COMPLETED or CANCELLED, or left live (PROCESSING, or
        PENDING until it expires); some creates carry a request_id and are retried (and
        repeated on purpose), the others are tried once."""
        rng = random.Random(f"{self.seed}:order:{index}")
        request_id = f"chaos-{self.seed}-{index}" if rng.random() < 0.7 else ""
        request = opb.CreateOrderRequest(
            network="ETH", amount=f"{rng.randint(1, 9999)}.{rng.randint(0, 99):02d}",
            request_id=request_id,
        )  # fmt: skip

        def create() -> Awaitable[opb.CreateOrderResponse]:
            return self.orders.CreateOrder(request, metadata=bearer(CLIENT_TOKEN), timeout=5)

        if request_id:
            _, created = await self._retry("create", create, request_id, rng)
        else:
            _, created = await self._call("create", create)
        if created is None:
            return
        order_id: str = created.order.id
        self.report.orders += 1
        self.acknowledged.setdefault(uuid.UUID(order_id), "PENDING")
        self.acknowledged_statuses.add((uuid.UUID(order_id), "PENDING"))
        if request_id and rng.random() < 0.3:
            _, again = await self._retry("create_again", create, request_id, rng)
            if again is not None and again.order.id != order_id:
                self.report.violation(
                    f"request_id {request_id} gave order {order_id}, then {again.order.id}"
                )
        fate = rng.random()
        await asyncio.sleep(rng.uniform(0, 1.5))
        if fate < 0.45:
            if await self._update(order_id, opb.ORDER_STATUS_PROCESSING, rng):
                await asyncio.sleep(rng.uniform(0, 1.0))
                await self._update(order_id, opb.ORDER_STATUS_COMPLETED, rng, "paid out")
        elif fate < 0.85:
            if rng.random() < 0.5:
                await self._update(order_id, opb.ORDER_STATUS_PROCESSING, rng)
                await asyncio.sleep(rng.uniform(0, 0.5))
            await self._update(order_id, opb.ORDER_STATUS_CANCELLED, rng, "changed mind")
        elif fate < 0.92:
            await self._update(order_id, opb.ORDER_STATUS_PROCESSING, rng)
        await self._read_back(order_id, rng)

    async def _read_back(self, order_id: str, rng: random.Random) -> None:
        """An acknowledged status is never undone: a read shows it or a later one."""
        acknowledged = self.acknowledged[uuid.UUID(order_id)]
        _, response = await self._retry(
            "get",
            lambda: self.orders.GetOrder(
                opb.GetOrderRequest(order_id=order_id), metadata=bearer(CLIENT_TOKEN), timeout=5
            ),
            order_id,
            rng,
        )
        if response is None:
            return
        seen = status_name(response.order.status)
        if RANK.get(seen, -1) < RANK[acknowledged] or (
            RANK[acknowledged] == 2 and seen != acknowledged
        ):
            self.report.violation(f"order {order_id} acknowledged {acknowledged}, read back {seen}")

    async def worker(self) -> None:
        while not self.stop.is_set():
            self._lifecycles += 1
            await self._lifecycle(self._lifecycles)

    async def operator(self) -> None:
        """Now and then more wallets arrive, which serves waiting orders."""
        while not self.stop.is_set():
            await asyncio.sleep(self._wallet_rng.uniform(2, 5))
            await self.add_wallets(self._wallet_rng.randint(1, 4))
