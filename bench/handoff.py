"""3: the queue hand-off as a waiting customer sees it (bench/README.md)."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from multiprocessing.connection import Connection
from typing import Any

import grpc

from bench.harness import Run, timed
from bench.loadgen import Client, Target, join, receive, spawn
from bench.settings import BenchSettings
from bench.stack import add_wallets, pids_of, service_settings, target_of
from bench.stats import Latency
from bench.system import CpuMeter
from exchange.order.v1 import order_service_pb2 as order_pb
from tests.e2e.stack import LocalStack

HAND_OFF = "3 queue hand-off"


_NETWORK, _HOLDERS = "TRON", 4  # wallets of the network, all held by live orders
_TIMEOUT_SECONDS = 10.0


POLL, WATCH = "poll", "watch"
Stream = grpc.aio.UnaryStreamCall[order_pb.WatchOrderRequest, order_pb.WatchOrderResponse]


class _Probe:
    def __init__(self, target: Target, settings: BenchSettings) -> None:
        self.settings, self.client, self.customer = settings, Client(target), Client(target)
        self.holders: list[str] = []
        self.waiting: list[str] = []
        self.result: dict[str, Any] = {
            "from_sent": {POLL: [], WATCH: []},
            "completed_call": {POLL: [], WATCH: []},
            "timeouts": {POLL: 0, WATCH: 0},
            "get_order": [],
            "polls_per_round": [],
            "watch_first_message": [],
            "messages_per_round": [],
        }

    async def run(self) -> dict[str, Any]:
        settings, client = self.settings, self.client
        await client.ready()
        await self.customer.ready()
        for _ in range(_HOLDERS):
            order = await client.create_order(_NETWORK)
            if not order.wallet_address:
                raise RuntimeError("a holder order got no wallet; is the network's pool empty?")
            self.holders.append(order.id)
            await client.set_status(order.id, order_pb.ORDER_STATUS_PROCESSING)
        for _ in range(settings.handoff_queue_length):
            order = await client.create_order(_NETWORK)
            if order.wallet_address:
                raise RuntimeError("a waiting order got a wallet; the pool has more wallets")
            self.waiting.append(order.id)
        for number in range(2 * settings.handoff_rounds):
            await self.round(WATCH if number % 2 else POLL)
        return {**self.result, "cpu_seconds": time.process_time()}

    async def round(self, kind: str) -> None:
        holder, head = self.holders.pop(0), self.waiting.pop(0)
        stream = await self.open_watch(head) if kind == WATCH else None
        # A random pause, so that the rounds do not fall into step with the services' loops.
        await asyncio.sleep(random.uniform(0, self.settings.handoff_pause_seconds))
        sent = time.monotonic()
        completing = asyncio.create_task(self.complete(holder))
        seen = await (self.poll(head, sent) if stream is None else self.address_on(stream))
        if seen is None:
            self.result["timeouts"][kind] += 1
        else:
            self.result["from_sent"][kind].append(seen - sent)
        self.result["completed_call"][kind].append(await completing)
        await self.client.set_status(head, order_pb.ORDER_STATUS_PROCESSING)
        self.holders.append(head)
        self.waiting.append((await self.client.create_order(_NETWORK)).id)

    async def complete(self, holder: str) -> float:
        started = time.monotonic()
        answer = await self.client.set_status(holder, order_pb.ORDER_STATUS_COMPLETED)
        if answer.wallet_release != order_pb.WALLET_RELEASE_RELEASED:
            raise RuntimeError(f"release not done inline: {answer.wallet_release}")
        return time.monotonic() - started

    async def poll(self, head: str, sent: float) -> float | None:
        count = 0
        try:
            while True:
                before = time.monotonic()
                order = await self.customer.get_order(head)
                seen = time.monotonic()
                self.result["get_order"].append(seen - before)
                count += 1
                if order.wallet_address:
                    return seen
                if seen - sent > _TIMEOUT_SECONDS:
                    return None
                await asyncio.sleep(self.settings.poll_seconds)
        finally:
            self.result["polls_per_round"].append(count)

    async def open_watch(self, head: str) -> Stream:
        opened = time.monotonic()
        stream = self.customer.watch_order(head)
        now = await stream.read()
        self.result["watch_first_message"].append(time.monotonic() - opened)
        if not isinstance(now, order_pb.WatchOrderResponse) or now.order.wallet_address:
            raise RuntimeError(f"the waiting order's watch began with {now}")
        return stream

    async def address_on(self, stream: Stream) -> float | None:
        count = 0
        try:
            async with asyncio.timeout(_TIMEOUT_SECONDS):
                while isinstance(response := await stream.read(), order_pb.WatchOrderResponse):
                    count += 1
                    if response.order.wallet_address:
                        return time.monotonic()
            raise RuntimeError("the waiting order's watch ended without its address")
        except TimeoutError:
            return None
        finally:
            stream.cancel()
            self.result["messages_per_round"].append(count)

    async def close(self) -> None:
        await self.client.close()
        await self.customer.close()


async def _hand_off_rounds(target: Target, settings: BenchSettings, conn: Connection) -> Any:
    probe = _Probe(target, settings)
    try:
        return await probe.run()
    finally:
        await probe.close()


async def hand_off(run: Run, stack: LocalStack, database: str) -> None:
    settings = run.settings
    print(
        f"{HAND_OFF}: {_HOLDERS} wallets, {settings.handoff_queue_length} orders waiting, "
        f"{settings.handoff_rounds} rounds each of polling and of watching",
        flush=True,
    )
    await add_wallets(database, _NETWORK, 1, _HOLDERS)
    meter = CpuMeter(groups=pids_of(stack), postmaster=run.postmaster)
    before = meter.sample()
    process, pipe = spawn(_hand_off_rounds, target_of(stack), settings)
    try:
        wait = 60 + 2 * settings.handoff_rounds * (_TIMEOUT_SECONDS + 1)
        result: dict[str, Any] = await receive(pipe, wait)
    finally:
        await join(process)
    after = meter.sample()
    cpu = CpuMeter.usage(before, after)
    # The probe's own CPU, which it reports, is not the machine's other processes'.
    cpu["load_generator"] = round(result["cpu_seconds"] / (after.wall - before.wall), 3)
    cpu["other"] = round(max(0.0, cpu["other"] - cpu["load_generator"]), 3)
    run.details["hand_off"] = {
        "wallets": _HOLDERS,
        "queue_length": settings.handoff_queue_length,
        "rounds_of_each_kind": settings.handoff_rounds,
        "poll_seconds": settings.poll_seconds,
        "pause_seconds": settings.handoff_pause_seconds,
        "allocation_sync_seconds": service_settings()["ALLOCATION_SYNC_SECONDS"],
        **_rows(run, result),
        "polls_per_round_median": statistics.median(result["polls_per_round"] or [0]),
        "watch_messages_per_round_median": statistics.median(result["messages_per_round"] or [0]),
        "timeouts": result["timeouts"][POLL],
        "watch_timeouts": result["timeouts"][WATCH],
        "cpu_cores": cpu,
    }


def _rows(run: Run, result: dict[str, Any]) -> dict[str, Any]:
    polled, watched = (Latency.of(result["from_sent"][kind]) for kind in (POLL, WATCH))
    poll = Latency.of(result["get_order"])
    timeouts = result["timeouts"]
    get_order = f"GetOrder p50 {poll.p50:.2f} / p99 {poll.p99:.2f} ms"
    # From sending COMPLETED over-counts a little: the order is COMPLETED when its
    # transaction commits, a client round trip after the send.
    for kind, latency, shows, versus, base in (
        (POLL, polled, "waiting order's GetOrder shows address", get_order, poll),
        (WATCH, watched, "address on waiting order's WatchOrder", _versus(polled), polled),
    ):
        run.add(
            timed(
                f"{HAND_OFF}: COMPLETED sent -> {shows}",
                1,
                latency,
                baseline=versus,
                ratio=latency.p50 / base.p50 if base.p50 else None,
                target="p50 <= 5 ms, p99 <= 25 ms",
                met=latency.p50 <= 5.0 and latency.p99 <= 25.0 and not timeouts[kind],
                note=f"{timeouts[kind]} timeouts" if timeouts[kind] else "",
            )
        )
    calls = {kind: Latency.of(result["completed_call"][kind]) for kind in (POLL, WATCH)}
    first_message = Latency.of(result["watch_first_message"])
    for label, latency in (
        ("UpdateOrderStatus COMPLETED, polling rounds", calls[POLL]),
        ("UpdateOrderStatus COMPLETED, watching rounds", calls[WATCH]),
        ("WatchOrder opened -> its first message (the order now)", first_message),
    ):
        ratio = latency.p50 / poll.p50 if poll.p50 else None
        run.add(timed(f"  call: {label}", 1, latency, baseline=get_order, ratio=ratio))
    return {
        "from_sent_ms": polled.to_json(),
        "watch_from_sent_ms": watched.to_json(),
        "completed_call_ms": calls[POLL].to_json(),
        "watch_completed_call_ms": calls[WATCH].to_json(),
        "get_order_ms": poll.to_json(),
        "watch_first_message_ms": first_message.to_json(),
    }


def _versus(polled: Latency) -> str:
    return f"polling p50 {polled.p50:.2f} / p99 {polled.p99:.2f} ms"
