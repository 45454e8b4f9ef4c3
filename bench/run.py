"""`make bench` (bench/README.md)."""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from bench import confirmation, deposits, growth, memory, scenarios, sqlfloor, tracing, watch
from bench.harness import Run
from bench.report import draw_chart, table, write_json
from bench.settings import SCENARIOS, BenchSettings
from bench.stack import BenchServer, connected, service_settings, start_noop
from bench.system import postmaster_pid
from scripts.processes import stop_all
from shared.config import ConfigError

RESULTS = Path(__file__).resolve().parent / "results"
# The scenarios, in the order they run, each with the names that select it.
_STEPS: tuple[tuple[str, Callable[[Run], Awaitable[None]]], ...] = (
    ("claim lifecycle handoff", scenarios.api_scenarios),
    ("growth", growth.growth),
    ("memory", memory.memory),
    ("watch", watch.watchers),
    ("tracing", tracing.tracing_cost),
    ("deposits", deposits.deposit_reports),
    ("confirmation", confirmation.confirmation_cost),
)


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            args, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


async def _environment(server: BenchServer) -> dict[str, Any]:
    async with connected(server.factory.server_url) as conn:
        names = ("server_version", "max_connections", "shared_buffers", "fsync")
        postgres = {n: await conn.fetchval(f"SHOW {n}") for n in (*names, "synchronous_commit")}
    pgbench = await asyncio.to_thread(_git, str(sqlfloor.pgbench_path()), "--version")
    return {
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
        "python": sys.version.split()[0],
        "grpcio": grpc.__version__,
        "platform": platform.platform(),
        "pgbench": pgbench,
        "database": "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded (pgserver)",
        "git_commit": await asyncio.to_thread(_git, "git", "rev-parse", "HEAD"),
        "git_uncommitted_files": len(_git("git", "status", "--porcelain").splitlines()),
        "postgres": postgres.pop("server_version"),
        "postgres_settings": postgres,
        "service_settings": {
            **service_settings(),
            **{n: os.environ.get(n, d) for n, d in _SERVICE_VARIABLES},
        },
    }


_SERVICE_VARIABLES = [("LOG_LEVEL", "INFO"), ("ORDER_DB_POOL_SIZE", "8")]
_SERVICE_VARIABLES += [("WALLET_POOL_DB_POOL_SIZE", "8")]


def _cpu_table(details: dict[str, Any]) -> str:
    """Cores used during each measured window: how busy the machine was, and by whom."""
    points = [(f"claim {p['concurrency']}", p) for p in details.get("claim", {}).get("points", [])]
    points += [("lifecycle", details["lifecycle"])] if "lifecycle" in details else []
    windows = [
        (f"{label}: {name}", cpu)
        for label, point in points
        for name, cpu in (
            ("achieved", point["cpu_cores"]["achieved"]),
            ("noop (N)", point["cpu_cores"]["noop"]),
            ("pgbench (P)", point["cpu_cores_pgbench"]),
        )
    ]
    if hand_off := details.get("hand_off"):
        windows.append(("hand-off rounds", hand_off["cpu_cores"]))
    if watchers := details.get("watchers"):
        windows.append(("lifecycle: no watchers", watchers["cpu_cores"]["without"]))
        windows.append(
            (f"lifecycle: {watchers['streams']:,} watchers", watchers["cpu_cores"]["with"])
        )
    lines = ["CPU cores used in the measured windows ('other': processes outside the run):"]
    for label, cpu in (w for w in windows if w[1]):
        names = ["wallet_pool_service", "order_service", "noop_server", "postgres"]
        names += ["pgbench" if "pgbench" in cpu else "load_generator", "watchers", "other"]
        used = "  ".join(f"{name} {cpu[name]:.2f}" for name in names if name in cpu)
        machine = f"machine {cpu.get('machine_busy', 0):.2f}/{int(cpu.get('cores', 0))}"
        lines.append(f"  {label:<26} {used}  {machine}")
    return "\n".join(lines) if len(lines) > 1 else ""


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
        postmaster = await postmaster_pid(server.factory.server_url)
        run = Run(settings, server, work_dir, noop, relay, postmaster)
        for names, step in _STEPS:
            if set(names.split()) & set(settings.scenarios):
                await step(run)
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
    print(f"\n{table(run.rows)}\n\n{_cpu_table(run.details)}")
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
    _save(run, document, stamp)
    print(f"took {document['seconds']:.0f} s; load average now {os.getloadavg()[0]:.2f}")
    return 0


def _save(run: Run, document: dict[str, Any], stamp: str) -> None:
    """One file per set of scenarios, the latest run's (quick runs apart, not kept in git)."""
    chosen = run.settings.scenarios
    name = "all" if set(chosen) == set(SCENARIOS) else "-".join(s for s in SCENARIOS if s in chosen)
    path = (RESULTS / "quick" if run.settings.quick else RESULTS) / name
    write_json(path.with_suffix(".json"), document, run.rows)
    print(f"\nresults: {_shown(path.with_suffix('.json'))}")
    if "claim" in run.details:
        title = f"AllocateWallet+ReleaseWallet cycles over {run.settings.claim_pool_size:,} wallets"
        life = run.details.get("lifecycle")
        draw_chart(path.with_suffix(".png"), f"{title} - {stamp}", run.details["claim"], life)
        print(f"chart:   {_shown(path.with_suffix('.png'))}")


def main() -> None:
    try:
        settings = BenchSettings.from_env()
    except ConfigError as exc:
        print(f"bench: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(asyncio.run(bench(settings)))
