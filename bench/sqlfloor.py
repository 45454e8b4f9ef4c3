"""The SQL floor: pgbench (the one pgserver ships, so a fresh machine has it) running the
statements the services run for one operation, read from their queries.sql, with as many
clients as the RPC load has workers.

A script is a list of statements, each on its own as the services send them (every use case
on these paths is one statement, atomic by itself: no BEGIN/COMMIT); each names its query and
gives an SQL expression for each `$n`. Order ids are made in the script from
the client id and a random number, so no statement is added; the address the claim returns
is kept with `\\aset` for the statements that need it. pgbench runs in prepared mode, as
asyncpg does. Everything above SQL is left out, on purpose.

Should an allocation still come back without a wallet under concurrency (allocate_wallet
retries a missed claim first), it queues the order and `address` is empty: the release then
takes the order out of the queue, and the caller counts such misses from the rows the claims
wrote.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import os
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.sql import load_queries

POOL = "wallet_pool_service"
ORDERS = "order_service"

# A fresh order id per script run: the client id and a random 62-bit number, as a uuid.
ORDER_ID = "(lpad(to_hex(:client_id::bigint), 16, '0') || lpad(to_hex(:r::bigint), 16, '0'))::uuid"
NETWORK = ":network"
ADDRESS = ":address"  # set by \aset from allocate_wallet's address

# Values the services pass as parameters; given to pgbench with -D.
DEFINES = {
    "network": "ETH",
    "amount": "1.5",
    "client": "client",
    "operator": "operator",
    "cooldown": "0",
    "lease": "10",
}


@dataclass(frozen=True)
class Statement:
    package: str
    query: str
    params: tuple[str, ...] = ()
    gset: bool = False


def _pool(query: str, *params: str, gset: bool = False) -> Statement:
    return Statement(POOL, query, params, gset)


def _orders(query: str, *params: str) -> Statement:
    return Statement(ORDERS, query, params)


# These mirror the services' code paths (WalletPoolManager, OrderManager): when those change,
# change these. `commits` below is checked against what the services commit per operation.

# allocate_wallet for an order that holds nothing, with a free wallet: one call.
POOL_ALLOCATE = _pool("allocate_wallet", ORDER_ID, NETWORK, gset=True)
# release_wallet of a held wallet with nobody waiting: one call, then one hand-off (a
# statement on its own, after the commit).
POOL_RELEASE = _pool("release_wallet", ORDER_ID, ADDRESS, ":cooldown", "now()")
POOL_HAND_OFF = _pool("hand_off_waiting", NETWORK)

CLAIM_CYCLE: tuple[Statement, ...] = (POOL_ALLOCATE, POOL_RELEASE, POOL_HAND_OFF)

# CreateOrder, UpdateOrderStatus PROCESSING, UpdateOrderStatus COMPLETED, with the pool's
# statements where the order service calls the pool.
LIFECYCLE: tuple[Statement, ...] = (
    _orders("create_order", ORDER_ID, NETWORK, ":amount", "NULL", ":client"),
    POOL_ALLOCATE,
    # CreateOrder answers with the row set_wallet returns (no read after it).
    _orders("set_wallet", ORDER_ID, ADDRESS),
    # A status with one possible predecessor is set from it at once (compare-and-set).
    _orders("change_status", ORDER_ID, "'PENDING'", "'PROCESSING'", "''", ":operator", "NULL"),
    _orders("change_status", ORDER_ID, "'PROCESSING'", "'COMPLETED'", "''", ":operator", ":lease"),
    POOL_RELEASE,
    POOL_HAND_OFF,
    _orders("mark_release_done", ORDER_ID),
)

_PARAM = re.compile(r"\$(\d+)")


def _value(params: tuple[str, ...], match: re.Match[str]) -> str:
    return params[int(match.group(1)) - 1]


def _query(queries: dict[str, dict[str, str]], statement: Statement) -> str:
    sql = queries[statement.package].get(statement.query)
    if sql is None:
        raise LookupError(
            f"{statement.package}/queries.sql has no query {statement.query!r} any more: "
            "bench/sqlfloor.py must follow the service's code paths"
        )
    return sql


def render(statements: Sequence[Statement]) -> str:
    """The pgbench script for one operation."""
    queries = {POOL: load_queries(POOL), ORDERS: load_queries(ORDERS)}
    lines = ["\\set r random(1, 4611686018427387903)"]
    for statement in statements:
        sql = _query(queries, statement)
        used = {int(n) for n in _PARAM.findall(sql)}
        if used != set(range(1, len(statement.params) + 1)):
            raise ValueError(
                f"{statement.package}.{statement.query} takes ${sorted(used)}, "
                f"the floor gives {len(statement.params)} values"
            )
        sql = _PARAM.sub(functools.partial(_value, statement.params), sql)
        lines.append(f"{sql} \\aset" if statement.gset else f"{sql};")
    return "\n".join(lines) + "\n"


def commits(statements: Sequence[Statement]) -> int:
    """Transactions committed per operation: each statement is its own."""
    return len(statements)


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
    seconds: float
    tps: float
    transactions: int
    all_transactions: int  # the warm-up's too
    latencies: list[float]  # seconds, one per script run in the measured run
    cpu_cores: float  # pgbench's own CPU use during the measured run

    @property
    def throughput(self) -> float:
        return self.tps


_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)
_PROCESSED = re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE)


async def _pgbench(
    url: str, script: Path, clients: int, seconds: int, log_prefix: Path | None
) -> str:
    args = [
        str(pgbench_path()),
        "--no-vacuum",
        "--protocol=prepared",
        f"--client={clients}",
        f"--jobs={min(clients, 2)}",
        f"--time={seconds}",
        f"--file={script}",
    ]
    for name, value in DEFINES.items():
        args.append(f"--define={name}={value}")
    if log_prefix is not None:
        args += ["--log", f"--log-prefix={log_prefix}"]
    args.append(url)
    process = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=script.parent,
    )
    out, err = await process.communicate()
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    if process.returncode != 0 or "aborted" in stderr:
        raise RuntimeError(f"pgbench failed ({process.returncode}):\n{stderr[-3000:]}")
    return stdout


def _logged_latencies(workdir: Path) -> list[float]:
    """Seconds per script run, from pgbench's per-transaction logs (the third field, µs)."""
    latencies: list[float] = []
    for log in workdir.glob("log.*"):
        for line in log.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3:
                latencies.append(int(fields[2]) / 1_000_000)
    return latencies


