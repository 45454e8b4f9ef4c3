"""The SQL floor: pgbench (pgserver's) replaying a trace's statements (bench/README.md). Only
what belongs to one operation varies: its order id, the address its allocation returned
(`\\aset`) and timestamps (`now()`)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.stack import connected
from bench.trace import Entry, Trace

# A fresh order id per script run: the client id and a random 62-bit number, as a uuid.
ORDER_ID = "(lpad(to_hex(:client_id::bigint), 16, '0') || lpad(to_hex(:r::bigint), 16, '0'))::uuid"
_PARAM = re.compile(r"\$(\d+)")
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_LEAST = 0.02  # statements sent less often per operation than this are left out
# Transaction control is left out: the floor sends each statement alone, in an order of its
# own, so a BEGIN and its COMMIT (drawn apart, with their own counts) would not pair up.
_CONTROL = re.compile(r"^\s*(BEGIN|START TRANSACTION|COMMIT|END|ROLLBACK)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Script:
    text: str
    commits: float  # transactions per operation: every statement is its own
    per_operation: dict[str, float]
    background: float  # transactions a second the services committed at rest
    traced_commits: float  # per operation while traced, as the database counted them

    @classmethod
    async def build(cls, url: str, trace: Trace) -> Script:
        counts = {
            sql: round(n, 2)
            for sql, n in trace.per_operation().items()
            if n >= _LEAST and not _CONTROL.match(sql)
        }
        if not counts:
            raise RuntimeError("the trace has no statement sent per operation")
        examples = _examples(trace, counts)
        lines = ["\\set r random(1, 4611686018427387903)"]
        async with connected(url) as conn:
            for n, (sql, sent) in enumerate(examples.items()):
                rendered = [await _render(conn, e, trace.operations) for e in sent]
                lines += [rendered[i % len(rendered)] for i in range(int(counts[sql]))]
                part = round(100 * (counts[sql] % 1))
                if part:
                    lines += [f"\\set u{n} random(1, 100)", f"\\if :u{n} <= {part}"]
                    lines += [rendered[-1], "\\endif"]
        commits, background = round(sum(counts.values()), 2), round(trace.background, 2)
        text = "\n".join(lines) + "\n"
        return cls(text, commits, counts, background, round(trace.commits, 2))


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _examples(trace: Trace, counts: dict[str, float]) -> dict[str, list[Entry]]:
    """Each statement as the operation most statements name alone sent it (a coalesced
    run of the sequencer names several); what names none, as first sent."""
    named = [
        {u for v in e.params for u in _UUID.findall(v or "")} & trace.operations.keys()
        for e in trace.busy
    ]
    alone = Counter(next(iter(ids)) for ids in named if len(ids) == 1)
    chosen = alone.most_common(1)[0][0] if alone else ""
    examples: dict[str, list[Entry]] = {}
    for entry, ids in zip(trace.busy, named, strict=True):
        mine = ids == {chosen}
        if entry.sql in counts and (mine or (not ids and entry.sql not in examples)):
            examples.setdefault(entry.sql, []).append(entry)
    missing = counts.keys() - examples.keys()
    for entry in trace.busy:  # sent by every operation, but coalesced for this one
        if entry.sql in missing and entry.sql not in examples:
            examples[entry.sql] = [entry]
    return examples


async def _render(conn: Any, entry: Entry, operations: dict[str, str]) -> str:
    sql = entry.sql
    statement = await conn.prepare(sql)
    oids = [t.oid for t in statement.get_parameters()]
    types = await conn.fetchval(
        "SELECT array_agg(format_type(o, NULL)) FROM unnest($1::oid[]) o", oids
    )
    if len(entry.params) != len(oids):
        raise RuntimeError(f"the log gave {len(entry.params)} parameters for {len(oids)}: {sql}")
    values = [_value(v, t, operations) for v, t in zip(entry.params, types or [], strict=True)]
    rendered = _PARAM.sub(lambda m: values[int(m.group(1)) - 1], sql)
    names = [a.name for a in statement.get_attributes()]
    # The address an allocation returns, for the statements after it that name it.
    mine = any(v in operations for v in entry.params)
    keep = mine and "address" in names and all(_NAME.match(name) for name in names)
    return f"{rendered} \\aset" if keep else f"{rendered};"


def _value(value: str | None, type_: str, operations: dict[str, str]) -> str:
    if value is None:
        return f"NULL::{type_}"
    if value in operations:
        return f"({ORDER_ID})::{type_}"
    if value in operations.values():
        return f":address::{type_}"
    if type_.startswith("timestamp"):
        return f"now()::{type_}"
    literal = "'" + value.replace("'", "''") + "'"
    named = [order_id for order_id in operations if order_id in value]
    for order_id in named:  # an array of order ids: the sequencer's
        literal = literal.replace(order_id, "@order@")
    if named:
        return f"replace({literal}, '@order@', ({ORDER_ID})::text)::{type_}"
    return f"{literal}::{type_}"


def pgbench_path() -> Path:
    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        raise RuntimeError("pgserver is not installed (make setup installs it)")
    path = Path(spec.origin).parent / "pginstall" / "bin" / "pgbench"
    if not path.exists():
        raise RuntimeError(f"pgbench not found at {path}")
    return path


@dataclass(frozen=True)
class PgbenchResult:
    clients: int
    tps: float
    transactions: int
    all_transactions: int  # the warm-up's too
    latencies: list[float]  # seconds, one per script run in the measured run
    cpu_cores: float  # pgbench's own CPU use during the measured run


_PROCESSED = re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE)
_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)


async def _pgbench(url: str, script: Path, clients: int, seconds: float, log: bool) -> str:
    args = ["--no-vacuum", "--protocol=prepared", f"--client={clients}", f"--file={script}"]
    args += [f"--jobs={min(clients, 2)}", f"--time={max(1, round(seconds))}", url]
    process = await asyncio.create_subprocess_exec(
        str(pgbench_path()),
        *args,
        *(["--log", f"--log-prefix={script.parent / 'log'}"] if log else []),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=script.parent,
    )
    out, err = await process.communicate()
    stderr = err.decode(errors="replace")
    if process.returncode != 0 or "aborted" in stderr:
        raise RuntimeError(f"pgbench failed ({process.returncode}):\n{stderr[-3000:]}")
    return out.decode(errors="replace")


def _logged_latencies(workdir: Path) -> list[float]:
    """Seconds per script run, from pgbench's per-transaction logs (the third field, µs)."""
    lines = (line.split() for log in workdir.glob("log.*") for line in log.open())
    return [int(fields[2]) / 1_000_000 for fields in lines if len(fields) >= 3]


