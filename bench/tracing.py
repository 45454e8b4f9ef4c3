"""8: what tracing costs. The lifecycle of scenario 2 on three stacks side by side, in windows
taken in turn: tracing off (the default); every call traced; one call in ten traced
(OTEL_TRACES_SAMPLER=parentbased_traceidratio, 0.1). The traced stacks export over OTLP/gRPC
to a receiver in this process, as to a collector."""

from __future__ import annotations

import asyncio
from typing import Any

from bench.harness import (
    Run,
    errors_of,
    join_notes,
    lifecycle_latency,
    load,
    summary,
    together,
)
from bench.loadgen import LIFECYCLE, LoadJob, LoadResult
from bench.report import Row
from bench.stack import add_wallets, pids_of, start_services, target_of
from tests.e2e.otlp import OtlpReceiver

TRACING = "8 tracing"
# The lifecycle's throughput with one call in ten traced, against tracing off.
_SAMPLED_TARGET = 0.90
_SAMPLED = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}


async def tracing_cost(run: Run) -> None:
    settings = run.settings
    concurrency = settings.lifecycle_concurrency
    rounds = settings.tracing_rounds
    print(
        f"{TRACING}: {rounds} rounds of lifecycle windows at concurrency {concurrency}: tracing "
        "off, every call traced, one in ten (OTLP/gRPC to a receiver)",
        flush=True,
    )
    receiver = OtlpReceiver(keep=False)
    endpoint = await receiver.start()
    arms = {"off": {}, "all": {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}}
    arms["sampled"] = {**arms["all"], **_SAMPLED}
    databases = [await run.server.database() for _ in arms]
    stacks = {}
    results: dict[str, list[LoadResult]] = {name: [] for name in arms}
    spans: dict[str, list[float]] = {"all": [], "sampled": []}
    cpu: dict[str, list[Any]] = {name: [] for name in arms}
    try:
        for (name, env), database in zip(arms.items(), databases, strict=True):
            await add_wallets(database, "ETH", 1, settings.claim_pool_size)
            stacks[name] = await start_services(database, run.work_dir / f"tracing-{name}", env)
        await asyncio.sleep(1.0)  # background loops' first round
        for _ in range(rounds):
            for name, stack in stacks.items():
                job = LoadJob(
                    LIFECYCLE,
                    target_of(stack),
                    concurrency,
                    settings.warmup_seconds,
                    settings.duration_seconds,
                    "ETH",
                )
                before = receiver.received
                result, samples = await load(run, job, pids_of(stack), None)
                results[name].append(result)
                cpu[name].append(samples.get("cpu"))
                if name in spans and result.total:
                    # Spans exported meanwhile (warm-up included) per lifecycle begun.
                    await asyncio.sleep(1.0)
                    spans[name].append((receiver.received - before) / result.total)
    finally:
        for stack in stacks.values():
            await stack.close()
        await receiver.stop()
        for database in databases:
            await run.server.drop(database)

    without = together(results["off"])
    off_life = lifecycle_latency(without)
    # CPU is steadier than throughput on a shared machine: what each lifecycle cost the two
    # services, summed over the windows.
    cost = {name: _service_cpu_ms(results[name], cpu[name]) for name in arms}
    details: dict[str, Any] = {"concurrency": concurrency, "rounds": rounds}
    for name, title in (("all", "every call traced"), ("sampled", "one call in ten traced")):
        traced = together(results[name])
        ratio = traced.throughput / without.throughput if without.throughput else 0.0
        round_ratios = [
            t.throughput / w.throughput if w.throughput else 0.0
            for w, t in zip(results["off"], results[name], strict=True)
        ]
        life = lifecycle_latency(traced)
        sampled = name == "sampled"
        run.add(
            Row(
                scenario=f"{TRACING}: lifecycle, {title}",
                concurrency=str(concurrency),
                throughput=traced.throughput,
                p50=life.p50,
                p99=life.p99,
                baseline=f"tracing off {without.throughput:,.0f}/s",
                ratio=ratio,
                target=f">= {_SAMPLED_TARGET:.2f} x off" if sampled else "",
                met=(ratio >= _SAMPLED_TARGET and not traced.errors and not without.errors)
                if sampled
                else None,
                note=join_notes(
                    f"{len(round_ratios)} rounds, each "
                    + " / ".join(f"{r:.2f}" for r in round_ratios),
                    f"{sum(spans[name]) / len(spans[name]):.1f} spans per lifecycle"
                    if spans[name]
                    else "",
                    f"services' CPU {cost[name]:.2f} ms per lifecycle (off {cost['off']:.2f})",
                    errors_of(traced),
                ),
            )
        )
        details[name] = {
            **summary(traced),
            "ratio": round(ratio, 4),
            "round_ratios": [round(r, 4) for r in round_ratios],
            "spans_per_lifecycle": [round(s, 2) for s in spans[name]],
            "windows": [summary(r) for r in results[name]],
        }
    run.add(
        Row(
            scenario="  lifecycle with tracing off, windows in turn with the above",
            concurrency=str(concurrency),
            throughput=without.throughput,
            p50=off_life.p50,
            p99=off_life.p99,
            note=errors_of(without),
        )
    )
    run.details["tracing"] = {
        **details,
        "off": {**summary(without), "windows": [summary(r) for r in results["off"]]},
        "services_cpu_ms_per_lifecycle": {name: round(ms, 3) for name, ms in cost.items()},
        "cpu_cores_windows": cpu,
    }


def _service_cpu_ms(results: list[LoadResult], cpu: list[Any]) -> float:
    """Milliseconds of CPU both services spent per lifecycle completed, over the windows."""
    spent = sum(
        (window.get("order_service", 0.0) + window.get("wallet_pool_service", 0.0)) * r.seconds
        for r, window in zip(results, cpu, strict=True)
        if window
    )
    completed = sum(r.completed for r in results)
    return 1000 * spent / completed if completed else 0.0
