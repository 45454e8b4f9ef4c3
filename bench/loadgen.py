"""The load generator (bench/README.md): spawned processes (never forked from a process that
uses gRPC) of concurrent workers over one channel, started together at a time the parent
sends (CLOCK_MONOTONIC is one clock for every process on Linux)."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import grpc

from exchange.order.v1 import order_service_pb2 as order_pb
from exchange.order.v1 import order_service_pb2_grpc as order_grpc
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as pool_pb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pool_grpc
from tests.e2e.stack import bearer

CYCLE = "cycle"  # AllocateWallet then ReleaseWallet, as the order service would
LIFECYCLE = "lifecycle"  # CreateOrder, UpdateOrderStatus PROCESSING, then COMPLETED

_RPC_TIMEOUT = 10.0
_READY_TIMEOUT = 30.0


@dataclass(frozen=True)
class Target:
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
    start: float
    end: float
    client_pids: tuple[int, ...]


@dataclass
class LoadResult:
    job: LoadJob
    completed: int
    total: int  # every operation that succeeded, warm-up included
    seconds: float
    latencies: dict[str, list[float]]
    errors: dict[str, int]
    processes: int

    @property
    def throughput(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0


class Client:
    """Stubs over one channel per address; the noop server answers both services on one."""

    def __init__(self, target: Target) -> None:
        self._channels = {
            a: grpc.aio.insecure_channel(a) for a in (target.order_addr, target.pool_addr)
        }
        self.orders = order_grpc.OrderServiceStub(self._channels[target.order_addr])
        self.pool = pool_grpc.WalletPoolServiceStub(self._channels[target.pool_addr])
        self.operator, self.client, self.service = (bearer(t) for t in target.tokens)

    async def ready(self) -> None:
        for channel in self._channels.values():
            await asyncio.wait_for(channel.channel_ready(), _READY_TIMEOUT)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close(None)

    async def cycle(self, network: str) -> dict[str, float]:
        """A fresh order id each time: a released order id never allocates again."""
        order_id, started = str(uuid.uuid4()), time.monotonic()
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
        return {"allocate": between - started, "release": time.monotonic() - between}

    async def create_order(self, network: str) -> order_pb.Order:
        request = order_pb.CreateOrderRequest(network=network, amount="1.5")
        response = await self.orders.CreateOrder(
            request, metadata=self.client, timeout=_RPC_TIMEOUT
        )
        return response.order

    async def set_status(self, order_id: str, status: int) -> order_pb.UpdateOrderStatusResponse:
        request = order_pb.UpdateOrderStatusRequest(order_id=order_id, status=status)  # type: ignore[arg-type]
        response: order_pb.UpdateOrderStatusResponse = await self.orders.UpdateOrderStatus(
            request, metadata=self.operator, timeout=_RPC_TIMEOUT
        )
        return response

    async def get_order(self, order_id: str) -> order_pb.Order:
        request = order_pb.GetOrderRequest(order_id=order_id)
        response = await self.orders.GetOrder(request, metadata=self.client, timeout=_RPC_TIMEOUT)
        return response.order

    def watch_order(
        self, order_id: str
    ) -> grpc.aio.UnaryStreamCall[order_pb.WatchOrderRequest, order_pb.WatchOrderResponse]:
        """No deadline: the stream stays open until the order is done or cancelled."""
        request = order_pb.WatchOrderRequest(order_id=order_id)
        return self.orders.WatchOrder(request, metadata=self.client)

    async def lifecycle(self, network: str) -> dict[str, float]:
        t0 = time.monotonic()
        order = await self.create_order(network)
        order_id = order.id or str(uuid.uuid4())  # the noop server answers with an empty order
        t1 = time.monotonic()
        await self.set_status(order_id, order_pb.ORDER_STATUS_PROCESSING)
        t2 = time.monotonic()
        await self.set_status(order_id, order_pb.ORDER_STATUS_COMPLETED)
        return {"create": t1 - t0, "processing": t2 - t1, "completed": time.monotonic() - t2}


async def _run_workers(
    job: LoadJob, workers: int, budget: int | None, conn: Connection
) -> dict[str, Any]:
    client = Client(job.target)
    latencies: dict[str, list[float]] = {}
    errors: Counter[str] = Counter()
    counts = {"completed": 0, "total": 0, "left": -1 if budget is None else budget}
    try:
        await client.ready()
        conn.send("ready")
        start: float = await asyncio.to_thread(conn.recv)
        measure_from, measure_to = start, float("inf")
        if budget is None:
            measure_from = start + job.warmup_seconds
            measure_to = measure_from + job.duration_seconds
        operation = client.cycle if job.workload == CYCLE else client.lifecycle
        await asyncio.sleep(max(0.0, start - time.monotonic()))

        async def worker() -> None:
            while time.monotonic() < measure_to and counts["left"] != 0:
                counts["left"] -= 1 if counts["left"] > 0 else 0
                began = time.monotonic()
                try:
                    steps = await operation(job.network)
                except grpc.aio.AioRpcError as exc:
                    errors[exc.code().name] += 1
                    await asyncio.sleep(0.01)  # no tight loop against a failing server
                    continue
                finished = time.monotonic()
                counts["total"] += 1
                if measure_from <= began < measure_to:
                    for name, seconds in {job.workload: finished - began, **steps}.items():
                        latencies.setdefault(name, []).append(seconds)
                counts["completed"] += measure_from <= finished < measure_to

        await asyncio.gather(*(worker() for _ in range(workers)))
        elapsed = job.duration_seconds if budget is None else time.monotonic() - start
    finally:
        await client.close()
    return {**counts, "seconds": elapsed, "latencies": latencies, "errors": dict(errors)}


def child(function: Callable[..., Coroutine[Any, Any, Any]], conn: Connection, *args: Any) -> None:
    try:
        result = asyncio.run(function(*args, conn))
    except BaseException as exc:
        conn.send({"failure": repr(exc)})
        raise
    if result is not None:
        conn.send(result)


def spawn(function: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> tuple[Any, Connection]:
    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe()
    process = context.Process(target=child, args=(function, child_end, *args), daemon=True)
    process.start()
    return process, parent_end


async def join(process: Any) -> None:
    await asyncio.to_thread(process.join, 10)
    if process.is_alive():
        process.kill()


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def run_load(
    job: LoadJob,
    processes: int,
    during: Callable[[Window], Coroutine[Any, Any, None]] | None = None,
) -> LoadResult:
    """`during` runs in this process while the window is measured (samplers)."""
    processes = max(1, min(processes, job.concurrency))
    workers = _split(job.concurrency, processes)
    budgets: list[int | None] = [None] * processes
    if job.total_ops is not None:
        budgets = list(_split(job.total_ops, processes))
    children = [spawn(_run_workers, job, workers[i], budgets[i]) for i in range(processes)]
    try:
        for _, pipe in children:
            message = await receive(pipe, _READY_TIMEOUT + 30)
            if message != "ready":
                raise RuntimeError(f"load process failed to start: {message}")
        start = time.monotonic() + 0.2
        for _, pipe in children:
            pipe.send(start)
        window = Window(
            start=start + (job.warmup_seconds if job.total_ops is None else 0.0),
            end=start + job.warmup_seconds + job.duration_seconds,
            client_pids=tuple(process.pid or 0 for process, _ in children),
        )
        sampler = asyncio.create_task(during(window)) if during is not None else None
        wait = (
            job.warmup_seconds + job.duration_seconds + 120.0 if job.total_ops is None else 3600.0
        )
        results = [await receive(pipe, wait) for _, pipe in children]
        if sampler is not None:
            await sampler
    finally:
        for process, _ in children:
            await join(process)
    latencies: dict[str, list[float]] = {}
    errors: Counter[str] = Counter()
    for result in results:
        for name, values in result["latencies"].items():
            latencies.setdefault(name, []).extend(values)
        errors.update(result["errors"])
    return LoadResult(
        job=job,
        completed=sum(int(r["completed"]) for r in results),
        total=sum(int(r["total"]) for r in results),
        seconds=max(float(r["seconds"]) for r in results),
        latencies=latencies,
        errors=dict(errors),
        processes=processes,
    )


async def receive(conn: Connection, wait_seconds: float) -> Any:
    if not await asyncio.to_thread(conn.poll, wait_seconds):
        raise TimeoutError(f"no answer from a process of the run in {wait_seconds:.0f} s")
    answer = conn.recv()
    if isinstance(answer, dict) and "failure" in answer:
        raise RuntimeError(f"a process of the run failed: {answer['failure']}")
    return answer
