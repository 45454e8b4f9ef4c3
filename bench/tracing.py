"""8: what tracing costs. The lifecycle of scenario 2 on three stacks side by side, in windows
taken in turn: tracing off (the default); every call traced; one call in ten traced
(OTEL_TRACES_SAMPLER=parentbased_traceidratio, 0.1). The traced stacks export over OTLP/gRPC
to a receiver in this process, as to a collector."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from bench.harness import Run, baseline_row, in_turn, load
from bench.loadgen import LIFECYCLE, LoadResult
from bench.stack import pids_of
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
    results: dict[str, list[LoadResult]] = {name: [] for name in arms}
    spans: dict[str, list[float]] = {"all": [], "sampled": []}
    cpu: dict[str, list[Any]] = {name: [] for name in arms}
    try:
        async with contextlib.AsyncExitStack() as stacks:
            made = [
                await stacks.enter_async_context(run.stack(f"tracing-{n}", e))
                for n, e in arms.items()
            ]
            for _ in range(rounds):
                for name, (_, stack) in zip(arms, made, strict=True):
                    job = run.job(LIFECYCLE, stack, concurrency)
                    before = receiver.received
                    result, samples = await load(run, job, pids_of(stack), None)
                    results[name].append(result)
                    cpu[name].append(samples.get("cpu"))
                    if name in spans and result.total:
                        # Spans exported meanwhile (warm-up included) per lifecycle begun.
                        await asyncio.sleep(1.0)
                        spans[name].append((receiver.received - before) / result.total)
    finally:
        await receiver.stop()

    # CPU is steadier than throughput on a shared machine: what each lifecycle cost the two
    # services, summed over the windows.
    cost = {name: _service_cpu_ms(results[name], cpu[name]) for name in arms}
    details: dict[str, Any] = {"concurrency": concurrency, "rounds": rounds}
    for name, title in (("all", "every call traced"), ("sampled", "one call in ten traced")):
        per = (
            f"{sum(spans[name]) / len(spans[name]):.1f} spans per lifecycle" if spans[name] else ""
        )
        details[name] = in_turn(
            run,
            f"{TRACING}: lifecycle, {title}",
            concurrency,
            LIFECYCLE,
            (results["off"], results[name]),
            "tracing off",
            _SAMPLED_TARGET if name == "sampled" else None,
            (per, f"services' CPU {cost[name]:.2f} ms per lifecycle (off {cost['off']:.2f})"),
        )
        details[name]["spans_per_lifecycle"] = [round(s, 2) for s in spans[name]]
    label = "  lifecycle with tracing off, windows in turn with the above"
    run.details["tracing"] = {
        **details,
        "off": baseline_row(run, label, concurrency, LIFECYCLE, results["off"]),
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