async def run_pgbench(
    url: str, script_text: str, clients: int, warmup_seconds: float, duration_seconds: float
) -> PgbenchResult:
    with tempfile.TemporaryDirectory(prefix="bench-pgbench-") as tmp:
        script = Path(tmp) / "operation.sql"
        script.write_text(script_text)
        warmup = await _pgbench(url, script, clients, warmup_seconds, False)
        started, cpu_before = time.monotonic(), os.times()
        stdout = await _pgbench(url, script, clients, duration_seconds, True)
        elapsed, cpu_after = time.monotonic() - started, os.times()
        tps, processed, warmed = (
            r.search(t) for r, t in ((_TPS, stdout), (_PROCESSED, stdout), (_PROCESSED, warmup))
        )
        if tps is None or processed is None:
            raise RuntimeError(f"unexpected pgbench output:\n{stdout}")
        latencies = await asyncio.to_thread(_logged_latencies, Path(tmp))
    # pgbench is this process's only child that ends meanwhile.
    cpu = sum(cpu_after[2:4]) - sum(cpu_before[2:4])
    return PgbenchResult(
        clients=clients,
        tps=float(tps.group(1)),
        transactions=int(processed.group(1)),
        all_transactions=int(processed.group(1)) + (int(warmed.group(1)) if warmed else 0),
        latencies=latencies,
        cpu_cores=cpu / elapsed,
    )
