"""What every scenario shares: the run (its settings, servers, table rows and JSON details),
the load with CPU sampled during its window, and summaries of a load's result."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import LoadJob, LoadResult, Window, run_load
from bench.report import Row
from bench.settings import BenchSettings
from bench.stack import BenchServer
from bench.stats import Latency
from bench.system import CpuMeter, sample_connections
from scripts.processes import ServiceProcess


@dataclass
class Run:
    settings: BenchSettings
    server: BenchServer
    work_dir: Path
    noop: ServiceProcess
    # A second noop server that calls `noop` as the order service calls the pool.
    noop_relay: ServiceProcess
    postmaster: int | None
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(f"  {row.scenario} [{row.concurrency}] {_brief(row)}", flush=True)


def _brief(row: Row) -> str:
    parts = []
    if row.measured:
        parts.append(row.measured)
    if row.throughput is not None:
        parts.append(f"{row.throughput:,.0f}/s")
    if row.p50 is not None and row.p99 is not None:
        parts.append(f"p50 {row.p50:.2f} ms p99 {row.p99:.2f} ms")
    if row.ratio is not None:
        parts.append(f"ratio {row.ratio:.2f}")
    return ", ".join(parts)


def errors_of(result: LoadResult) -> str:
    if not result.errors:
        return ""
    return "errors " + ", ".join(f"{code} {n}" for code, n in sorted(result.errors.items()))


def join_notes(*notes: str) -> str:
    return "; ".join(note for note in notes if note)


async def load(
    run: Run, job: LoadJob, groups: dict[str, list[int]], database_url: str | None
) -> tuple[LoadResult, dict[str, Any]]:
    """The load, with CPU per process group (and connections per service) sampled during
    its measured window."""
    samples: dict[str, Any] = {}
    meter = CpuMeter(groups=groups, postmaster=run.postmaster)

    async def during(window: Window) -> None:
        extra = {"load_generator": list(window.client_pids)}
        if database_url is None:
            samples["cpu"] = await meter.measure(window.start, window.end, extra)
            return
        cpu, connections = await asyncio.gather(
            meter.measure(window.start, window.end, extra),
            sample_connections(database_url, window.start, window.end),
        )
        samples["cpu"], samples["connections"] = cpu, connections

    result = await run_load(job, run.settings.client_processes, during)
    return result, samples


def summary(result: LoadResult) -> dict[str, Any]:
    return {
        "throughput": round(result.throughput, 2),
        "completed": result.completed,
        "total": result.total,
        "seconds": result.seconds,
        "processes": result.processes,
        "errors": result.errors,
        "latency_ms": {name: Latency.of(v).to_json() for name, v in result.latencies.items()},
    }


def together(results: list[LoadResult]) -> LoadResult:
    """Windows of one job as one: their operations over their summed seconds."""
    latencies: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    for result in results:
        for name, values in result.latencies.items():
            latencies.setdefault(name, []).extend(values)
        for code, n in result.errors.items():
            errors[code] = errors.get(code, 0) + n
    return LoadResult(
        job=results[0].job,
        completed=sum(r.completed for r in results),
        total=sum(r.total for r in results),
        seconds=sum(r.seconds for r in results),
        latencies=latencies,
        errors=errors,
        processes=results[0].processes,
    )
