"""The clients of both chaos runs: concurrent order lifecycles over gRPC, each call retried as
a client would while a service or the database is down, and (the chaos run's) an operator
adding wallets now and then. Every attempt is counted and kept with its times; what was
acknowledged is remembered for the checks at the end."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from exchange.order.v1 import order_service_pb2 as opb
from exchange.order.v1 import order_service_pb2_grpc as order_grpc
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pool_grpc
from shared.channels import RETRYABLE_CODES, service_config
from tests.chaos.feed import RANK, status_name
from tests.chaos.report import TRANSIENT, ChaosReport
from tests.e2e.stack import CLIENT_TOKEN, OPERATOR_TOKEN, bearer

_ORDERS = opb.DESCRIPTOR.services_by_name["OrderService"].full_name
_POOL = wpb.DESCRIPTOR.services_by_name["WalletPoolService"].full_name
# The channels README asks clients for: what is safe to repeat is retried on UNAVAILABLE and
# CANCELLED; CreateOrder is sent once (repeated below only when keyed). Reconnect fast once a
# service answers again (gRPC's default backoff grows to two minutes).
CLIENT_OPTIONS = [
    ("grpc.service_config", service_config([_ORDERS, _POOL], [(_ORDERS, "CreateOrder")])),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]
WRITES = frozenset({"create", "update_processing", "update_completed", "update_cancelled"})
_CLIENT, _OPERATOR = bearer(CLIENT_TOKEN), bearer(OPERATOR_TOKEN)


async def health(stub: health_pb2_grpc.HealthStub) -> int:
    """The service's gRPC health status; -1 when it does not answer."""
    with contextlib.suppress(grpc.aio.AioRpcError):
        return int((await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)).status)
    return -1


def eth_address(rng: random.Random) -> str:
    return "0x" + rng.randbytes(20).hex()


@dataclass
class Attempt:
    kind: str
    subject: str  # the order's id (a create's once answered), or what the call was about
    started: float  # monotonic clock
    ended: float = 0.0
    code: str = ""


