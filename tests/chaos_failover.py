"""Failover chaos: order lifecycles through both services (real processes) on a PostgreSQL
primary with a synchronous standby (tests/replication.py), while the primary is SIGKILLed at
random moments mid-load and the standby promoted. The services' DATABASE_URL lists both
nodes with `target_session_attrs=read-write`: they must find the new primary by themselves.

Each failover: SIGKILL the primary; both services must report NOT_SERVING (gRPC health) and
answer UNAVAILABLE, never INTERNAL or UNKNOWN; promote the standby; both must serve again
(health SERVING, and a write through each) within RECOVERY_BOUND_SECONDS of the promotion;
every status change acknowledged before the kill must be on the new primary with its history
row and owed release; and each write in flight at the kill is counted: acknowledged (then it
must be in the database at the end, else it was lost) or failed to its caller. Then the dead
node is rebuilt as the new primary's synchronous standby and the load goes on until the next
failover. At the end the six invariants must hold (`tests.invariants.check_all`).

    python -m tests.chaos_failover --seconds 120 [--seed N]   # make chaos CHAOS_MODE=failover
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from exchange.order.v1 import order_service_pb2 as opb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from tests.e2e.stack import LocalStack
from tests.invariants import acknowledged_updates_are_recorded, check_all
from tests.replication import ReplicatedCluster

# Both services serve again this long after the promotion at most (README, Operations).
RECOVERY_BOUND_SECONDS = 10.0
# After the kill, both services say NOT_SERVING within this (they check every 0.5 s here).
NOT_SERVING_BOUND_SECONDS = 10.0
# The only answers a client may get while the database fails over (DEADLINE_EXCEEDED would
# be a call that hung).
EXPECTED = frozenset({"OK", "UNAVAILABLE"})
WRITES = frozenset({"create", "processing", "completed", "cancelled"})
_STATUSES = {
    "processing": opb.ORDER_STATUS_PROCESSING,
    "completed": opb.ORDER_STATUS_COMPLETED,
    "cancelled": opb.ORDER_STATUS_CANCELLED,
}
_CALL_SECONDS = 10
# Reconnect fast once a service answers again (gRPC's default backoff grows to minutes).
_CLIENT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


def eth_address(rng: random.Random) -> str:
    return "0x" + rng.randbytes(20).hex()


@dataclass
class Attempt:
    """One call: what it asked for and how it was answered, on the monotonic clock."""

    kind: str
    order_id: str
    started: float
    ended: float = 0.0
    code: str = ""


class Workload:
    """Concurrent order lifecycles (create, PROCESSING or not, then COMPLETED or CANCELLED),
    each call retried while it is UNAVAILABLE, as a client would; every attempt recorded."""

    def __init__(self, stack: LocalStack, seed: int, workers: int) -> None:
        self.stack = stack
        self.seed = seed
        self.workers = workers
        self.attempts: list[Attempt] = []
        # order id -> the last status acknowledged for it
        self.acknowledged: dict[uuid.UUID, str] = {}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._lifecycles = 0

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.workers)]

    async def stop(self) -> None:
        """No new lifecycles; those under way finish (their retries are bounded)."""
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def call(
        self, kind: str, order_id: str, call: Callable[[], Awaitable[Any]]
    ) -> tuple[Attempt, Any]:
        """One attempt, recorded; the response is None unless it was OK."""
        attempt = Attempt(kind, order_id, time.monotonic())
        self.attempts.append(attempt)
        try:
            response = await call()
        except grpc.aio.AioRpcError as exc:
            attempt.ended, attempt.code = time.monotonic(), exc.code().name
            return attempt, None
        attempt.ended, attempt.code = time.monotonic(), "OK"
        return attempt, response

    async def _retry(
        self, kind: str, order_id: str, call: Callable[[], Awaitable[Any]]
    ) -> tuple[Attempt, Any]:
        deadline = time.monotonic() + 60
        delay = 0.05
        while True:
            attempt, response = await self.call(kind, order_id, call)
            if attempt.code != "UNAVAILABLE" or time.monotonic() > deadline:
                return attempt, response
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def _lifecycle(self, index: int) -> None:
        rng = random.Random(f"{self.seed}:order:{index}")
        request = opb.CreateOrderRequest(
            network="ETH", amount=f"{rng.randint(1, 999)}.{rng.randint(0, 99):02d}",
            request_id=f"failover-{self.seed}-{index}",
        )  # fmt: skip
        stack = self.stack
        attempt, created = await self._retry(
            "create",
            "",
            lambda: stack.orders.CreateOrder(request, metadata=stack.client, timeout=_CALL_SECONDS),
        )
        if created is None:
            return
        order_id = attempt.order_id = created.order.id
        self.acknowledged[uuid.UUID(order_id)] = "PENDING"
        path = ["processing", "completed"] if rng.random() < 0.6 else ["cancelled"]
        if path == ["cancelled"] and rng.random() < 0.5:
            path = ["processing", "cancelled"]
        for kind in path:
            update = opb.UpdateOrderStatusRequest(order_id=order_id, status=_STATUSES[kind])

            def change(update: opb.UpdateOrderStatusRequest = update) -> Awaitable[Any]:
                return stack.orders.UpdateOrderStatus(
                    update, metadata=stack.operator, timeout=_CALL_SECONDS
                )

            _, changed = await self._retry(kind, order_id, change)
            if changed is None:
                return
            self.acknowledged[uuid.UUID(order_id)] = kind.upper()

    async def _worker(self) -> None:
        while not self._stop.is_set():
            self._lifecycles += 1
            await self._lifecycle(self._lifecycles)


@dataclass
class Failover:
    """One failover as the clients saw it (times on the monotonic clock)."""

    number: int
    killed_at: float
    # service -> seconds from the kill until it said NOT_SERVING
    not_serving_after: dict[str, float] = field(default_factory=dict)
    promote_started: float = 0.0
    promoted_at: float = 0.0
    # seconds from the promotion until both services serve again (None: not within 60 s):
    # health SERVING and a write through each
    recovery_seconds: float | None = None
    # seconds from the promotion's start until the first write of the load was acknowledged
    first_write_seconds: float | None = None
    # status changes acknowledged before the kill, missing from the new primary
    missing_after_promotion: list[str] = field(default_factory=list)
    # writes in flight at the kill: acknowledged / failed / lost (acknowledged, not there)
    in_flight: Counter[str] = field(default_factory=Counter)
    # answers by code between the kill and the promotion's start, then until both serve again
    codes_before_promotion: Counter[str] = field(default_factory=Counter)
    codes_after_promotion: Counter[str] = field(default_factory=Counter)

    def render(self) -> str:
        not_serving = ", ".join(f"{n} {s:.1f} s" for n, s in sorted(self.not_serving_after.items()))
        recovery = "never" if self.recovery_seconds is None else f"{self.recovery_seconds:.2f} s"
        first = "none" if self.first_write_seconds is None else f"{self.first_write_seconds:.2f} s"
        before = ", ".join(f"{c} {n}" for c, n in self.codes_before_promotion.most_common())
        after = ", ".join(f"{c} {n}" for c, n in self.codes_after_promotion.most_common())
        flight = self.in_flight
        return (
            f"  failover {self.number}: NOT_SERVING after the kill: {not_serving or 'never'}; "
            f"first write acknowledged {first} after the promotion began, serving again "
            f"(health and a write through each) {recovery} after it; answers from the kill to the "
            f"promotion: {before or 'none'}, then until serving: {after or 'none'}; "
            f"writes in flight at the kill: acknowledged {flight['acknowledged']}, "
            f"failed {flight['failed']}, lost {flight['lost']}; acknowledged before the "
            f"kill and missing after it: {len(self.missing_after_promotion)}"
        )


@dataclass
class FailoverReport:
    seed: int
    failovers: list[Failover] = field(default_factory=list)
    orders: int = 0
    calls: dict[str, Counter[str]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    log_problems: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    log_dir: Path | None = None

    @property
    def recovery_seconds(self) -> list[float]:
        return [f.recovery_seconds for f in self.failovers if f.recovery_seconds is not None]

    @property
    def in_flight(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for failover in self.failovers:
            total.update(failover.in_flight)
        return total

    def render(self) -> str:
        recoveries = self.recovery_seconds
        flight = self.in_flight
        codes: Counter[str] = Counter()
        for by_code in self.calls.values():
            codes.update(by_code)
        lines = [
            f"failover chaos report (seed {self.seed}, {self.elapsed:.0f} s; "
            f"replay: CHAOS_SEED={self.seed})",
            f"  failovers: {len(self.failovers)}; orders created: {self.orders}",
            "  recovery after promotion: "
            + (
                f"min {min(recoveries):.2f} s, max {max(recoveries):.2f} s "
                f"(bound {RECOVERY_BOUND_SECONDS:.0f} s)"
                if recoveries
                else "none measured"
            ),
            f"  writes in flight at the kills: acknowledged {flight['acknowledged']}, "
            f"failed {flight['failed']}, lost {flight['lost']}",
            *(failover.render() for failover in self.failovers),
            "  operations (answers by code):",
        ]
        for kind in sorted(self.calls):
            by_code = self.calls[kind]
            text = ", ".join(f"{code} {n}" for code, n in by_code.most_common())
            lines.append(f"    {kind:<12} {sum(by_code.values()):>6}  ({text})")
        lines += [
            f"  INTERNAL or UNKNOWN answers: {codes['INTERNAL'] + codes['UNKNOWN']}",
            f"  violations: {len(self.violations)}",
            *(f"    - {v}" for v in self.violations[:30]),
            f"  error lines in the services' logs: {len(self.log_problems)}",
            *(f"    {line[:300]}" for line in self.log_problems[:10]),
        ]
        if self.log_dir:
            lines.append(f"  service logs: {self.log_dir}")
        return "\n".join(lines)


class FailoverRun:
    def __init__(self, seed: int, log_dir: Path, workers: int) -> None:
        self.seed = seed
        self.log_dir = log_dir
        self.workers = workers
        self.rng = random.Random(f"{seed}:failover")
        self.report = FailoverReport(seed, log_dir=log_dir)
        self.cluster = ReplicatedCluster()
        self.stack: LocalStack | None = None
        self.workload: Workload | None = None
        self._health: list[health_pb2_grpc.HealthStub] = []
        self._probes = 0

    async def run(self, *, failovers: int | None = None, seconds: float | None = None) -> None:
        """`failovers` of them, or as many as fit in `seconds`."""
        started = time.monotonic()
        try:
            await self.cluster.start()
            # Health as in production: the database checked every 2 s.
            self.stack = stack = await LocalStack.start(
                self.cluster.url(), self.log_dir, extra_env={"HEALTH_CHECK_SECONDS": "2"}
            )
            channels = [
                grpc.aio.insecure_channel(addr, _CLIENT_OPTIONS)
                for addr in (stack.order_addr, stack.pool_addr)
            ]
            self._health = [health_pb2_grpc.HealthStub(channel) for channel in channels]
            wallets = [eth_address(self.rng) for _ in range(3 * self.workers)]
            await stack.pool.AddWallets(
                wpb.AddWalletsRequest(network="ETH", addresses=wallets),
                metadata=stack.operator,
                timeout=_CALL_SECONDS,
            )
            self.workload = workload = Workload(stack, self.seed, self.workers)
            workload.start()
            until = time.monotonic() + (seconds or 0)
            while (
                len(self.report.failovers) < failovers
                if failovers is not None
                else time.monotonic() < until
            ):
                if self.cluster.standby is None:
                    await self.cluster.rebuild_standby()
                await self._load_for_a_while()
                self.report.failovers.append(await self._fail_over())
            await self._load_for_a_while()
            await workload.stop()
            await self._check_at_the_end()
            for channel in channels:
                await channel.close(None)
        finally:
            self.report.elapsed = time.monotonic() - started
            if self.workload is not None:
                await self.workload.cancel()
            if self.stack is not None:
                await self.stack.close()
            await self.cluster.close()

    async def _load_for_a_while(self) -> None:
        """Until 30 more calls were made, then a random moment more."""
        assert self.workload is not None
        wanted = len(self.workload.attempts) + 30
        deadline = time.monotonic() + 30
        while len(self.workload.attempts) < wanted and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(self.rng.uniform(0.2, 2.5))

    async def _health_of(self, index: int) -> int:
        with contextlib.suppress(grpc.aio.AioRpcError):
            answer = await self._health[index].Check(health_pb2.HealthCheckRequest(), timeout=2)
            return int(answer.status)
        return -1

    async def _fail_over(self) -> Failover:
        assert self.workload is not None
        workload = self.workload
        names = ("order_service", "wallet_pool_service")
        # No await between the snapshot and the SIGKILL: what was acknowledged before it.
        before = dict(workload.acknowledged)
        record = Failover(len(self.report.failovers) + 1, time.monotonic())
        await self.cluster.kill_primary()

        deadline = record.killed_at + NOT_SERVING_BOUND_SECONDS
        while len(record.not_serving_after) < 2 and time.monotonic() < deadline:
            for index, name in enumerate(names):
                status = await self._health_of(index)
                if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    record.not_serving_after.setdefault(name, time.monotonic() - record.killed_at)
            await asyncio.sleep(0.05)
        for name in names:
            if name not in record.not_serving_after:
                self._violation(f"failover {record.number}: {name} never said NOT_SERVING")

        record.promote_started = time.monotonic()
        await self.cluster.promote()
        record.promoted_at = time.monotonic()
        serving = [False, False]
        while not all(serving) and time.monotonic() < record.promoted_at + 60:
            for index in (0, 1):
                if not serving[index]:
                    healthy = await self._health_of(index) == health_pb2.HealthCheckResponse.SERVING
                    serving[index] = healthy and await self._probe(index)
            if not all(serving):
                await asyncio.sleep(0.05)
        if all(serving):
            record.recovery_seconds = time.monotonic() - record.promoted_at
        recovered_at = time.monotonic()
        if record.recovery_seconds is None or record.recovery_seconds > RECOVERY_BOUND_SECONDS:
            self._violation(
                f"failover {record.number}: the services did not serve again within "
                f"{RECOVERY_BOUND_SECONDS:.0f} s of the promotion ({record.recovery_seconds})"
            )
        for attempt in workload.attempts:
            if record.killed_at <= attempt.ended < record.promote_started:
                record.codes_before_promotion[attempt.code] += 1
                if attempt.code == "OK" and attempt.started > record.killed_at:
                    self._violation(f"failover {record.number}: OK with no primary: {attempt}")
            elif record.promote_started <= attempt.ended <= recovered_at:
                record.codes_after_promotion[attempt.code] += 1
        record.first_write_seconds = min(
            (
                a.ended - record.promote_started
                for a in workload.attempts
                if a.code == "OK" and a.kind in WRITES and a.started >= record.promote_started
            ),
            default=None,
        )
        seen = record.codes_before_promotion + record.codes_after_promotion
        unexpected = seen.keys() - EXPECTED
        if unexpected:
            self._violation(f"failover {record.number}: answers {sorted(unexpected)} meanwhile")

        conn = await asyncpg.connect(self.cluster.primary.url())
        try:
            record.missing_after_promotion = await acknowledged_updates_are_recorded(conn, before)
        finally:
            await conn.close()
        self.report.violations += [
            f"failover {record.number}: acknowledged before the kill: {v}"
            for v in record.missing_after_promotion
        ]
        return record

    async def _probe(self, index: int) -> bool:
        """A write through the service: an order (left PENDING), or a wallet for the pool."""
        assert self.workload is not None and self.stack is not None
        stack = self.stack
        self._probes += 1
        if index == 0:
            request = opb.CreateOrderRequest(
                network="ETH", amount="1", request_id=f"probe-{self.seed}-{self._probes}"
            )
            _, created = await self.workload.call(
                "probe_create",
                "",
                lambda: stack.orders.CreateOrder(request, metadata=stack.client, timeout=2),
            )
            if created is not None:
                self.workload.acknowledged[uuid.UUID(created.order.id)] = "PENDING"
            return created is not None
        wallets = wpb.AddWalletsRequest(network="ETH", addresses=[eth_address(self.rng)])
        _, added = await self.workload.call(
            "probe_wallet",
            "",
            lambda: stack.pool.AddWallets(wallets, metadata=stack.operator, timeout=2),
        )
        return added is not None

    async def _check_at_the_end(self) -> None:
        assert self.workload is not None
        workload = self.workload
        for attempt in workload.attempts:
            self.report.calls.setdefault(attempt.kind, Counter())[attempt.code] += 1
            if attempt.code in ("INTERNAL", "UNKNOWN"):
                self._violation(f"{attempt.kind} {attempt.order_id} answered {attempt.code}")
        self.report.orders = len(workload.acknowledged)
        pool = await asyncpg.create_pool(self.cluster.url(), min_size=1, max_size=2)
        try:
            async with pool.acquire() as conn:
                for failover in self.report.failovers:
                    for attempt in workload.attempts:
                        if attempt.kind not in WRITES or not (
                            attempt.started < failover.killed_at < attempt.ended
                        ):
                            continue
                        if attempt.code != "OK":
                            failover.in_flight["failed"] += 1
                        elif await _missing(conn, attempt):
                            failover.in_flight["lost"] += 1
                            self._violation(f"failover {failover.number}: lost {attempt}")
                        else:
                            failover.in_flight["acknowledged"] += 1
            violations = await check_all(pool, workload.acknowledged, settle_seconds=30)
            self.report.violations += [f"final check: {v}" for v in violations]
        finally:
            await pool.close()
        assert self.stack is not None
        for process in (self.stack.order_process, self.stack.pool_process):
            self.report.log_problems += log_problems(process.logs())

    def _violation(self, text: str) -> None:
        self.report.violations.append(text)


async def _missing(conn: Any, attempt: Attempt) -> bool:
    """An acknowledged write is not in the database (a later status counts as there)."""
    status = "PENDING" if attempt.kind == "create" else attempt.kind.upper()
    violations = await acknowledged_updates_are_recorded(
        conn, {uuid.UUID(attempt.order_id): status}
    )
    return bool(violations)


def log_problems(text: str) -> list[str]:
    """Log lines that are bugs whatever the database did: errors, an INTERNAL answer, a
    background step failing for another reason than an outage, a traceback outside JSON."""
    found = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            if line.strip() and not line.startswith((" ", "\t")):
                found.append(line)
            continue
        if entry.get("level") in ("error", "critical") or entry.get("event") in (
            "unhandled error",
            "loop step failed",
        ):
            found.append(line)
    return found


async def run_failover_chaos(
    *,
    failovers: int | None = None,
    seconds: float | None = None,
    seed: int | None = None,
    log_dir: Path | None = None,
    workers: int = 12,
) -> FailoverReport:
    """`failovers` failovers, or as many as fit in `seconds`; the seed defaults to
    CHAOS_SEED, else a random one."""
    if seed is None:
        seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(10**9))
    print(f"failover chaos seed {seed} (replay with CHAOS_SEED={seed})", flush=True)
    if log_dir is None:
        log_dir = Path(tempfile.mkdtemp(prefix="exchange-failover-logs-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    run = FailoverRun(seed, log_dir, workers)
    await run.run(failovers=failovers, seconds=seconds)
    return run.report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=120, help="how long failovers go on")
    parser.add_argument("--seed", type=int, default=None, help="default: CHAOS_SEED or random")
    parser.add_argument("--workers", type=int, default=12, help="concurrent order lifecycles")
    parser.add_argument("--log-dir", type=Path, default=None, help="where service logs go")
    args = parser.parse_args()

    async def run() -> FailoverReport:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await run_failover_chaos(
            seconds=args.seconds, seed=args.seed, log_dir=args.log_dir, workers=args.workers
        )

    try:
        report = asyncio.run(run())
    except (asyncio.CancelledError, KeyboardInterrupt):
        print("failover chaos stopped before its end; cleaned up")
        sys.exit(130)
    print(report.render())
    sys.exit(1 if report.violations or report.log_problems else 0)


if __name__ == "__main__":
    main()
