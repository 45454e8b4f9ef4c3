"""Chaos: hundreds of concurrent order lifecycles over gRPC while the order service and the
wallet pool service are SIGKILLed and PostgreSQL is restarted (fast, or crashed) at random
moments. At the end, with everything back, the six invariants must hold
(`tests.invariants.check_all`) and no call may have been answered INTERNAL or UNKNOWN.

The harness runs its own PostgreSQL cluster from the binaries the `pgserver` package ships (a
dev dependency), so it works wherever `make test` does and can restart the server at will.

    python -m tests.chaos --seconds 300 [--seed N]      # or: make chaos CHAOS_SECONDS=300

The seed (printed; CHAOS_SEED) fixes every random choice of the run: which lifecycle each
order follows, and when and what the chaos strikes. Timing still varies between runs, so a
replay reproduces the scenario, not every interleaving.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from exchange.order.v1 import order_service_pb2 as opb
from exchange.order.v1 import order_service_pb2_grpc as order_grpc
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pool_grpc
from scripts.processes import ServiceProcess
from shared.db import Connection
from tests.e2e import stack
from tests.e2e.stack import CLIENT_TOKEN, OPERATOR_TOKEN, bearer
from tests.invariants import check_all, no_address_held_by_two_live_orders

# Answers a client must expect while something is down; it retries or gives up.
TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# Answers that are bugs whatever happens around them.
FORBIDDEN = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})
_STATUS_NAMES: dict[int, str] = {
    opb.ORDER_STATUS_PENDING: "PENDING",
    opb.ORDER_STATUS_PROCESSING: "PROCESSING",
    opb.ORDER_STATUS_COMPLETED: "COMPLETED",
    opb.ORDER_STATUS_CANCELLED: "CANCELLED",
}
_RANK = {"PENDING": 0, "PROCESSING": 1, "COMPLETED": 2, "CANCELLED": 2}
# Reconnect fast once a service is back (gRPC's default backoff grows to two minutes).
_CLIENT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def eth_address(rng: random.Random) -> str:
    return "0x" + rng.randbytes(20).hex()


def service_env(database_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The suite's service environment without metrics ports, with a quicker hand-off sweep."""
    quiet = {
        "ORDER_METRICS_ADDR": "off",
        "WALLET_POOL_METRICS_ADDR": "off",
        "HAND_OFF_SWEEP_SECONDS": "0.5",
    }
    return stack.service_env(database_url, extra={**quiet, **(extra or {})})


async def no_work_done_twice(conn: Connection) -> list[str]:
    """What replicas, restarts and retries must never double: a wallet given to an order
    (each order is served at most once), an order's creation, a status change, an expiry."""
    violations = [
        f"order {r['order_id']} was assigned a wallet {r['n']} times"
        for r in await conn.fetch(
            """SELECT order_id, count(*) AS n FROM wallet_pool.assignments
               GROUP BY order_id HAVING count(*) > 1"""
        )
    ]
    violations += [
        f"order {r['order_id']} has {r['created']} creation rows and history "
        f"{r['statuses']} by {r['actors']}"
        for r in await conn.fetch(
            """SELECT order_id, count(*) FILTER (WHERE from_status IS NULL) AS created,
                      array_agg(to_status ORDER BY id) AS statuses,
                      array_agg(actor ORDER BY id) AS actors
               FROM orders.status_history GROUP BY order_id
               HAVING count(*) FILTER (WHERE from_status IS NULL) <> 1
                   OR count(*) <> count(DISTINCT to_status)"""
        )
    ]
    violations += [
        f"order {r['order_id']} was expired {r['n']} times"
        for r in await conn.fetch(
            """SELECT order_id, count(*) AS n FROM orders.status_history
               WHERE actor = 'system' AND reason = 'expired'
               GROUP BY order_id HAVING count(*) > 1"""
        )
    ]
    return violations


