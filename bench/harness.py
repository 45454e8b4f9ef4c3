"""What every scenario shares."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import LoadJob, LoadResult, Window, run_load
from bench.report import Row, cells
from bench.settings import BenchSettings
from bench.stack import BenchServer, add_wallets, start_services, target_of
from bench.stats import Latency
from bench.system import CpuMeter, sample_connections
from scripts.processes import ServiceProcess
from tests.e2e.stack import LocalStack


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

    def job(
        self, workload: str, stack: LocalStack, concurrency: int, network: str = "ETH"
    ) -> LoadJob:
        windows = (self.settings.warmup_seconds, self.settings.duration_seconds)
        return LoadJob(workload, target_of(stack), concurrency, *windows, network)

    @contextlib.asynccontextmanager
    async def stack(
        self, name: str, env: dict[str, str] | None = None, wallets: int | None = None
    ) -> AsyncIterator[tuple[str, LocalStack]]:
        """A new database with `wallets` ETH wallets and both services on it; dropped after."""
        database = await self.server.factory.create()
        try:
            await add_wallets(database, "ETH", 1, wallets or self.settings.claim_pool_size)
            stack = await start_services(database, self.work_dir / name, env)
            try:
                await asyncio.sleep(1.0)
                yield database, stack
            finally:
                await stack.close()
        finally:
            await self.server.factory.drop_database(database)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print("  " + " | ".join(c for c in cells(row) if c != "-"), flush=True)


def timed(scenario: str, concurrency: int, latency: Latency, **fields: Any) -> Row:
    return Row(scenario, str(concurrency), p50=latency.p50, p99=latency.p99, **fields)


def errors_of(result: LoadResult) -> str:
    if not result.errors:
        return ""
    return "errors " + ", ".join(f"{code} {n}" for code, n in sorted(result.errors.items()))


def join_notes(*notes: str) -> str:
    return "; ".join(note for note in notes if note)


async def load(
    run: Run,
    job: LoadJob,
    groups: dict[str, list[int]],
    database_url: str | None,
    also: Callable[[Window], Awaitable[None]] | None = None,
) -> tuple[LoadResult, dict[str, Any]]:
    """The load, with CPU (and connections) sampled during its window; `also` runs then too."""
    samples: dict[str, Any] = {}
    meter = CpuMeter(groups=groups, postmaster=run.postmaster)

    async def during(window: Window) -> None:
        extra = {"load_generator": list(window.client_pids)}
        jobs: list[Awaitable[Any]] = [meter.measure(window.start, window.end, extra)]
        if database_url is not None:
            jobs.append(sample_connections(database_url, window.start, window.end))
        samples["cpu"], *rest = await asyncio.gather(*jobs, *([also(window)] if also else []))
        if database_url is not None:
            samples["connections"] = rest[0]

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


def _ratio(result: LoadResult, base: LoadResult) -> float:
    return result.throughput / base.throughput if base.throughput else 0.0


def in_turn(
    run: Run,
    scenario: str,
    concurrency: int,
    kind: str,
    windows: tuple[list[LoadResult], list[LoadResult]],
    versus: str,
    target: float | None,
    notes: tuple[str, ...] = (),
    ok: bool = True,
) -> dict[str, Any]:
    base, tried = together(windows[0]), together(windows[1])
    each = [_ratio(t, b) for b, t in zip(*windows, strict=True)]
    latency = Latency.of(tried.latencies.get(kind, []))
    met = None
    if target is not None:
        met = _ratio(tried, base) >= target and ok and not tried.errors and not base.errors
    run.add(
        timed(
            scenario,
            concurrency,
            latency,
            throughput=tried.throughput,
            baseline=f"{versus} {base.throughput:,.0f}/s",
            ratio=_ratio(tried, base),
            target="" if target is None else f">= {target:.2f} x {versus}",
            met=met,
            note=join_notes(
                f"{len(each)} in turn, each " + " / ".join(f"{r:.2f}" for r in each),
                *notes,
                errors_of(tried),
            ),
        )
    )
    return {
        **summary(tried),
        "ratio": round(_ratio(tried, base), 4),
        "window_ratios": [round(r, 4) for r in each],
        "windows": [summary(r) for r in windows[1]],
    }


def baseline_row(
    run: Run, scenario: str, concurrency: int, kind: str, windows: list[LoadResult]
) -> dict[str, Any]:
    base = together(windows)
    latency = Latency.of(base.latencies.get(kind, []))
    run.add(timed(scenario, concurrency, latency, throughput=base.throughput, note=errors_of(base)))
    return {**summary(base), "windows": [summary(r) for r in windows]}


# One measured window of an arm: its load's result and what was sampled meanwhile.
Arm = Callable[[], Awaitable[tuple[LoadResult, dict[str, Any]]]]


async def in_rounds(
    rounds: int, arms: Mapping[str, Arm], alternate: bool = False
) -> tuple[dict[str, list[LoadResult]], dict[str, list[Any]]]:
    """A window of each arm per round (`alternate`: each arm first in every other round)."""
    results: dict[str, list[LoadResult]] = {name: [] for name in arms}
    cpu: dict[str, list[Any]] = {name: [] for name in arms}
    for number in range(rounds):
        order = list(arms.items())
        for name, window in order[::-1] if alternate and number % 2 else order:
            result, samples = await window()
            results[name].append(result)
            cpu[name].append(samples.get("cpu"))
    return results, cpu


def service_cpu_ms(results: list[LoadResult], cpu: list[Any]) -> float:
    """Both services' CPU ms per operation: steadier than the rate on a shared machine."""
    spent = sum(
        (window.get("order_service", 0.0) + window.get("wallet_pool_service", 0.0)) * r.seconds
        for r, window in zip(results, cpu, strict=True)
        if window
    )
    completed = sum(r.completed for r in results)
    return 1000 * spent / completed if completed else 0.0
