"""8: what tracing costs (bench/README.md)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from bench.harness import Arm, Run, baseline_row, in_rounds, in_turn, load, service_cpu_ms
from bench.loadgen import LIFECYCLE, LoadResult
from bench.stack import pids_of
from tests.e2e.otlp import OtlpReceiver
from tests.e2e.stack import LocalStack

TRACING = "8 tracing"
_SAMPLED_TARGET = 0.90
_SAMPLED = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}


async def tracing_cost(run: Run) -> None:
    concurrency, rounds = run.settings.lifecycle_concurrency, run.settings.tracing_rounds
    print(
        f"{TRACING}: {rounds} rounds of lifecycle windows at concurrency {concurrency}: tracing "
        "off, every call traced, one in ten (OTLP/gRPC to a receiver)",
        flush=True,
    )
    receiver = OtlpReceiver(keep=False)
    endpoint = await receiver.start()
    arms = {"off": {}, "all": {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}}
    arms["sampled"] = {**arms["all"], **_SAMPLED}
    spans: dict[str, list[float]] = {"all": [], "sampled": []}

    def window(name: str, stack: LocalStack) -> Arm:
        async def measured() -> tuple[LoadResult, dict[str, Any]]:
            before = receiver.received
            result, samples = await load(
                run, run.job(LIFECYCLE, stack, concurrency), pids_of(stack), None
            )
            if name in spans and result.total:
                # Spans exported meanwhile (warm-up included) per lifecycle begun.
                await asyncio.sleep(1.0)
                spans[name].append((receiver.received - before) / result.total)
            return result, samples

        return measured

    try:
        async with contextlib.AsyncExitStack() as stacks:
            made = {
                n: (await stacks.enter_async_context(run.stack(f"tracing-{n}", e)))[1]
                for n, e in arms.items()
            }
            results, cpu = await in_rounds(rounds, {n: window(n, s) for n, s in made.items()})
    finally:
        await receiver.stop()
    _report(run, results, cpu, spans)


def _report(
    run: Run,
    results: dict[str, list[LoadResult]],
    cpu: dict[str, list[Any]],
    spans: dict[str, list[float]],
) -> None:
    concurrency = run.settings.lifecycle_concurrency
    cost = {name: service_cpu_ms(results[name], cpu[name]) for name in results}
    details: dict[str, Any] = {"concurrency": concurrency, "rounds": run.settings.tracing_rounds}
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