async def final_state(conn: Connection) -> str:
    """Where the orders, the queue and the releases ended, in one line."""
    statuses = {
        r["status"]: r["n"]
        for r in await conn.fetch("SELECT status, count(*) AS n FROM orders.orders GROUP BY status")
    }
    expired = await conn.fetchval(
        """SELECT count(*) FROM orders.status_history
           WHERE actor = 'system' AND reason = 'expired'"""
    )
    queued = await conn.fetchval("SELECT count(*) FROM wallet_pool.queue")
    assignments = await conn.fetchval("SELECT count(*) FROM wallet_pool.assignments")
    retried = await conn.fetchrow(
        """SELECT count(*) FILTER (WHERE attempts > 1) AS n, coalesce(max(attempts), 0) AS most
           FROM orders.pending_releases"""
    )
    assert retried is not None
    orders = ", ".join(f"{status} {n}" for status, n in sorted(statuses.items()))
    return (
        f"orders {orders} ({expired} expired); {queued} waiting in the queue; "
        f"{assignments} wallet assignments; {retried['n']} releases needed more than one "
        f"attempt (at most {retried['most']})"
    )


def log_problems(text: str) -> list[str]:
    """Log lines that are bugs whatever the chaos did: errors and unhandled exceptions
    (an INTERNAL answer, a background loop step failing for another reason than an outage)."""
    found = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            if line.strip() and not line.startswith((" ", "\t")):
                found.append(line)  # a traceback or a crash outside the JSON logger
            continue
        if entry.get("level") in ("error", "critical") or entry.get("event") in (
            "unhandled error",
            "loop step failed",
        ):
            found.append(line)
    return found


