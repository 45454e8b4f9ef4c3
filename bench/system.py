"""Resident memory, CPU per process group and for the machine, connections per service."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from bench.stack import connected
from tests.chaos.replication import children

_TICKS = os.sysconf("SC_CLK_TCK")


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (the peak) of a process, in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in ("VmRSS", "VmHWM"):
            values[key] = round(int(line.split()[1]) / 1024, 1)
    return values


def rss(groups: dict[str, list[int]]) -> dict[str, dict[str, float]]:
    return {name: memory_mb(pids[0]) for name, pids in groups.items()}


def _cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """`reaped_children`: with its exited children's, so a group stays continuous."""
    fields = _stat(pid)
    if not fields:
        return 0.0
    seconds = int(fields[11]) + int(fields[12])
    if reaped_children:
        seconds += int(fields[13]) + int(fields[14])
    return seconds / _TICKS


def _stat(pid: int | str) -> list[str]:
    """The fields after the command (which may hold spaces); none for a process gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return stat[stat.rindex(")") + 2 :].split()


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


@dataclass
class CpuSample:
    wall: float
    groups: dict[str, float]
    machine: tuple[int, int]


@dataclass
class CpuMeter:
    """CPU per group of processes; the postmaster's children count as `postgres`."""

    groups: dict[str, list[int]] = field(default_factory=dict)
    postmaster: int | None = None

    def sample(self, extra: Mapping[str, Sequence[int]] = {}) -> CpuSample:
        groups = {**self.groups, **{k: list(v) for k, v in extra.items()}}
        seconds = {name: sum(_cpu_seconds(pid) for pid in pids) for name, pids in groups.items()}
        if self.postmaster is not None:
            # Backends and autovacuum workers exit all the time: the postmaster's reaped
            # children's time keeps what they used.
            seconds["postgres"] = _cpu_seconds(self.postmaster, reaped_children=True) + sum(
                _cpu_seconds(pid) for pid in children(self.postmaster)
            )
        return CpuSample(time.monotonic(), seconds, _machine_ticks())

    @staticmethod
    def usage(before: CpuSample, after: CpuSample) -> dict[str, float]:
        """Cores used per group, by the machine, and by no measured group (`other`)."""
        wall = after.wall - before.wall
        if wall <= 0:
            return {}
        cores = os.cpu_count() or 1
        used = {
            name: round((after.groups.get(name, 0.0) - seconds) / wall, 3)
            for name, seconds in before.groups.items()
        }
        busy = after.machine[0] - before.machine[0]
        total = after.machine[1] - before.machine[1]
        machine = cores * busy / total if total else 0.0
        used["machine_busy"] = round(machine, 3)
        used["other"] = round(
            max(0.0, machine - sum(v for k, v in used.items() if k != "machine_busy")), 3
        )
        used["cores"] = cores
        return used

    async def measure(
        self, start: float, end: float, extra: Mapping[str, Sequence[int]] = {}
    ) -> dict[str, float]:
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        before = self.sample(extra)
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        return self.usage(before, self.sample(extra))


async def postmaster_pid(url: str) -> int | None:
    """The database server's pid when it runs on this machine (the parent of a backend)."""
    async with connected(url) as conn:
        backend: int = await conn.fetchval("SELECT pg_backend_pid()")
        # While the connection is open: its backend exits when it closes.
        fields = await asyncio.to_thread(_stat, backend)
    return int(fields[1]) if fields else None  # none: not on this machine


_CONNECTIONS = """
SELECT application_name, state, count(*) AS n
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
GROUP BY 1, 2
"""


async def connection_counts(conn: asyncpg.Connection[Any]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for row in await conn.fetch(_CONNECTIONS):
        name = row["application_name"] or "(none)"
        counts.setdefault(name, {})[row["state"] or "unknown"] = row["n"]
    return counts


async def sample_connections(
    url: str, start: float, end: float, every: float = 0.25
) -> dict[str, dict[str, int]]:
    conn = await asyncpg.connect(url)
    peak: dict[str, dict[str, int]] = {}
    try:
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        while time.monotonic() < end:
            for name, states in (await connection_counts(conn)).items():
                entry = peak.setdefault(name, {"total": 0, "active": 0, "idle_in_transaction": 0})
                entry["total"] = max(entry["total"], sum(states.values()))
                entry["active"] = max(entry["active"], states.get("active", 0))
                entry["idle_in_transaction"] = max(
                    entry["idle_in_transaction"], states.get("idle in transaction", 0)
                )
            await asyncio.sleep(every)
    finally:
        await conn.close()
    return peak


async def commits(url: str) -> int:
    async with connected(url) as conn:
        await conn.execute("SELECT pg_stat_force_next_flush()")
        value: int = await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
    return value
