"""`make bench`: the database, the floors' noop server, the scenarios, then the table, the
JSON file and the chart in bench/results/."""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import grpc

from bench import (
    confirmation,
    deposits,
    growth,
    memory,
    scenarios,
    sqlfloor,
    tracing,
    watch,
)
from bench.harness import Run
from bench.report import Row, Series, draw_chart, table, write_json
from bench.settings import BenchSettings
from bench.stack import BenchServer, service_settings, start_noop
from bench.system import postmaster_pid
from scripts.processes import stop_all
from shared.config import ConfigError

RESULTS = Path(__file__).resolve().parent / "results"


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


async def _environment(server: BenchServer) -> dict[str, Any]:
    conn = await asyncpg.connect(server.factory.server_url)
    try:
        postgres = await conn.fetchval("SHOW server_version")
        settings = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("max_connections", "shared_buffers", "fsync", "synchronous_commit")
        }
    finally:
        await conn.close()
    return {
        **await asyncio.to_thread(_machine),
        "postgres": postgres,
        "postgres_settings": settings,
    }


def _machine() -> dict[str, Any]:
    pgbench = subprocess.run(
        [str(sqlfloor.pgbench_path()), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "python": sys.version.split()[0],
        "grpcio": grpc.__version__,
        "platform": platform.platform(),
        "pgbench": pgbench,
        "database": "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded (pgserver)",
        "git_commit": _git("rev-parse", "HEAD"),
        "git_uncommitted_files": len(_git("status", "--porcelain").splitlines()),
        "service_settings": {
            **service_settings(),
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO"),
            "ORDER_DB_POOL_SIZE": os.environ.get("ORDER_DB_POOL_SIZE", "8"),
            "WALLET_POOL_DB_POOL_SIZE": os.environ.get("WALLET_POOL_DB_POOL_SIZE", "8"),
        },
    }


def _chart(path: Path, run: Run, stamp: str) -> bool:
    claim = run.details.get("claim")
    if not claim:
        return False
    points = claim["points"]
    x = [p["concurrency"] for p in points]

    def rate(key: str) -> list[float]:
        return [float(p[key]["throughput"]) for p in points]

    def latency(key: str, step: str | None, percentile: str) -> list[float]:
        values = []
        for p in points:
            block = p[key]["latency_ms"]
            values.append(float((block[step] if step else block)[percentile]))
        return values

    throughput = [
        Series("achieved (gRPC API)", x, rate("achieved")),
        Series("N: noop gRPC server", x, rate("noop"), "--s"),
        Series("P: pgbench, same SQL", x, rate("pgbench"), "--^"),
        Series("C = 1/(1/N + 1/P)", x, [float(p["ceiling"]) for p in points], ":k"),
        Series("target 0.7 x C", x, [0.7 * float(p["ceiling"]) for p in points], ":r"),
    ]
    latencies = [
        Series("achieved p50", x, latency("achieved", "cycle", "p50")),
        Series("achieved p99", x, latency("achieved", "cycle", "p99"), "-^"),
        Series("noop p50", x, latency("noop", "cycle", "p50"), "--s"),
        Series("noop p99", x, latency("noop", "cycle", "p99"), "--v"),
        Series("pgbench p50", x, latency("pgbench", None, "p50"), ":s"),
        Series("pgbench p99", x, latency("pgbench", None, "p99"), ":v"),
    ]
    extra = []
    life = run.details.get("lifecycle")
    if life:
        block = life["achieved"]
        extra.append(
            (
                "lifecycle (3 calls)",
                int(life["concurrency"]),
                float(block["throughput"]),
                float(block["latency_ms"]["lifecycle"]["p50"]),
                float(block["latency_ms"]["lifecycle"]["p99"]),
            )
        )
    draw_chart(
        path,
        f"AllocateWallet+ReleaseWallet cycles over {claim['pool_size']:,} wallets - {stamp}"
        f"{' (quick)' if run.settings.quick else ''}",
        throughput,
        latencies,
        extra,
    )
    return True


def _cpu_table(details: dict[str, Any]) -> str:
    """Cores used during each measured window: how busy the machine was, and by whom."""
    lines = []

    def add(label: str, cpu: dict[str, float] | None) -> None:
        if not cpu:
            return
        services = ", ".join(
            f"{name} {cpu[name]:.2f}"
            for name in ("wallet_pool_service", "order_service", "noop_server")
            if name in cpu
        )
        client = "pgbench" if "pgbench" in cpu else "load_generator"
        watchers = f"watchers {cpu['watchers']:.2f}  " if "watchers" in cpu else ""
        lines.append(
            f"  {label:<26} {services or '-':<48} postgres {cpu.get('postgres', 0):.2f}  "
            f"{client} {cpu.get(client, 0):.2f}  {watchers}other {cpu.get('other', 0):.2f}  "
            f"machine {cpu.get('machine_busy', 0):.2f}/{int(cpu.get('cores', 0))}"
        )

    for point in details.get("claim", {}).get("points", []):
        concurrency = point["concurrency"]
        add(f"claim {concurrency}: achieved", point["cpu_cores"]["achieved"])
        add(f"claim {concurrency}: noop (N)", point["cpu_cores"]["noop"])
        add(f"claim {concurrency}: pgbench (P)", point["cpu_cores_pgbench"])
    life = details.get("lifecycle")
    if life:
        add("lifecycle: achieved", life["cpu_cores"]["achieved"])
        add("lifecycle: noop (N)", life["cpu_cores"]["noop"])
        add("lifecycle: pgbench (P)", life["cpu_cores_pgbench"])
    hand_off = details.get("hand_off")
    if hand_off:
        add("hand-off rounds", hand_off["cpu_cores"])
    watchers = details.get("watchers")
    if watchers:
        add("lifecycle: no watchers", watchers["cpu_cores"]["without"])
        add(f"lifecycle: {watchers['streams']:,} watchers", watchers["cpu_cores"]["with"])
    if not lines:
        return ""
    return "CPU cores used in the measured windows ('other': processes outside the run):\n" + (
        "\n".join(lines)
    )


def _shown(path: Path) -> Path:
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


async def bench(settings: BenchSettings) -> int:
    started = datetime.now(UTC)
    clock = time.monotonic()
    stamp = started.strftime("%Y-%m-%d_%H%M%S") + ("_quick" if settings.quick else "")
    work_dir = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    print(f"benchmark {stamp}: scenarios {', '.join(settings.scenarios)}; logs in {work_dir}")
    server = await BenchServer.start()
    noop = relay = None
    failed = False
    run: Run | None = None
    try:
        environment = await _environment(server)
        noop = await start_noop(work_dir)
        relay = await start_noop(work_dir, relay_to=noop)
        run = Run(
            settings=settings,
            server=server,
            work_dir=work_dir,
            noop=noop,
            noop_relay=relay,
            postmaster=await postmaster_pid(server.factory.server_url),
        )
        if {"claim", "lifecycle", "handoff"} & set(settings.scenarios):
            await scenarios.api_scenarios(run)
        if "growth" in settings.scenarios:
            await growth.growth(run)
        if "memory" in settings.scenarios:
            await memory.memory(run)
        if "watch" in settings.scenarios:
            await watch.watchers(run)
        if "tracing" in settings.scenarios:
            await tracing.tracing_cost(run)
        if "deposits" in settings.scenarios:
            await deposits.deposit_reports(run)
        if "confirmation" in settings.scenarios:
            await confirmation.confirmation_cost(run)
    except Exception:
        failed = True
        raise
    finally:
        await stop_all(p for p in (relay, noop) if p is not None)
        await server.close()
        if not failed and not os.environ.get("BENCH_KEEP_LOGS"):
            shutil.rmtree(work_dir, ignore_errors=True)
        elif failed:
            print(f"service logs kept in {work_dir}", file=sys.stderr)
    assert run is not None
    rows: list[Row] = run.rows
    print()
    print(table(rows))
    cpu = _cpu_table(run.details)
    if cpu:
        print()
        print(cpu)
    environment["load_average_at_end"] = os.getloadavg()
    document = {
        "started": started.isoformat(),
        "seconds": round(time.monotonic() - clock, 1),
        "quick": settings.quick,
        "command": "make bench" + (" BENCH_QUICK=1" if settings.quick else ""),
        "settings": settings.__dict__,
        "environment": environment,
        "details": run.details,
    }
    json_path = RESULTS / f"{stamp}.json"
    write_json(json_path, document, rows)
    print(f"\nresults: {_shown(json_path)}")
    chart_path = RESULTS / f"{stamp}.png"
    if _chart(chart_path, run, stamp):
        print(f"chart:   {_shown(chart_path)}")
    print(f"took {document['seconds']:.0f} s; load average now {os.getloadavg()[0]:.2f}")
    return 0


def main() -> None:
    try:
        settings = BenchSettings.from_env()
    except ConfigError as exc:
        print(f"bench: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(asyncio.run(bench(settings)))
