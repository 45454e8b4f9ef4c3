"""The failover chaos's clients (`failover`): concurrent order lifecycles through both
services, each call retried while it is UNAVAILABLE, as a client would, and every attempt
recorded with its answer and its times for the checks of each failover."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from exchange.order.v1 import order_service_pb2 as opb
from tests.e2e.stack import LocalStack

WRITES = frozenset({"create", "processing", "completed", "cancelled"})
_STATUSES = {
    "processing": opb.ORDER_STATUS_PROCESSING,
    "completed": opb.ORDER_STATUS_COMPLETED,
    "cancelled": opb.ORDER_STATUS_CANCELLED,
}
CALL_SECONDS = 10


@dataclass
class Attempt:
    """One call: what it asked for and how it was answered, on the monotonic clock."""

    kind: str
    order_id: str
    started: float
    ended: float = 0.0
    code: str = ""


class Workload:
    """Concurrent order lifecycles (create, PROCESSING or not, then COMPLETED or CANCELLED),
    each call retried while it is UNAVAILABLE, as a client would; every attempt recorded."""

    def __init__(self, stack: LocalStack, seed: int, workers: int) -> None:
        self.stack = stack
        self.seed = seed
        self.workers = workers
        self.attempts: list[Attempt] = []
        # order id -> the last status acknowledged for it
        self.acknowledged: dict[uuid.UUID, str] = {}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._lifecycles = 0

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.workers)]

    async def stop(self) -> None:
        """No new lifecycles; those under way finish (their retries are bounded)."""
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def call(
        self, kind: str, order_id: str, call: Callable[[], Awaitable[Any]]
    ) -> tuple[Attempt, Any]:
        """One attempt, recorded; the response is None unless it was OK."""
        attempt = Attempt(kind, order_id, time.monotonic())
        self.attempts.append(attempt)
        try:
            response = await call()
        except grpc.aio.AioRpcError as exc:
            attempt.ended, attempt.code = time.monotonic(), exc.code().name
            return attempt, None
        attempt.ended, attempt.code = time.monotonic(), "OK"
        return attempt, response

    async def _retry(
        self, kind: str, order_id: str, call: Callable[[], Awaitable[Any]]
    ) -> tuple[Attempt, Any]:
        deadline = time.monotonic() + 60
        delay = 0.05
        while True:
            attempt, response = await self.call(kind, order_id, call)
            if attempt.code != "UNAVAILABLE" or time.monotonic() > deadline:
                return attempt, response
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _lifecycle(self, index: int) -> None:
        rng = random.Random(f"{self.seed}:order:{index}")
        request = opb.CreateOrderRequest(
            network="ETH", amount=f"{rng.randint(1, 999)}.{rng.randint(0, 99):02d}",
            request_id=f"failover-{self.seed}-{index}",
        )  # fmt: skip
        stack = self.stack
        attempt, created = await self._retry(
            "create",
            "",
            lambda: stack.orders.CreateOrder(request, metadata=stack.client, timeout=CALL_SECONDS),
        )
        if created is None:
            return
        order_id = attempt.order_id = created.order.id
        self.acknowledged[uuid.UUID(order_id)] = "PENDING"
        path = ["processing", "completed"] if rng.random() < 0.6 else ["cancelled"]
        if path == ["cancelled"] and rng.random() < 0.5:
            path = ["processing", "cancelled"]
        for kind in path:
            update = opb.UpdateOrderStatusRequest(order_id=order_id, status=_STATUSES[kind])

            def change(update: opb.UpdateOrderStatusRequest = update) -> Awaitable[Any]:
                return stack.orders.UpdateOrderStatus(
                    update, metadata=stack.operator, timeout=CALL_SECONDS
                )

            _, changed = await self._retry(kind, order_id, change)
            if changed is None:
                return
            self.acknowledged[uuid.UUID(order_id)] = kind.upper()

    async def _worker(self) -> None:
        while not self._stop.is_set():
            self._lifecycles += 1
            await self._lifecycle(self._lifecycles)
