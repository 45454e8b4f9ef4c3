"""The SQL the services send per operation, from the log of a traced run (bench/README.md:
the SQL floor). It reads the embedded server's log file, so not with DATABASE_URL.
`python -m bench.trace` prints what the services send today, as the floor replays it.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from bench.loadgen import CYCLE, LoadJob, Target, run_load
from bench.stack import TOKENS, BenchServer, connected, start_services
from bench.system import commits
from tests.databases import ROOT

_HEADER = re.compile(r"^\S+ \S+ \S+ \[(\d+)\] (LOG|DETAIL):  (.*)$")
_STATEMENT = re.compile(r"(?:statement|execute [^:]*): (.*)", re.S)
_PARAM = re.compile(r"\$\d+ = (NULL|'(?:[^']|'')*')")


@dataclass
class Entry:
    pid: str
    sql: str
    params: list[str | None] = field(default_factory=list)


@dataclass
class Trace:
    operations: dict[str, str]  # order id -> the wallet address it got
    busy: list[Entry]  # logged while operating
    rest: list[Entry]  # logged while resting afterwards
    seconds: tuple[float, float]  # how long each
    count: int  # operations made
    commits: float  # per operation, as pg_stat_database counts them, less the background's

    @property
    def background(self) -> float:
        """Transactions a second at rest: a statement alone, or BEGIN to COMMIT."""
        blocks: set[str] = set()
        transactions = 0
        for entry in self.rest:
            keyword = entry.sql.strip().rstrip(";").upper()
            transactions += entry.pid not in blocks and keyword != "ROLLBACK"
            if keyword in ("BEGIN", "START TRANSACTION"):
                blocks.add(entry.pid)
            elif keyword in ("COMMIT", "ROLLBACK", "END"):
                blocks.discard(entry.pid)
        return transactions / self.seconds[1]

    def per_operation(self) -> dict[str, float]:
        """Each statement's count per operation, beyond what the background loops send."""
        busy, rest = Counter(e.sql for e in self.busy), Counter(e.sql for e in self.rest)
        scale = self.seconds[0] / self.seconds[1]
        counts = {sql: n - rest[sql] * scale for sql, n in busy.items()}
        return {sql: n / max(1, self.count) for sql, n in counts.items() if n > 0}


def parse_log(text: str) -> list[Entry]:
    entries: list[Entry] = []
    last: dict[str, Entry] = {}
    current: Entry | None = None
    for line in text.splitlines():
        if line.startswith("\t"):
            if current is not None:
                current.sql += "\n" + line[1:]
            continue
        current = None
        header = _HEADER.match(line)
        if header is None:
            continue
        pid, kind, message = header.groups()
        statement = _STATEMENT.match(message)
        if kind == "LOG" and statement:
            current = last[pid] = Entry(pid, statement.group(1))
            entries.append(current)
        elif kind == "DETAIL" and message.startswith("parameters:") and pid in last:
            last[pid].params = [
                None if v == "NULL" else v[1:-1].replace("''", "'") for v in _PARAM.findall(message)
            ]
    return entries


def log_file() -> Path:
    if os.environ.get("DATABASE_URL"):
        raise RuntimeError("the SQL floor reads the embedded server's log: unset DATABASE_URL")
    directory = os.environ.get("BENCH_PG_DIR", "").strip() or ROOT / ".data" / "bench-postgres"
    return Path(directory) / "log"


async def _set_logging(server: BenchServer, database: str, on: bool) -> None:
    name = urlsplit(database).path.lstrip("/")
    setting = "SET log_statement = 'all'" if on else "RESET log_statement"
    async with connected(server.factory.server_url) as admin:
        await admin.execute(f'ALTER DATABASE "{name}" {setting}')


def _size(log: Path) -> int:
    return log.stat().st_size


async def _assignments(url: str) -> dict[str, str]:
    """Order id -> the address it was assigned."""
    async with connected(url) as conn:
        rows = await conn.fetch("SELECT order_id::text, address FROM wallet_pool.assignments")
    return {r["order_id"]: r["address"] for r in rows}


async def _traced(url: str, log: Path, job: LoadJob, processes: int) -> Trace:
    known, committed = await _assignments(url), await commits(url)
    offset, started = _size(log), time.monotonic()
    result = await run_load(job, processes)
    await asyncio.sleep(0.5)  # what the operations set off (the sequencer's runs)
    middle, ended = _size(log), time.monotonic()
    # At rest as long at least, and until every backend has reported its commits (an idle
    # one within 10 s).
    await asyncio.sleep(max(ended - started, 11.0))
    data = await asyncio.to_thread(log.read_bytes)
    committed = await commits(url) - committed
    seconds = (ended - started, time.monotonic() - ended)
    operations = {k: v for k, v in (await _assignments(url)).items() if k not in known}
    busy, rest = (
        parse_log(b.decode(errors="replace")) for b in (data[offset:middle], data[middle:])
    )
    traced = Trace(operations, busy, rest, seconds, result.total, 0.0)
    traced.commits = (committed - traced.background * sum(seconds)) / max(1, result.total)
    return traced


async def capture(
    server: BenchServer, database: str, log_dir: Path, jobs: dict[str, int], processes: int
) -> dict[str, Trace]:
    """A trace per workload of `jobs` (workload -> concurrency), 300 operations each."""
    log = log_file()
    await _set_logging(server, database, True)
    stack = await start_services(database, log_dir)
    try:
        await asyncio.sleep(1.0)  # the background loops' first round
        target = Target(stack.order_addr, stack.pool_addr, TOKENS)
        return {
            w: await _traced(database, log, LoadJob(w, target, c, total_ops=300), processes)
            for w, c in jobs.items()
        }
    finally:
        await stack.close()
        await _set_logging(server, database, False)


async def _main() -> None:
    from bench import sqlfloor
    from bench.loadgen import LIFECYCLE
    from bench.stack import add_wallets

    server = await BenchServer.start()
    try:
        database = await server.factory.create()
        await add_wallets(database, "ETH", 1, 1000)
        jobs = {CYCLE: 8, LIFECYCLE: 8}
        traces = await capture(server, database, Path("/tmp/bench-trace"), jobs, 2)
        for workload, trace in traces.items():
            script = await sqlfloor.Script.build(database, trace)
            print(f"\n{workload}: {script.commits:.2f} statements per operation")
            print(script.text)
    finally:
        await server.close()


if __name__ == "__main__":
    asyncio.run(_main())