class PostgresCluster:
    """A PostgreSQL cluster of the test's own, from pgserver's binaries, on a free TCP port
    of 127.0.0.1 with trust authentication, in a temporary directory removed on close."""

    def __init__(self) -> None:
        with warnings.catch_warnings():
            # pgserver's lock file lives in the runtime dir; falling back to /tmp is fine.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
            import pgserver

        self.bin = Path(pgserver.__file__).parent / "pginstall" / "bin"
        self.root = Path(tempfile.mkdtemp(prefix="exchange-chaos-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = free_port()
        # PostgreSQL refuses to run as root; run it as the user pgserver itself uses then.
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = _as_system_user("pgserver", self.bin, self.root)
        # pg_ctl detaches the server from this process: never leave it behind.
        atexit.register(self._stop_at_exit)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def _run(self, *args: str) -> None:
        output = self.root / "pg_ctl.out"

        def run() -> None:
            # Never a pipe: the server inherits pg_ctl's output and would keep it open.
            with output.open("ab") as out:
                subprocess.run(
                    [*self._as_user, str(self.bin / args[0]), *args[1:]],
                    check=True,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    cwd=self.root,
                    timeout=90,
                )

        try:
            await asyncio.to_thread(run)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise RuntimeError(f"{args[0]} failed: {exc}\n{self.logs()[-3000:]}") from exc

    async def start(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            await self._run(
                "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                "--encoding=UTF8", "--no-locale", "--no-sync",
            )  # fmt: skip
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
            # Only processes crash here, never the machine: no need to wait for the disk.
            "-c fsync=off -c max_connections=200"
        )
        await self._run(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log),
            "-o", options,
        )  # fmt: skip

    async def restart(self) -> None:
        """A clean restart: clients are disconnected, the server comes back at once."""
        await self._run(
            "pg_ctl", "restart", "-w", "-t", "60", "-m", "fast", "-D", str(self.data),
            "-l", str(self.log),
        )  # fmt: skip

    async def crash(self) -> None:
        """Stop without a shutdown checkpoint (as a crash would); `start` recovers from WAL."""
        await self._run("pg_ctl", "stop", "-w", "-m", "immediate", "-D", str(self.data))

    async def stop(self) -> None:
        with contextlib.suppress(RuntimeError):
            await self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data))

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            await self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        atexit.unregister(self._stop_at_exit)

    def _stop_at_exit(self) -> None:
        if (self.data / "postmaster.pid").exists():
            pg_ctl = [str(self.bin / "pg_ctl"), "stop", "-m", "immediate", "-D", str(self.data)]
            subprocess.run([*self._as_user, *pg_ctl], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


def _as_system_user(user: str, bin_dir: Path, root: Path) -> list[str]:
    """What pgserver does before it runs PostgreSQL as root: the user exists and can reach
    the binaries; here it also owns the cluster's directory. Returns a command prefix that
    runs a program as that user.

    Not `subprocess.run(user=...)`: that forks this process, whose gRPC threads make the
    child crash now and then (gRPC's fork handlers); a plain spawn of a small trampoline
    does not fork them."""
    import pwd

    from pgserver import utils

    helpers: Any = utils
    helpers.ensure_user_exists(user)
    helpers.ensure_prefix_permissions(bin_dir)
    helpers.ensure_folder_permissions(bin_dir, 0o555)
    helpers.ensure_folder_permissions(bin_dir.parent / "lib", 0o444)
    helpers.ensure_folder_permissions(bin_dir.parent / "share", 0o444)
    entry = pwd.getpwnam(user)
    os.chown(root, entry.pw_uid, entry.pw_gid)
    trampoline = (
        "import os, sys; os.setgroups([]); "
        f"os.setgid({entry.pw_gid}); os.setuid({entry.pw_uid}); "
        "os.execv(sys.argv[1], sys.argv[1:])"
    )
    return [sys.executable, "-c", trampoline]


@dataclass
class ChaosReport:
    seed: int
    seconds: float
    orders: int = 0
    # kind of call -> status code name -> how many answers
    calls: dict[str, Counter[str]] = field(default_factory=dict)
    kills: Counter[str] = field(default_factory=Counter)
    postgres_restarts: Counter[str] = field(default_factory=Counter)
    events: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    log_problems: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    log_dir: Path | None = None
    # (phase, seconds it took)
    phases: list[tuple[str, float]] = field(default_factory=list)
    final_state: str = ""

    def count(self, kind: str, code: grpc.StatusCode) -> None:
        self.calls.setdefault(kind, Counter())[code.name] += 1

    @property
    def codes(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for by_code in self.calls.values():
            total.update(by_code)
        return total

    def render(self) -> str:
        lines = [
            f"chaos report (seed {self.seed}, {self.seconds:.0f} s of chaos, "
            f"{self.elapsed:.0f} s in all; replay: CHAOS_SEED={self.seed})",
            f"  orders created and acknowledged: {self.orders}",
            "  phases: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.phases),
            "  operations (answers by code):",
        ]
        for kind in sorted(self.calls):
            by_code = self.calls[kind]
            codes = ", ".join(f"{code} {n}" for code, n in by_code.most_common())
            lines.append(f"    {kind:<16} {sum(by_code.values()):>6}  ({codes})")
        kills = ", ".join(f"{name} {n}" for name, n in sorted(self.kills.items())) or "none"
        restarts = ", ".join(f"{how} {n}" for how, n in sorted(self.postgres_restarts.items()))
        lines += [
            f"  SIGKILLs: {kills}",
            f"  PostgreSQL restarts: {restarts or 'none'}",
            "  error codes seen: "
            + (", ".join(f"{c} {n}" for c, n in self.codes.most_common() if c != "OK") or "none"),
            f"  INTERNAL or UNKNOWN answers: {sum(self.codes[c.name] for c in FORBIDDEN)}",
            f"  at the end: {self.final_state or 'not reached'}",
            f"  violations: {len(self.violations)}",
        ]
        lines += [f"    - {v}" for v in self.violations[:50]]
        if len(self.violations) > 50:
            lines.append(f"    ... and {len(self.violations) - 50} more")
        lines.append(f"  error lines in the services' logs: {len(self.log_problems)}")
        lines += [f"    {summarize_log_line(line)}" for line in self.log_problems[:10]]
        if self.log_dir:
            lines.append(f"  service logs: {self.log_dir}")
        return "\n".join(lines)


def summarize_log_line(line: str) -> str:
    """A log line's time, service, event, call and the last line of its exception."""
    try:
        entry = json.loads(line)
    except ValueError:
        return line[:300]
    exception = str(entry.get("exception", "")).strip().splitlines()
    parts = [
        entry.get("time", ""),
        entry.get("service", ""),
        entry.get("event", ""),
        entry.get("method", "") or entry.get("loop", ""),
        exception[-1] if exception else "",
    ]
    return " | ".join(str(part) for part in parts if part)[:400]


class ChaosRun:
    """One run: the cluster, both services, the clients, the chaos, the final check."""

    def __init__(
        self,
        seconds: float,
        seed: int,
        log_dir: Path,
        *,
        workers: int = 24,
        wallets: int = 24,
        ttl_seconds: float = 10,
        cooldown_seconds: float = 0.5,
    ) -> None:
        """`ttl_seconds`: PENDING orders expire after this long (some lifecycles leave
        theirs PENDING); `cooldown_seconds`: released wallets rest this long."""
        self.seconds = seconds
        self.seed = seed
        self.log_dir = log_dir
        self.workers = workers
        self.initial_wallets = wallets
        self.ttl_seconds = ttl_seconds
        self.cooldown_seconds = cooldown_seconds
        self.report = ChaosReport(seed, seconds, log_dir=log_dir)
        self.acknowledged: dict[uuid.UUID, str] = {}
        self._chaos_rng = random.Random(f"{seed}:chaos")
        self._wallet_rng = random.Random(f"{seed}:wallets")
        self._started = time.monotonic()
        self._lifecycles = 0
        self._stop_new = asyncio.Event()
        self._down: set[str] = set()
        self.cluster = PostgresCluster()
        self.processes: dict[str, ServiceProcess] = {}
        self._channels: list[grpc.aio.Channel] = []

    def _now(self) -> str:
        return f"{time.monotonic() - self._started:7.2f}s"

    def _event(self, text: str) -> None:
        self.report.events.append(f"{self._now()} {text}")

    def _violation(self, text: str) -> None:
        recent = "; ".join(self.report.events[-2:]) or "no chaos yet"
        self.report.violations.append(f"[{self._now()}] {text} (recent chaos: {recent})")

    # -- setting up -------------------------------------------------------------------------

    async def _start_services(self) -> None:
        await self.cluster.start()
        admin = await asyncpg.connect(self.cluster.url())
        try:
            await admin.execute("CREATE DATABASE exchange")
        finally:
            await admin.close()
        env = service_env(
            self.cluster.url("exchange"),
            {
                "ORDER_TTL_SECONDS": str(self.ttl_seconds),
                "EXPIRY_CHECK_SECONDS": "0.5",
                "WALLET_COOLDOWN_SECONDS": str(self.cooldown_seconds),
            },
        )
        pool = ServiceProcess("wallet_pool_service", env, self.log_dir / "wallet_pool_service.log")
        pool_port = await pool.start()
        # Restarts reuse the first ports, so that the order service and the clients find
        # the services again.
        pool.env = {**env, "WALLET_POOL_SERVICE_ADDR": f"127.0.0.1:{pool_port}"}
        order_env = {**env, "WALLET_POOL_TARGET": f"127.0.0.1:{pool_port}"}
        order = ServiceProcess("order_service", order_env, self.log_dir / "order_service.log")
        order_port = await order.start()
        order.env = {**order_env, "ORDER_SERVICE_ADDR": f"127.0.0.1:{order_port}"}
        self.processes = {"order_service": order, "wallet_pool_service": pool}
        order_channel = grpc.aio.insecure_channel(f"127.0.0.1:{order_port}", _CLIENT_OPTIONS)
        pool_channel = grpc.aio.insecure_channel(f"127.0.0.1:{pool_port}", _CLIENT_OPTIONS)
        self._channels = [order_channel, pool_channel]
        self.orders = order_grpc.OrderServiceStub(order_channel)
        self.pool = pool_grpc.WalletPoolServiceStub(pool_channel)
        await self._add_wallets(self.initial_wallets)

    async def _close(self) -> None:
        for channel in self._channels:
            await channel.close(None)
        for process in self.processes.values():
            if process.process is not None and process.process.poll() is None:
                with contextlib.suppress(TimeoutError):
                    await process.stop()
        await self.cluster.close()

    # -- calls ------------------------------------------------------------------------------

    async def _call(
        self,
        kind: str,
        call: Callable[[], Awaitable[Any]],
        subject: str = "",
        vetted: frozenset[grpc.StatusCode] = frozenset(),
    ) -> tuple[grpc.StatusCode, Any]:
        """One attempt; every answer is counted. Answers neither transient nor `vetted` (by
        the caller) are violations."""
        try:
            response = await call()
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            self.report.count(kind, code)
            if code not in TRANSIENT and code not in vetted:
                self._violation(f"{kind} {subject} answered {code.name}: {exc.details()}")
            return code, None
        self.report.count(kind, grpc.StatusCode.OK)
        return grpc.StatusCode.OK, response

    async def _retry(
        self,
        kind: str,
        call: Callable[[], Awaitable[Any]],
        subject: str,
        rng: random.Random,
        vetted: frozenset[grpc.StatusCode] = frozenset(),
    ) -> tuple[grpc.StatusCode, Any]:
        """Retry transient failures for a while, as a client would; the last answer."""
        deadline = time.monotonic() + 30
        delay = 0.1
        while True:
            code, response = await self._call(kind, call, subject, vetted)
            if code not in TRANSIENT or time.monotonic() > deadline:
                return code, response
            await asyncio.sleep(delay * rng.uniform(0.5, 1.5))
            delay = min(delay * 2, 1.0)

    async def _add_wallets(self, count: int) -> None:
        addresses = [eth_address(self._wallet_rng) for _ in range(count)]
        request = wpb.AddWalletsRequest(network="ETH", addresses=addresses)
        await self._retry(
            "add_wallets",
            lambda: self.pool.AddWallets(request, metadata=bearer(OPERATOR_TOKEN), timeout=5),
            f"{count} wallets",
            self._wallet_rng,
        )

    async def _update(
        self,
        order_id: str,
        status: opb.OrderStatus.ValueType,
        rng: random.Random,
        reason: str = "",
    ) -> bool:
        """Move the order on (retrying); True once acknowledged."""
        name = _STATUS_NAMES[status]
        request = opb.UpdateOrderStatusRequest(order_id=order_id, status=status, reason=reason)
        # A PENDING order may have expired meanwhile: then FAILED_PRECONDITION is right.
        pending = self.acknowledged[uuid.UUID(order_id)] == "PENDING"
        code, response = await self._retry(
            f"update_{name.lower()}",
            lambda: self.orders.UpdateOrderStatus(
                request, metadata=bearer(OPERATOR_TOKEN), timeout=5
            ),
            order_id,
            rng,
            frozenset({grpc.StatusCode.FAILED_PRECONDITION}) if pending else frozenset(),
        )
        if code is grpc.StatusCode.FAILED_PRECONDITION:
            await self._expect_expired(order_id, name, rng)
            return False
        if response is None:
            return False
        if response.order.status != status:
            self._violation(f"update of {order_id} to {name} answered {response.order.status}")
        self.acknowledged[uuid.UUID(order_id)] = name
        return True

    async def _expect_expired(self, order_id: str, wanted: str, rng: random.Random) -> None:
        """A PENDING order refused a move: only the expiry may have come first."""
        _, response = await self._retry(
            "get_history",
            lambda: self.orders.GetOrderHistory(
                opb.GetOrderHistoryRequest(order_id=order_id),
                metadata=bearer(CLIENT_TOKEN),
                timeout=5,
            ),
            order_id,
            rng,
        )
        if response is None:
            return
        changes = [
            (_STATUS_NAMES.get(c.to_status, ""), c.actor, c.reason) for c in response.changes
        ]
        if ("CANCELLED", "system", "expired") not in changes:
            self._violation(f"{order_id} refused {wanted} but did not expire: {changes}")
        else:
            self.report.count("expired_first", grpc.StatusCode.FAILED_PRECONDITION)

    # -- the workload -----------------------------------------------------------------------

    async def _lifecycle(self, index: int) -> None:
        """create -> (PROCESSING ->) COMPLETED or CANCELLED, or left live (PROCESSING, or
        PENDING until it expires); some creates carry a request_id and are retried (and
        repeated on purpose), the others are tried once."""
        rng = random.Random(f"{self.seed}:order:{index}")
        request_id = f"chaos-{self.seed}-{index}" if rng.random() < 0.7 else ""
        request = opb.CreateOrderRequest(
            network="ETH", amount=f"{rng.randint(1, 9999)}.{rng.randint(0, 99):02d}",
            request_id=request_id,
        )  # fmt: skip

        def create() -> Awaitable[opb.CreateOrderResponse]:
            return self.orders.CreateOrder(request, metadata=bearer(CLIENT_TOKEN), timeout=5)

        if request_id:
            _, created = await self._retry("create", create, request_id, rng)
        else:
            _, created = await self._call("create", create)
        if created is None:
            return
        order_id: str = created.order.id
        self.report.orders += 1
        self.acknowledged.setdefault(uuid.UUID(order_id), "PENDING")
        if request_id and rng.random() < 0.3:
            _, again = await self._retry("create_again", create, request_id, rng)
            if again is not None and again.order.id != order_id:
                self._violation(
                    f"request_id {request_id} gave order {order_id}, then {again.order.id}"
                )
        fate = rng.random()
        await asyncio.sleep(rng.uniform(0, 1.5))
        if fate < 0.45:
            if await self._update(order_id, opb.ORDER_STATUS_PROCESSING, rng):
                await asyncio.sleep(rng.uniform(0, 1.0))
                await self._update(order_id, opb.ORDER_STATUS_COMPLETED, rng, "paid out")
        elif fate < 0.85:
            if rng.random() < 0.5:
                await self._update(order_id, opb.ORDER_STATUS_PROCESSING, rng)
                await asyncio.sleep(rng.uniform(0, 0.5))
            await self._update(order_id, opb.ORDER_STATUS_CANCELLED, rng, "changed mind")
        elif fate < 0.92:
            await self._update(order_id, opb.ORDER_STATUS_PROCESSING, rng)
        await self._read_back(order_id, rng)

    async def _read_back(self, order_id: str, rng: random.Random) -> None:
        """An acknowledged status is never undone: a read shows it or a later one."""
        acknowledged = self.acknowledged[uuid.UUID(order_id)]
        _, response = await self._retry(
            "get",
            lambda: self.orders.GetOrder(
                opb.GetOrderRequest(order_id=order_id), metadata=bearer(CLIENT_TOKEN), timeout=5
            ),
            order_id,
            rng,
        )
        if response is None:
            return
        seen = _STATUS_NAMES.get(response.order.status, str(response.order.status))
        if _RANK.get(seen, -1) < _RANK[acknowledged] or (
            _RANK[acknowledged] == 2 and seen != acknowledged
        ):
            self._violation(f"order {order_id} acknowledged {acknowledged}, read back {seen}")

    async def _worker(self) -> None:
        while not self._stop_new.is_set():
            self._lifecycles += 1
            await self._lifecycle(self._lifecycles)

    async def _operator(self) -> None:
        """Now and then more wallets arrive, which serves waiting orders."""
        while not self._stop_new.is_set():
            await asyncio.sleep(self._wallet_rng.uniform(2, 5))
            await self._add_wallets(self._wallet_rng.randint(1, 4))

    async def _monitor(self) -> None:
        """Invariant 1 must hold at every moment: sample it whenever the database answers."""
        while not self._stop_new.is_set():
            await asyncio.sleep(1.0)
            try:
                conn = await asyncpg.connect(self.cluster.url("exchange"), timeout=2)
            except (OSError, asyncpg.PostgresError, TimeoutError):
                continue
            try:
                for violation in await no_address_held_by_two_live_orders(conn):
                    self._violation(f"while running: {violation}")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)

    # -- the chaos --------------------------------------------------------------------------

    def _check_alive(self) -> None:
        """A service nobody killed must still run, whatever the database did."""
        for name, process in self.processes.items():
            assert process.process is not None
            code = process.process.poll()
            if name not in self._down and code is not None:
                tail = "\n".join(process.logs().splitlines()[-15:])
                self._violation(f"{name} exited by itself with code {code}; last lines:\n{tail}")
                self._down.add(name)

    async def _kill(self, name: str) -> None:
        self._event(f"SIGKILL {name}")
        await self.processes[name].stop(signal.SIGKILL)
        self.report.kills[name] += 1
        self._down.add(name)

    async def _restart(self, name: str) -> None:
        for attempt in range(5):
            try:
                await self.processes[name].start()
            except RuntimeError as exc:
                self._violation(f"{name} did not start again (attempt {attempt + 1}): {exc}")
                await asyncio.sleep(1)
                continue
            self._event(f"started {name}")
            self._down.discard(name)
            return
        raise RuntimeError(f"{name} does not start any more")

    async def _restart_postgres(self, how: str) -> None:
        self._event(f"PostgreSQL {how} restart")
        if how == "fast":
            await self.cluster.restart()
        else:
            await self.cluster.crash()
            await asyncio.sleep(self._chaos_rng.uniform(0, 2))
            await self.cluster.start()
        self.report.postgres_restarts[how] += 1
        self._event("PostgreSQL is back")
        self._check_alive()

    async def _chaos(self, until: float) -> None:
        rng = self._chaos_rng
        # Every kind of blow at least once, in a random order; then at random.
        plan = ["kill-order", "kill-pool", "postgres-fast", "postgres-crash"]
        rng.shuffle(plan)
        back_at: dict[str, float] = {}
        while time.monotonic() < until:
            await asyncio.sleep(rng.uniform(0.5, 2.5))
            self._check_alive()
            for name in sorted(self._down):
                if time.monotonic() >= back_at.get(name, 0):
                    await self._restart(name)
            action = plan.pop(0) if plan else rng.choice(
                ["kill-order", "kill-pool", "postgres-fast", "postgres-crash", "nothing"]
            )  # fmt: skip
            if action.startswith("kill-"):
                name = "order_service" if action == "kill-order" else "wallet_pool_service"
                if name not in self._down:
                    await self._kill(name)
                    back_at[name] = time.monotonic() + rng.uniform(0.2, 4.0)
            elif action.startswith("postgres-"):
                await self._restart_postgres(action.removeprefix("postgres-"))
        self._check_alive()
        for name in sorted(self._down):
            await self._restart(name)
        self._event("chaos over")

    # -- the end ----------------------------------------------------------------------------

    async def _wait_serving(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        names = ("order_service", "wallet_pool_service")
        for name, channel in zip(names, self._channels, strict=True):
            stub = health_pb2_grpc.HealthStub(channel)
            status = -1
            while time.monotonic() < deadline:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    status = (await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
                await asyncio.sleep(0.2)
            else:
                self._violation(f"{name} is not SERVING {seconds:.0f} s after the chaos")

    def _phase(self, name: str, since: float) -> float:
        now = time.monotonic()
        self.report.phases.append((name, now - since))
        return now

    async def run(self) -> ChaosReport:
        tasks: list[asyncio.Task[None]] = []
        try:
            await self._start_services()
            mark = self._phase("start-up", self._started)
            tasks = [asyncio.create_task(self._worker()) for _ in range(self.workers)]
            tasks += [
                asyncio.create_task(self._operator()),
                asyncio.create_task(self._monitor()),
            ]
            await self._chaos(mark + self.seconds)
            mark = self._phase("chaos", mark)
            self._stop_new.set()
            # Lifecycles in flight finish (their retries are bounded).
            await asyncio.gather(*tasks)
            self._check_alive()
            await self._wait_serving(30)
            mark = self._phase("lifecycles ending", mark)
            pool = await asyncpg.create_pool(self.cluster.url("exchange"), min_size=1, max_size=2)
            try:
                violations = await check_all(pool, self.acknowledged, settle_seconds=30)
                async with pool.acquire() as conn:
                    violations += await no_work_done_twice(conn)
                    self.report.final_state = await final_state(conn)
            finally:
                await pool.close()
            self._phase("settling and checking", mark)
            self.report.violations += [f"final check: {v}" for v in violations]
            for process in self.processes.values():
                self.report.log_problems += log_problems(process.logs())
        finally:
            self.report.elapsed = time.monotonic() - self._started
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._close()
        return self.report


async def run_chaos(
    seconds: float, seed: int | None = None, log_dir: Path | None = None, workers: int = 24
) -> ChaosReport:
    """Run the chaos for `seconds` (then let everything settle and check); the seed defaults
    to CHAOS_SEED, else a random one."""
    if seed is None:
        seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(10**9))
    print(f"chaos seed {seed} (replay with CHAOS_SEED={seed})", flush=True)
    if log_dir is None:
        log_dir = Path(tempfile.mkdtemp(prefix="exchange-chaos-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    return await ChaosRun(seconds, seed, log_dir, workers=workers).run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60, help="how long the chaos lasts")
    parser.add_argument("--seed", type=int, default=None, help="default: CHAOS_SEED or random")
    parser.add_argument("--workers", type=int, default=24, help="concurrent order lifecycles")
    parser.add_argument("--log-dir", type=Path, default=None, help="where service logs go")
    args = parser.parse_args()

    async def run() -> ChaosReport:
        # SIGTERM, like Ctrl-C, stops the run and cleans up (the cluster, the services).
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await run_chaos(args.seconds, args.seed, args.log_dir, args.workers)

    try:
        report = asyncio.run(run())
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("chaos run stopped before its end; cleaned up")
        sys.exit(130)
    print(report.render())
    sys.exit(1 if report.violations or report.log_problems else 0)


if __name__ == "__main__":
    main()
