"""The load generator: processes of their own (spawned, never forked from a process that uses
gRPC), each with an event loop of concurrent workers making real RPCs over one channel.

All processes start together at a time the parent sends (CLOCK_MONOTONIC is one clock for
every process on Linux): a warm-up first, then a measured window. An operation counts toward
throughput when it finishes inside the window and toward latency when it starts inside it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import grpc

from exchange.order.v1 import order_service_pb2 as order_pb
from exchange.order.v1 import order_service_pb2_grpc as order_grpc
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as pool_pb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pool_grpc

CYCLE = "cycle"  # AllocateWallet then ReleaseWallet, as the order service would
LIFECYCLE = "lifecycle"  # CreateOrder, UpdateOrderStatus PROCESSING, then COMPLETED
WORKLOADS = (CYCLE, LIFECYCLE)

_RPC_TIMEOUT = 10.0
_READY_TIMEOUT = 30.0


@dataclass(frozen=True)
class Target:
    """Where the calls go and with which tokens (operator, client, service)."""

    order_addr: str
    pool_addr: str
    tokens: tuple[str, str, str]


@dataclass(frozen=True)
class LoadJob:
    workload: str
    target: Target
    concurrency: int
    warmup_seconds: float = 0.0
    duration_seconds: float = 10.0
    network: str = "ETH"
    # Count mode: stop after this many operations in all (no warm-up, no window).
    total_ops: int | None = None


@dataclass(frozen=True)
class Window:
    """The measured window (monotonic clock) and the load processes' pids."""

    start: float
    end: float
    client_pids: tuple[int, ...]


