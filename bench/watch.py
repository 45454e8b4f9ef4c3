"""7: what idle watchers cost. Each service's resident memory before and after 1,000
WatchOrder streams are opened, and the lifecycle's throughput without them and then with
them open, on one stack. The streams are held by a process of their own (spawned, like the
load), on orders of their own that nothing changes while they are watched."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import grpc

from bench.harness import Run, errors_of, load, summary
from bench.loadgen import LIFECYCLE, Client, LoadJob, LoadResult, Target, receive
from bench.report import Row
from bench.stack import add_wallets, pids_of, start_services, target_of
from bench.stats import Latency
from bench.system import memory_mb
from exchange.order.v1 import order_service_pb2 as order_pb
from exchange.order.v1 import order_service_pb2_grpc as order_grpc

WATCHERS = "7 idle watchers"
_ANSWER_SECONDS = 120.0
# Each service's growth allowed with the streams open.
_MEMORY_TARGET_MB = 50.0
# The lifecycle's throughput with the streams open, against without.
_THROUGHPUT_TARGET = 0.90

Stream = grpc.aio.UnaryStreamCall[order_pb.WatchOrderRequest, order_pb.WatchOrderResponse]


@dataclass(frozen=True)
class WatcherJob:
    target: Target
    watchers: int  # streams, each on an order of its own
    connections: int  # the streams are spread over this many HTTP/2 connections
    network: str = "ETH"


# --- The watchers' process: creates the orders, then opens and closes the streams on command --


async def _hold_watchers(job: WatcherJob, conn: Connection) -> None:
    client = Client(job.target)
    # A subchannel pool per channel: each channel is a connection of its own.
    channels = [
        grpc.aio.insecure_channel(
            job.target.order_addr, options=[("grpc.use_local_subchannel_pool", 1)]
        )
        for _ in range(job.connections)
    ]
    stubs = [order_grpc.OrderServiceStub(channel) for channel in channels]
    streams: list[Stream] = []
    readers: list[asyncio.Task[None]] = []
    messages = [0]  # received after each stream's first, while idle

    async def read_on(stream: Stream) -> None:
        while isinstance(await stream.read(), order_pb.WatchOrderResponse):
            messages[0] += 1

    try:
        await client.ready()
        started = time.monotonic()
        slots = asyncio.Semaphore(32)

        async def create() -> str:
            async with slots:
                return (await client.create_order(job.network)).id

        orders = await asyncio.gather(*(create() for _ in range(job.watchers)))
        conn.send({"created_seconds": time.monotonic() - started})
        while (command := await asyncio.to_thread(conn.recv)) != "stop":
            if command == "open":
                started = time.monotonic()
                streams = [
                    stubs[i % len(stubs)].WatchOrder(
                        order_pb.WatchOrderRequest(order_id=order_id), metadata=client.client
                    )
                    for i, order_id in enumerate(orders)
                ]
                # Open once each has shown its order as it is now.
                first = await asyncio.gather(*(stream.read() for stream in streams))
                opened = sum(isinstance(m, order_pb.WatchOrderResponse) for m in first)
                readers = [asyncio.create_task(read_on(stream)) for stream in streams]
                conn.send({"opened": opened, "seconds": time.monotonic() - started})
            elif command == "close":
                ended = sum(stream.done() for stream in streams)
                for stream in streams:
                    stream.cancel()
                for reader in readers:
                    reader.cancel()
                await asyncio.gather(*readers, return_exceptions=True)
                conn.send({"ended_while_open": ended, "messages_while_open": messages[0]})
                streams, readers, messages[0] = [], [], 0
    finally:
        for channel in channels:
            await channel.close(None)
        await client.close()


def _watchers_process(job: WatcherJob, conn: Connection) -> None:
    try:
        asyncio.run(_hold_watchers(job, conn))
    except BaseException as exc:
        conn.send({"failure": repr(exc)})
        raise


async def _answer(conn: Connection) -> dict[str, Any]:
    answer: dict[str, Any] = await receive(conn, _ANSWER_SECONDS)
    if "failure" in answer:
        raise RuntimeError(f"the watchers' process failed: {answer['failure']}")
    return answer


async def _command(conn: Connection, command: str) -> dict[str, Any]:
    conn.send(command)
    return await _answer(conn)


# --- The scenario ------------------------------------------------------------------------------


async def watchers(run: Run) -> None:
    settings = run.settings
    count, connections = settings.watchers, settings.watch_connections
    concurrency = settings.lifecycle_concurrency
    print(
        f"{WATCHERS}: {count:,} WatchOrder streams over {connections:,} connections; "
        f"memory, then lifecycles at concurrency {concurrency} without and with them",
        flush=True,
    )
    database = await run.server.database()
    await add_wallets(database, "ETH", 1, settings.claim_pool_size)
    stack = await start_services(database, run.work_dir / "watch")
    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe()
    holder = context.Process(
        target=_watchers_process,
        args=(WatcherJob(target_of(stack), count, connections), child_end),
        daemon=True,
    )
    try:
        await asyncio.sleep(1.0)  # background loops' first round
        pids = {name: pid[0] for name, pid in pids_of(stack).items()}
        holder.start()
        created = await _answer(parent_end)
        print(f"  {count:,} orders to watch created in {created['created_seconds']:.1f} s")
        await asyncio.sleep(1.0)
        before = {name: memory_mb(pid) for name, pid in pids.items()}
        opened = await _command(parent_end, "open")
        await asyncio.sleep(2.0)
        after = {name: memory_mb(pid) for name, pid in pids.items()}
        first_closed = await _command(parent_end, "close")
        after_close = {name: memory_mb(pid) for name, pid in pids.items()}

        job = LoadJob(
            LIFECYCLE,
            target_of(stack),
            concurrency,
            settings.warmup_seconds,
            settings.duration_seconds,
            "ETH",
        )
        groups = {**pids_of(stack), "watchers": [holder.pid or 0]}
        alone, alone_samples = await load(run, job, groups, None)
        reopened = await _command(parent_end, "open")
        watched, watched_samples = await load(run, job, groups, None)
        with_load = {name: memory_mb(pid) for name, pid in pids.items()}
        closed = await _command(parent_end, "close")
        parent_end.send("stop")
    finally:
        if holder.pid is not None:
            await asyncio.to_thread(holder.join, 10)
            if holder.is_alive():
                holder.kill()
        await stack.close()
        await run.server.drop(database)

    streams_note = _streams_note(count, opened, first_closed, reopened, closed)
    for name in pids:
        grown = after[name]["VmRSS"] - before[name]["VmRSS"]
        run.add(
            Row(
                scenario=f"{WATCHERS}: {name} RSS, {count:,} WatchOrder streams opened",
                concurrency="-",
                measured=f"{before[name]['VmRSS']:.1f} -> {after[name]['VmRSS']:.1f} MB",
                baseline="RSS before opening them",
                ratio=after[name]["VmRSS"] / before[name]["VmRSS"],
                target=f"< {_MEMORY_TARGET_MB:.0f} MB more",
                met=grown < _MEMORY_TARGET_MB and not streams_note,
                note=f"+{grown:.1f} MB" + (f"; {streams_note}" if streams_note else ""),
            )
        )
    ratio = watched.throughput / alone.throughput if alone.throughput else 0.0
    life, alone_life = _lifecycle(watched), _lifecycle(alone)
    run.add(
        Row(
            scenario=f"{WATCHERS}: lifecycle with {count:,} WatchOrder streams open",
            concurrency=str(concurrency),
            throughput=watched.throughput,
            p50=life.p50,
            p99=life.p99,
            baseline=f"without {alone.throughput:,.0f}/s",
            ratio=ratio,
            target=f">= {_THROUGHPUT_TARGET:.2f} x without",
            met=ratio >= _THROUGHPUT_TARGET and not watched.errors and not alone.errors,
            note=errors_of(watched),
        )
    )
    run.add(
        Row(
            scenario="  lifecycle without watchers, just before",
            concurrency=str(concurrency),
            throughput=alone.throughput,
            p50=alone_life.p50,
            p99=alone_life.p99,
            note=errors_of(alone),
        )
    )
    run.details["watchers"] = {
        "streams": count,
        "connections": connections,
        "orders_created_seconds": round(created["created_seconds"], 2),
        "opened": [opened, reopened],
        "closed": [first_closed, closed],
        "mb_before_opening": before,
        "mb_streams_open": after,
        "mb_after_closing": after_close,
        "mb_streams_open_after_load": with_load,
        "concurrency": concurrency,
        "without": summary(alone),
        "with": summary(watched),
        "ratio": round(ratio, 4),
        "cpu_cores": {"without": alone_samples.get("cpu"), "with": watched_samples.get("cpu")},
    }


def _lifecycle(result: LoadResult) -> Latency:
    return Latency.of(result.latencies.get(LIFECYCLE, []))


def _streams_note(count: int, *answers: dict[str, Any]) -> str:
    """What went wrong with the streams, if anything: some not opened, or ended or sent a
    message while they should have been idle."""
    problems = []
    for answer in answers:
        if "opened" in answer and answer["opened"] != count:
            problems.append(f"{answer['opened']} of {count} streams opened")
        if answer.get("ended_while_open"):
            problems.append(f"{answer['ended_while_open']} streams ended while idle")
        if answer.get("messages_while_open"):
            problems.append(f"{answer['messages_while_open']} messages while idle")
    return "; ".join(problems)