class Load:
    """Order lifecycles (`worker`) and wallet deliveries (`operator`) until `stop` is set.
    `failover`: the failover run's lifecycles and retries; no answer judged as it comes."""

    def __init__(
        self,
        orders: order_grpc.OrderServiceAsyncStub,
        pool: pool_grpc.WalletPoolServiceAsyncStub,
        report: ChaosReport,
        seed: int,
        failover: bool = False,
    ) -> None:
        self.orders = orders
        self.pool = pool
        self.report = report
        self.seed = seed
        self.failover = failover
        self.attempts: list[Attempt] = []
        # order id -> the last status acknowledged for it (invariant 5)
        self.acknowledged: dict[uuid.UUID, str] = {}
        # (order id, status) for every creation (PENDING) and status update acknowledged
        self.acknowledged_statuses: set[tuple[uuid.UUID, str]] = set()
        self.stop = asyncio.Event()
        self.timeout = 10 if failover else 5
        # Codes retried, for how long, and the first and longest pause between tries.
        self._retry = (
            (frozenset({"UNAVAILABLE"}), 60, 0.05, 0.5)
            if failover
            else (frozenset({*(c.name for c in TRANSIENT), *RETRYABLE_CODES}), 30, 0.1, 1.0)
        )
        self._wallet_rng = random.Random(f"{seed}:wallets")
        self._lifecycles = 0

    async def call(
        self,
        kind: str,
        call: Callable[[], Awaitable[Any]],
        subject: str = "",
        vetted: frozenset[str] = frozenset(),
    ) -> tuple[Attempt, Any]:
        """One attempt, kept; outside the failover run, answers neither transient nor `vetted`
        are violations."""
        attempt = Attempt(kind, subject, time.monotonic())
        self.attempts.append(attempt)
        response = None
        try:
            response = await call()
            attempt.code = "OK"
        except grpc.aio.AioRpcError as exc:
            attempt.code = exc.code().name
            if not self.failover and exc.code() not in TRANSIENT and attempt.code not in vetted:
                self.report.violation(f"{kind} {subject} answered {attempt.code}: {exc.details()}")
        attempt.ended = time.monotonic()
        self.report.count(kind, attempt.code)
        return attempt, response

    async def _retried(
        self,
        kind: str,
        call: Callable[[], Awaitable[Any]],
        subject: str,
        rng: random.Random,
        vetted: frozenset[str] = frozenset(),
    ) -> tuple[Attempt, Any]:
        codes, seconds, delay, longest = self._retry
        deadline = time.monotonic() + seconds
        while True:
            attempt, response = await self.call(kind, call, subject, vetted)
            if attempt.code not in codes or time.monotonic() > deadline:
                return attempt, response
            await asyncio.sleep(delay * rng.uniform(0.5, 1.5))
            delay = min(delay * 2, longest)

    async def add_wallets(self, count: int) -> None:
        addresses = [eth_address(self._wallet_rng) for _ in range(count)]
        request = wpb.AddWalletsRequest(network="ETH", addresses=addresses)
        await self._retried(
            "add_wallets",
            lambda: self.pool.AddWallets(request, metadata=_OPERATOR, timeout=self.timeout),
            f"{count} wallets",
            self._wallet_rng,
        )

    async def _update(
        self, order_id: str, status: opb.OrderStatus.ValueType, rng: random.Random, reason: str = ""
    ) -> bool:
        name = status_name(status)
        request = opb.UpdateOrderStatusRequest(order_id=order_id, status=status, reason=reason)
        # A PENDING order may have expired meanwhile: then FAILED_PRECONDITION is right.
        pending = self.acknowledged[uuid.UUID(order_id)] == "PENDING"
        attempt, response = await self._retried(
            f"update_{name.lower()}",
            lambda: self.orders.UpdateOrderStatus(
                request, metadata=_OPERATOR, timeout=self.timeout
            ),
            order_id,
            rng,
            frozenset({"FAILED_PRECONDITION"}) if pending else frozenset(),
        )
        if attempt.code == "FAILED_PRECONDITION" and not self.failover:
            await self._expect_expired(order_id, name, rng)
        if response is None:
            return False
        if response.order.status != status:
            self.report.violation(
                f"update of {order_id} to {name} answered {response.order.status}"
            )
        self._acknowledge(order_id, name)
        return True

    def _acknowledge(self, order_id: str, status: str) -> None:
        self.acknowledged[uuid.UUID(order_id)] = status
        self.acknowledged_statuses.add((uuid.UUID(order_id), status))

    async def _expect_expired(self, order_id: str, wanted: str, rng: random.Random) -> None:
        """A PENDING order refused a move: only the expiry may have come first."""
        _, response = await self._retried(
            "get_history",
            lambda: self.orders.GetOrderHistory(
                opb.GetOrderHistoryRequest(order_id=order_id), metadata=_CLIENT, timeout=5
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
            self.report.count("expired_first", "FAILED_PRECONDITION")

    async def _create(self, index: int, rng: random.Random) -> str | None:
        """Outside the failover run some creates carry no request_id (tried once), and some
        are repeated on purpose."""
        keyed = self.failover or rng.random() < 0.7
        request_id = f"{'failover' if self.failover else 'chaos'}-{self.seed}-{index}"
        request = opb.CreateOrderRequest(
            network="ETH", amount=f"{rng.randint(1, 999 if self.failover else 9999)}."
            f"{rng.randint(0, 99):02d}", request_id=request_id if keyed else "",
        )  # fmt: skip

        def create() -> Awaitable[opb.CreateOrderResponse]:
            return self.orders.CreateOrder(request, metadata=_CLIENT, timeout=self.timeout)

        # The channel sends CreateOrder once: a stopping replica may answer CANCELLED for a
        # create it never started (shared/channels.py), which only a keyed one may repeat.
        stopped = frozenset({"CANCELLED"})
        if keyed:
            attempt, created = await self._retried("create", create, request_id, rng, stopped)
        else:
            attempt, created = await self.call("create", create, vetted=stopped)
        if created is None:
            return None
        order_id: str = created.order.id
        attempt.subject = order_id
        self.report.orders += 1
        self._acknowledge(order_id, "PENDING")
        if keyed and not self.failover and rng.random() < 0.3:
            _, again = await self._retried("create_again", create, request_id, rng, stopped)
            if again is not None and again.order.id != order_id:
                self.report.violation(
                    f"request_id {request_id} gave order {order_id}, then {again.order.id}"
                )
        return order_id

    async def _lifecycle(self, index: int) -> None:
        """create -> (PROCESSING ->) COMPLETED or CANCELLED, or left live, then read back; the
        failover run's with no pauses, live orders or reads."""
        rng = random.Random(f"{self.seed}:order:{index}")
        order_id = await self._create(index, rng)
        if order_id is None:
            return
        fate = (
            0.0 if self.failover and rng.random() < 0.6 else 0.5 if self.failover else rng.random()
        )
        await self._pause(rng, 1.5)
        if fate < 0.45:
            if await self._update(order_id, opb.ORDER_STATUS_PROCESSING, rng):
                await self._pause(rng, 1.0)
                await self._update(order_id, opb.ORDER_STATUS_COMPLETED, rng, "paid out")
        elif fate < 0.85:
            if rng.random() < 0.5:
                processed = await self._update(order_id, opb.ORDER_STATUS_PROCESSING, rng)
                if self.failover and not processed:
                    return
                await self._pause(rng, 0.5)
            await self._update(order_id, opb.ORDER_STATUS_CANCELLED, rng, "changed mind")
        elif fate < 0.92:
            await self._update(order_id, opb.ORDER_STATUS_PROCESSING, rng)
        if not self.failover:
            await self._read_back(order_id, rng)

    async def _pause(self, rng: random.Random, most: float) -> None:
        if not self.failover:
            await asyncio.sleep(rng.uniform(0, most))

    async def _read_back(self, order_id: str, rng: random.Random) -> None:
        """An acknowledged status is never undone: a read shows it or a later one."""
        acknowledged = self.acknowledged[uuid.UUID(order_id)]
        _, response = await self._retried(
            "get",
            lambda: self.orders.GetOrder(
                opb.GetOrderRequest(order_id=order_id), metadata=_CLIENT, timeout=5
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
        while not self.stop.is_set():
            await asyncio.sleep(self._wallet_rng.uniform(2, 5))
            await self.add_wallets(self._wallet_rng.randint(1, 4))