@dataclass
class LoadResult:
    job: LoadJob
    completed: int
    total: int
    seconds: float
    latencies: dict[str, list[float]]
    errors: dict[str, int]
    processes: int

    @property
    def throughput(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


@dataclass
class _Tally:
    completed: int = 0
    total: int = 0  # every operation that succeeded, warm-up included
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: Counter[str] = field(default_factory=Counter)

    def record(self, steps: dict[str, float]) -> None:
        for name, seconds in steps.items():
            self.latencies.setdefault(name, []).append(seconds)


def _metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


class Client:
    """Stubs over one channel per address; the noop server answers both services on one."""

    def __init__(self, target: Target) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self.orders = order_grpc.OrderServiceStub(self._channel(target.order_addr))
        self.pool = pool_grpc.WalletPoolServiceStub(self._channel(target.pool_addr))
        operator, client, service = target.tokens
        self.operator = _metadata(operator)
        self.client = _metadata(client)
        self.service = _metadata(service)

    def _channel(self, address: str) -> grpc.aio.Channel:
        if address not in self._channels:
            self._channels[address] = grpc.aio.insecure_channel(address)
        return self._channels[address]

    async def ready(self) -> None:
        for channel in self._channels.values():
            await asyncio.wait_for(channel.channel_ready(), _READY_TIMEOUT)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(None)

    async def cycle(self, network: str) -> dict[str, float]:
        """Allocate a wallet to a new order and release it (a released order id never
        allocates again, so every cycle needs a fresh one)."""
        order_id = str(uuid.uuid4())
        started = time.monotonic()
        allocated = await self.pool.AllocateWallet(
            pool_pb.AllocateWalletRequest(order_id=order_id, network=network),
            metadata=self.service,
            timeout=_RPC_TIMEOUT,
        )
        between = time.monotonic()
        await self.pool.ReleaseWallet(
            pool_pb.ReleaseWalletRequest(order_id=order_id, address=allocated.address),
            metadata=self.service,
            timeout=_RPC_TIMEOUT,
        )
        done = time.monotonic()
        return {"allocate": between - started, "release": done - between}

    async def create_order(self, network: str) -> order_pb.Order:
        response = await self.orders.CreateOrder(
            order_pb.CreateOrderRequest(network=network, amount="1.5"),
            metadata=self.client,
            timeout=_RPC_TIMEOUT,
        )
        return response.order

    async def set_status(self, order_id: str, status: int) -> order_pb.UpdateOrderStatusResponse:
        response: order_pb.UpdateOrderStatusResponse = await self.orders.UpdateOrderStatus(
            order_pb.UpdateOrderStatusRequest(order_id=order_id, status=status),  # type: ignore[arg-type]
            metadata=self.operator,
            timeout=_RPC_TIMEOUT,
        )
        return response

    async def get_order(self, order_id: str) -> order_pb.Order:
        response = await self.orders.GetOrder(
            order_pb.GetOrderRequest(order_id=order_id),
            metadata=self.client,
            timeout=_RPC_TIMEOUT,
        )
        return response.order

    def watch_order(
        self, order_id: str
    ) -> grpc.aio.UnaryStreamCall[order_pb.WatchOrderRequest, order_pb.WatchOrderResponse]:
        """A WatchOrder stream as the order's customer opens it (no deadline: it stays open
        until the order is done or the caller cancels it)."""
        return self.orders.WatchOrder(
            order_pb.WatchOrderRequest(order_id=order_id), metadata=self.client
        )

    async def lifecycle(self, network: str) -> dict[str, float]:
        t0 = time.monotonic()
        order = await self.create_order(network)
        # The noop server answers with an empty order.
        order_id = order.id or str(uuid.uuid4())
        t1 = time.monotonic()
        await self.set_status(order_id, order_pb.ORDER_STATUS_PROCESSING)
        t2 = time.monotonic()
        await self.set_status(order_id, order_pb.ORDER_STATUS_COMPLETED)
        t3 = time.monotonic()
        return {"create": t1 - t0, "processing": t2 - t1, "completed": t3 - t2}


async def _run_workers(
    job: LoadJob, workers: int, budget: int | None, conn: Connection
) -> dict[str, Any]:
    client = Client(job.target)
    tally = _Tally()
    try:
        await client.ready()
        conn.send("ready")
        start: float = await asyncio.to_thread(conn.recv)
        if budget is None:
            measure_from = start + job.warmup_seconds
            measure_to = measure_from + job.duration_seconds
            stop_at = measure_to
        else:
            measure_from, measure_to = start, float("inf")
            stop_at = float("inf")
        remaining = [budget if budget is not None else -1]
        operation: Callable[[str], Awaitable[dict[str, float]]] = (
            client.cycle if job.workload == CYCLE else client.lifecycle
        )

        async def worker() -> None:
            while True:
                now = time.monotonic()
                if now < start:
                    await asyncio.sleep(start - now)
                    continue
                if now >= stop_at or remaining[0] == 0:
                    return
                if remaining[0] > 0:
                    remaining[0] -= 1
                began = time.monotonic()
                try:
                    steps = await operation(job.network)
                except grpc.aio.AioRpcError as exc:
                    tally.errors[exc.code().name] += 1
                    await asyncio.sleep(0.01)  # no tight loop against a failing server
                    continue
                finished = time.monotonic()
                tally.total += 1
                if measure_from <= began < measure_to:
                    tally.record({job.workload: finished - began, **steps})
                if measure_from <= finished < measure_to:
                    tally.completed += 1

        await asyncio.gather(*(worker() for _ in range(workers)))
        elapsed = (
            job.duration_seconds if budget is None else time.monotonic() - max(start, measure_from)
        )
    finally:
        await client.close()
    return {
        "completed": tally.completed,
        "total": tally.total,
        "seconds": elapsed,
        "latencies": tally.latencies,
        "errors": dict(tally.errors),
    }


def _load_process(job: LoadJob, workers: int, budget: int | None, conn: Connection) -> None:
    try:
        result = asyncio.run(_run_workers(job, workers, budget, conn))
    except BaseException as exc:
        conn.send({"failure": repr(exc)})
        raise
    conn.send(result)


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def run_load(
    job: LoadJob,
    processes: int,
    during: Callable[[Window], Coroutine[Any, Any, None]] | None = None,
) -> LoadResult:
    """Run `job` from `processes` processes (fewer when the concurrency is lower);
    `during` runs in this process while the window is measured (samplers)."""
    if job.workload not in WORKLOADS:
        raise ValueError(f"unknown workload {job.workload!r}")
    processes = max(1, min(processes, job.concurrency))
    workers = _split(job.concurrency, processes)
    budgets: list[int | None] = (
        list(_split(job.total_ops, processes)) if job.total_ops is not None else [None] * processes
    )
    context = multiprocessing.get_context("spawn")
    pipes = [context.Pipe() for _ in range(processes)]
    children = [
        context.Process(
            target=_load_process, args=(job, workers[i], budgets[i], pipes[i][1]), daemon=True
        )
        for i in range(processes)
    ]
    for child in children:
        child.start()
    try:
        for parent_end, _ in pipes:
            message = await receive(parent_end, _READY_TIMEOUT + 30)
            if message != "ready":
                raise RuntimeError(f"load process failed to start: {message}")
        start = time.monotonic() + 0.2
        for parent_end, _ in pipes:
            parent_end.send(start)
        window = Window(
            start=start + (job.warmup_seconds if job.total_ops is None else 0.0),
            end=start + job.warmup_seconds + job.duration_seconds,
            client_pids=tuple(child.pid or 0 for child in children),
        )
        sampler = asyncio.create_task(during(window)) if during is not None else None
        wait = job.warmup_seconds + job.duration_seconds + 120.0
        if job.total_ops is not None:
            wait = 3600.0
        results = [await receive(parent_end, wait) for parent_end, _ in pipes]
        if sampler is not None:
            await sampler
    finally:
        for child in children:
            await asyncio.to_thread(child.join, 10)
            if child.is_alive():
                child.kill()
    failures = [r["failure"] for r in results if isinstance(r, dict) and "failure" in r]
    if failures:
        raise RuntimeError(f"load process failed: {failures[0]}")
    latencies: dict[str, list[float]] = {}
    errors: Counter[str] = Counter()
    for result in results:
        for name, values in result["latencies"].items():
            latencies.setdefault(name, []).extend(values)
        errors.update(result["errors"])
    seconds = max(float(r["seconds"]) for r in results)
    return LoadResult(
        job=job,
        completed=sum(int(r["completed"]) for r in results),
        total=sum(int(r["total"]) for r in results),
        seconds=seconds,
        latencies=latencies,
        errors=dict(errors),
        processes=processes,
    )


async def receive(conn: Connection, wait_seconds: float) -> Any:
    ready = await asyncio.to_thread(conn.poll, wait_seconds)
    if not ready:
        raise TimeoutError(f"no answer from a load process in {wait_seconds:.0f} s")
    return conn.recv()
