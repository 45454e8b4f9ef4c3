"""7: what idle watchers cost (bench/README.md)."""

from __future__ import annotations

import asyncio
import functools
import time
from multiprocessing.connection import Connection
from typing import Any

import grpc

from bench.harness import Arm, Run, baseline_row, in_rounds, in_turn, join_notes, load
from bench.loadgen import LIFECYCLE, Client, LoadResult, Target, join, receive, spawn
from bench.report import Row
from bench.settings import BenchSettings
from bench.stack import pids_of, target_of
from bench.system import rss
from exchange.order.v1 import order_service_pb2 as order_pb
from exchange.order.v1 import order_service_pb2_grpc as order_grpc

WATCHERS = "7 idle watchers"
_ANSWER_SECONDS = 120.0
_MEMORY_TARGET_MB = 50.0
_THROUGHPUT_TARGET = 0.90

Stream = grpc.aio.UnaryStreamCall[order_pb.WatchOrderRequest, order_pb.WatchOrderResponse]


async def _hold_watchers(target: Target, settings: BenchSettings, conn: Connection) -> None:
    """Creates the orders (ETH), then opens and closes the streams on command, spread over
    `watch_connections` channels (each with a subchannel pool of its own: a connection)."""
    client = Client(target)
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.insecure_channel(target.order_addr, options=options)
        for _ in range(settings.watch_connections)
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
                return (await client.create_order("ETH")).id

        orders = await asyncio.gather(*(create() for _ in range(settings.watchers)))
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


async def _command(conn: Connection, command: str) -> dict[str, Any]:
    conn.send(command)
    answer: dict[str, Any] = await receive(conn, _ANSWER_SECONDS)
    return answer


async def watchers(run: Run) -> None:
    settings = run.settings
    count, connections = settings.watchers, settings.watch_connections
    print(
        f"{WATCHERS}: {count:,} WatchOrder streams over {connections:,} connections; "
        f"memory, then {settings.watch_pairs} pairs of lifecycle windows at concurrency "
        f"{settings.lifecycle_concurrency}, without and with them",
        flush=True,
    )
    async with run.stack("watch") as (_, stack):
        holder, pipe = spawn(_hold_watchers, target_of(stack), settings)
        try:
            created = await receive(pipe, _ANSWER_SECONDS)
            print(f"  {count:,} orders to watch created in {created['created_seconds']:.1f} s")
            await asyncio.sleep(1.0)
            memory = {"mb_before_opening": rss(pids_of(stack))}
            answers = [await _command(pipe, "open")]
            await asyncio.sleep(2.0)
            memory["mb_streams_open"] = rss(pids_of(stack))
            answers.append(await _command(pipe, "close"))
            memory["mb_after_closing"] = rss(pids_of(stack))
            job = run.job(LIFECYCLE, stack, settings.lifecycle_concurrency)
            groups = {**pids_of(stack), "watchers": [holder.pid or 0]}

            async def watched() -> tuple[LoadResult, dict[str, Any]]:
                answers.append(await _command(pipe, "open"))
                measured = await load(run, job, groups, None)
                memory["mb_streams_open_after_load"] = rss(pids_of(stack))
                answers.append(await _command(pipe, "close"))
                return measured

            # Windows without and with the streams in turn: the lifecycle's rate drifts and
            # stalls now and then (p99s of a second either way), more than by 10 % in one window.
            arms: dict[str, Arm] = {"without": functools.partial(load, run, job, groups, None)}
            arms["with"] = watched
            results, cpu = await in_rounds(settings.watch_pairs, arms)
            pipe.send("stop")
        finally:
            await join(holder)
    _report(run, created, memory, answers, results, cpu)


def _report(
    run: Run,
    created: dict[str, Any],
    memory: dict[str, dict[str, dict[str, float]]],
    answers: list[dict[str, Any]],
    results: dict[str, list[LoadResult]],
    cpu: dict[str, list[Any]],
) -> None:
    settings, count = run.settings, run.settings.watchers
    concurrency = settings.lifecycle_concurrency
    streams_note = _streams_note(count, *answers)
    before, after = memory["mb_before_opening"], memory["mb_streams_open"]
    for name in before:
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
                note=join_notes(f"+{grown:.1f} MB", streams_note),
            )
        )
    with_streams = in_turn(
        run,
        f"{WATCHERS}: lifecycle with {count:,} WatchOrder streams open",
        concurrency,
        LIFECYCLE,
        (results["without"], results["with"]),
        "without",
        _THROUGHPUT_TARGET,
    )
    label = "  lifecycle without watchers, windows in turn with the above"
    run.details["watchers"] = {
        "streams": count,
        "connections": settings.watch_connections,
        "orders_created_seconds": round(created["created_seconds"], 2),
        "streams_opened_and_closed": answers,
        **memory,
        "concurrency": concurrency,
        "pairs": settings.watch_pairs,
        "without": baseline_row(run, label, concurrency, LIFECYCLE, results["without"]),
        "with": with_streams,
        # The CPU table shows the first pair; every window's is here.
        "cpu_cores": {"without": cpu["without"][0], "with": cpu["with"][0]},
        "cpu_cores_windows": cpu,
    }


def _streams_note(count: int, *answers: dict[str, Any]) -> str:
    problems = []
    for answer in answers:
        if "opened" in answer and answer["opened"] != count:
            problems.append(f"{answer['opened']} of {count} streams opened")
        if answer.get("ended_while_open"):
            problems.append(f"{answer['ended_while_open']} streams ended while idle")
        if answer.get("messages_while_open"):
            problems.append(f"{answer['messages_while_open']} messages while idle")
    return "; ".join(problems)
