"""10: what showing an event only once the synchronous standby has its sequence costs (the
order service's `_confirm_events`, migration 008). A PostgreSQL primary with a synchronous
standby of its own (`tests.chaos.replication`), two databases on it, and a stack on each, side
by side: the order service as it is, and one without the confirmation
(`bench.order_without_confirmation`). The lifecycle of scenario 2 in windows taken in turn."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from bench.harness import Run, errors_of, join_notes, lifecycle_latency, load, summary, together
from bench.loadgen import LIFECYCLE, LoadJob, LoadResult
from bench.report import Row
from bench.stack import add_wallets, pids_of, start_services, target_of
from bench.tracing import _service_cpu_ms
from tests.chaos.replication import DATABASE, ReplicatedCluster

CONFIRMATION = "10 confirmation"
ARMS = {"confirmed": "order_service", "without": "bench.order_without_confirmation"}


async def _databases(cluster: ReplicatedCluster) -> dict[str, str]:
    """Per arm, the cluster's URL of a database of its own (created on the primary)."""
    conn = await asyncpg.connect(cluster.primary.url("postgres"))
    try:
        await conn.execute("CREATE DATABASE exchange_without")
    finally:
        await conn.close()
    return {"confirmed": cluster.url(DATABASE), "without": cluster.url("exchange_without")}


async def _event_log(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow("SELECT last_sequence, confirmed_through FROM orders.event_log")
    finally:
        await conn.close()
    assert row is not None
    return dict(row)


async def confirmation_cost(run: Run) -> None:
    settings = run.settings
    concurrency = settings.lifecycle_concurrency
    rounds = settings.confirmation_rounds
    print(
        f"{CONFIRMATION}: {rounds} rounds of lifecycle windows at concurrency {concurrency} "
        "on a primary with a synchronous standby: events confirmed, and without",
        flush=True,
    )
    cluster = ReplicatedCluster()
    stacks = {}
    results: dict[str, list[LoadResult]] = {name: [] for name in ARMS}
    cpu: dict[str, list[Any]] = {name: [] for name in ARMS}
    logs: dict[str, dict[str, int]] = {}
    try:
        await cluster.start()
        urls = await _databases(cluster)
        for name, module in ARMS.items():
            stacks[name] = await start_services(
                urls[name], run.work_dir / f"confirmation-{name}", order_module=module
            )
            node_url = cluster.primary.url(urls[name].rpartition("/")[2].partition("?")[0])
            await add_wallets(node_url, "ETH", 1, settings.claim_pool_size)
        await asyncio.sleep(1.0)  # background loops' first round
        for round_ in range(rounds):
            # Each arm goes first in every other round: neither gains from going second.
            order = list(stacks.items())
            for name, stack in order if round_ % 2 == 0 else order[::-1]:
                job = LoadJob(
                    LIFECYCLE,
                    target_of(stack),
                    concurrency,
                    settings.warmup_seconds,
                    settings.duration_seconds,
                    "ETH",
                )
                result, samples = await load(run, job, pids_of(stack), None)
                results[name].append(result)
                cpu[name].append(samples.get("cpu"))
        await asyncio.sleep(1.0)  # the last sequencer runs
        for name in ARMS:
            node_db = "exchange" if name == "confirmed" else "exchange_without"
            logs[name] = await _event_log(cluster.primary.url(node_db))
    finally:
        for stack in stacks.values():
            await stack.close()
        await cluster.close()
    _report(run, results, cpu, logs)


def _report(
    run: Run,
    results: dict[str, list[LoadResult]],
    cpu: dict[str, list[Any]],
    logs: dict[str, dict[str, int]],
) -> None:
    concurrency = run.settings.lifecycle_concurrency
    without = together(results["without"])
    confirmed = together(results["confirmed"])
    ratio = confirmed.throughput / without.throughput if without.throughput else 0.0
    round_ratios = [
        c.throughput / w.throughput if w.throughput else 0.0
        for w, c in zip(results["without"], results["confirmed"], strict=True)
    ]
    cost = {name: _service_cpu_ms(results[name], cpu[name]) for name in ARMS}
    life, off_life = lifecycle_latency(confirmed), lifecycle_latency(without)
    shown = logs.get("confirmed", {})
    run.add(
        Row(
            scenario=f"{CONFIRMATION}: lifecycle, events shown once the standby has them",
            concurrency=str(concurrency),
            throughput=confirmed.throughput,
            p50=life.p50,
            p99=life.p99,
            baseline=f"without {without.throughput:,.0f}/s",
            ratio=ratio,
            note=join_notes(
                f"{len(round_ratios)} rounds, each " + " / ".join(f"{r:.2f}" for r in round_ratios),
                f"services' CPU {cost['confirmed']:.2f} ms per lifecycle "
                f"(without {cost['without']:.2f})",
                f"shown {shown.get('confirmed_through')} of {shown.get('last_sequence')} numbered",
                errors_of(confirmed),
            ),
        )
    )
    run.add(
        Row(
            scenario="  lifecycle without the confirmation, windows in turn with the above",
            concurrency=str(concurrency),
            throughput=without.throughput,
            p50=off_life.p50,
            p99=off_life.p99,
            note=errors_of(without),
        )
    )
    run.details["confirmation"] = {
        "concurrency": concurrency,
        "confirmed": {**summary(confirmed), "windows": [summary(r) for r in results["confirmed"]]},
        "without": {**summary(without), "windows": [summary(r) for r in results["without"]]},
        "ratio": round(ratio, 4),
        "round_ratios": [round(r, 4) for r in round_ratios],
        "services_cpu_ms_per_lifecycle": {name: round(ms, 3) for name, ms in cost.items()},
        "event_log": logs,
        "cpu_cores_windows": cpu,
    }
