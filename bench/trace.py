"""The SQL the services send per operation, as PostgreSQL logs it: the source of the SQL floor.

`capture` starts both services on a database with `log_statement = 'all'`, makes operations
(AllocateWallet+ReleaseWallet cycles, or order lifecycles) at the given concurrency, then
lets them rest as long: a statement's count per operation is its count while operating less
its count at rest (the background loops). Each operation's order id and wallet address are
known from its answers, so its statements' parameters can be told apart from constants.
It reads the embedded server's log file, so not with DATABASE_URL.

`python -m bench.trace` prints what the services send today, as the floor replays it.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from bench.loadgen import CYCLE, Client, Target
from bench.stack import TOKENS, BenchServer, start_services
from exchange.order.v1 import order_service_pb2 as order_pb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as pool_pb
from tests.databases import ROOT

_HEADER = re.compile(r"^\S+ \S+ \S+ \[(\d+)\] (LOG|DETAIL):  (.*)$")
_STATEMENT = re.compile(r"(?:statement|execute [^:]*): (.*)", re.S)
_PARAM = re.compile(r"\$\d+ = (NULL|'(?:[^']|'')*')")


@dataclass
class Entry:
    sql: str
    params: list[str | None] = field(default_factory=list)


@dataclass
class Trace:
    operations: dict[str, str]  # order id -> the wallet address it got
    busy: list[Entry]  # logged while operating
    rest: list[Entry]  # logged while resting as long
    seconds: float  # how long each

    def per_operation(self) -> dict[str, float]:
        """Each statement's count per operation, beyond what the background loops send."""
        busy, rest = Counter(e.sql for e in self.busy), Counter(e.sql for e in self.rest)
        ops = max(1, len(self.operations))
        return {sql: (n - rest[sql]) / ops for sql, n in busy.items() if n > rest[sql]}


def parse_log(text: str) -> list[Entry]:
    """Statements in the order logged, with the parameters their DETAIL line gave."""
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
            current = last[pid] = Entry(statement.group(1))
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
    admin = await asyncpg.connect(server.factory.server_url)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" {setting}')
    finally:
        await admin.close()


async def _operate(client: Client, workload: str) -> tuple[str, str]:
    """One operation; its order id and the wallet address it got."""
    if workload == CYCLE:
        order_id = str(uuid.uuid4())
        allocated = await client.pool.AllocateWallet(
            pool_pb.AllocateWalletRequest(order_id=order_id, network="ETH"),
            metadata=client.service,
        )
        await client.pool.ReleaseWallet(
            pool_pb.ReleaseWalletRequest(order_id=order_id, address=allocated.address),
            metadata=client.service,
        )
        return order_id, allocated.address
    order = await client.create_order("ETH")
    for status in (order_pb.ORDER_STATUS_PROCESSING, order_pb.ORDER_STATUS_COMPLETED):
        await client.set_status(order.id, status)
    return order.id, order.wallet_address


def _size(log: Path) -> int:
    return log.stat().st_size


async def _traced(client: Client, log: Path, workload: str, concurrency: int, ops: int) -> Trace:
    done: dict[str, str] = {}
    slots = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with slots:
            order_id, address = await _operate(client, workload)
            done[order_id] = address

    offset, started = _size(log), time.monotonic()
    await asyncio.gather(*(one() for _ in range(ops)))
    seconds = time.monotonic() - started
    await asyncio.sleep(0.5)  # what the operations set off (the sequencer's runs)
    middle = _size(log)
    await asyncio.sleep(seconds)
    data = await asyncio.to_thread(log.read_bytes)
    busy, rest = (data[offset:middle], data[middle:])
    busy_entries, rest_entries = (parse_log(b.decode(errors="replace")) for b in (busy, rest))
    return Trace(done, busy_entries, rest_entries, seconds)


async def capture(
    server: BenchServer, database: str, log_dir: Path, jobs: dict[str, int], operations: int
) -> dict[str, Trace]:
    """A trace per workload of `jobs` (workload -> concurrency), `operations` each, on
    `database` (its wallets put in already); the database logs nothing afterwards."""
    log = log_file()
    await _set_logging(server, database, True)
    stack = await start_services(database, log_dir)
    client = Client(Target(stack.order_addr, stack.pool_addr, TOKENS))
    try:
        await client.ready()
        await asyncio.sleep(1.0)  # the background loops' first round
        return {w: await _traced(client, log, w, c, operations) for w, c in jobs.items()}
    finally:
        await client.close()
        await stack.close()
        await _set_logging(server, database, False)


async def _main() -> None:
    from bench import sqlfloor
    from bench.loadgen import LIFECYCLE
    from bench.stack import add_wallets

    server = await BenchServer.start()
    try:
        database = await server.database()
        await add_wallets(database, "ETH", 1, 1000)
        jobs = {CYCLE: 8, LIFECYCLE: 8}
        traces = await capture(server, database, Path("/tmp/bench-trace"), jobs, 100)
        for workload, trace in traces.items():
            script = await sqlfloor.Script.build(database, trace)
            print(f"\n{workload}: {script.commits:.2f} statements per operation")
            print(script.text)
    finally:
        await server.close()


if __name__ == "__main__":
    asyncio.run(_main())