async def run_pgbench(
    url: str,
    statements: Sequence[Statement],
    clients: int,
    warmup_seconds: float,
    duration_seconds: float,
) -> PgbenchResult:
    """A warm-up run, then the measured run with one latency per script run."""
    with tempfile.TemporaryDirectory(prefix="bench-pgbench-") as tmp:
        workdir = Path(tmp)
        script = workdir / "operation.sql"
        script.write_text(render(statements))
        warmup_transactions = 0
        if warmup_seconds > 0:
            warmup = await _pgbench(url, script, clients, max(1, round(warmup_seconds)), None)
            counted = _PROCESSED.search(warmup)
            warmup_transactions = int(counted.group(1)) if counted else 0
        seconds = max(1, round(duration_seconds))
        started, cpu_before = time.monotonic(), os.times()
        stdout = await _pgbench(url, script, clients, seconds, workdir / "log")
        elapsed, cpu_after = time.monotonic() - started, os.times()
        tps_match, processed = _TPS.search(stdout), _PROCESSED.search(stdout)
        if tps_match is None or processed is None:
            raise RuntimeError(f"unexpected pgbench output:\n{stdout}")
        latencies = await asyncio.to_thread(_logged_latencies, workdir)
    return PgbenchResult(
        clients=clients,
        seconds=min(float(seconds), elapsed),
        tps=float(tps_match.group(1)),
        transactions=int(processed.group(1)),
        all_transactions=warmup_transactions + int(processed.group(1)),
        latencies=latencies,
        # pgbench is this process's only child that ends meanwhile.
        cpu_cores=(
            cpu_after.children_user
            + cpu_after.children_system
            - cpu_before.children_user
            - cpu_before.children_system
        )
        / elapsed,
    )
