"""Failover chaos (README, Tests: `make chaos CHAOS_MODE=failover`): the primary of a
primary and synchronous standby killed under load, the standby promoted, the dead node
rebuilt as its standby, again and again; what each failover must show is checked as it
happens, the rest at the end."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from exchange.order.v1 import order_service_pb2 as opb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from tests.chaos.checks import log_problems
from tests.chaos.cli import parse_args, run_and_exit, seed_and_log_dir
from tests.chaos.feed import FeedConsumer, compare
from tests.chaos.load import WRITES, Attempt, Load, eth_address, health
from tests.chaos.replication import ReplicatedCluster
from tests.chaos.report import ChaosReport, render_calls, render_end
from tests.e2e.stack import LocalStack
from tests.invariants import acknowledged_updates_are_recorded, check_all

# Both services serve again this long after the promotion at most (README, Operations).
RECOVERY_BOUND_SECONDS = 10.0
# After the kill, both services say NOT_SERVING within this (they check every 2 s here).
NOT_SERVING_BOUND_SECONDS = 10.0
# The only answers a client may get while the database fails over (DEADLINE_EXCEEDED would
# be a call that hung).
EXPECTED = frozenset({"OK", "UNAVAILABLE"})
_NAMES = ("order_service", "wallet_pool_service")
SERVING, NOT_SERVING = (
    health_pb2.HealthCheckResponse.SERVING,
    health_pb2.HealthCheckResponse.NOT_SERVING,
)


@dataclass
class Failover:
    number: int
    killed_at: float
    # service -> seconds from the kill until it said NOT_SERVING
    not_serving_after: dict[str, float] = field(default_factory=dict)
    promote_started: float = 0.0
    promoted_at: float = 0.0
    # seconds from the promotion until both serve again (health, and a write): None: > 60 s
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
    # the feed's sequences checked on the promoted primary, and those naming another event
    feed_checked: int = 0
    feed_mismatches: list[str] = field(default_factory=list)

    def render(self) -> str:
        not_serving = ", ".join(f"{n} {s:.1f} s" for n, s in sorted(self.not_serving_after.items()))
        recovery = "never" if self.recovery_seconds is None else f"{self.recovery_seconds:.2f} s"
        first = "none" if self.first_write_seconds is None else f"{self.first_write_seconds:.2f} s"
        before, after = (
            ", ".join(f"{c} {n}" for c, n in codes.most_common()) or "none"
            for codes in (self.codes_before_promotion, self.codes_after_promotion)
        )
        flight = self.in_flight
        return (
            f"  failover {self.number}: NOT_SERVING after the kill: {not_serving or 'never'}; "
            f"first write acknowledged {first} after the promotion began, serving again "
            f"(health and a write through each) {recovery} after it; answers from the kill to the "
            f"promotion: {before}, then until serving: {after}; "
            f"writes in flight at the kill: acknowledged {flight['acknowledged']}, "
            f"failed {flight['failed']}, lost {flight['lost']}; acknowledged before the "
            f"kill and missing after it: {len(self.missing_after_promotion)}; feed sequences "
            f"checked on the promoted primary {self.feed_checked}, naming another event "
            f"{len(self.feed_mismatches)}"
        )


@dataclass
class FailoverReport(ChaosReport):
    failovers: list[Failover] = field(default_factory=list)

    def render(self) -> str:
        recoveries = [f.recovery_seconds for f in self.failovers if f.recovery_seconds is not None]
        flight = sum((f.in_flight for f in self.failovers), Counter[str]())
        codes = sum(self.calls.values(), Counter[str]())
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
            f"  feed: {self.feed.events} sequences received through {self.feed.reconnects} "
            "reconnects, each checked against the final primary's table",
            *(failover.render() for failover in self.failovers),
            "  operations (answers by code):",
            *render_calls(self.calls, 16),
            f"  INTERNAL or UNKNOWN answers: {codes['INTERNAL'] + codes['UNKNOWN']}",
            *render_end(self.violations, 30, self.log_problems, self.log_dir),
        ]
        return "\n".join(lines)


class FailoverRun:
    def __init__(self, seed: int, log_dir: Path, workers: int) -> None:
        self.seed = seed
        self.log_dir = log_dir
        self.workers = workers
        self.rng = random.Random(f"{seed}:failover")
        self.report = FailoverReport(seed, 0, log_dir=log_dir)
        self.cluster = ReplicatedCluster()
        self._health: list[health_pb2_grpc.HealthStub] = []
        self._probes = 0

    async def run(self, *, failovers: int | None = None, seconds: float | None = None) -> None:
        started = time.monotonic()
        tasks: list[asyncio.Task[None]] = []
        stack = feed = None
        try:
            await self.cluster.start()
            # Health as in production: the database checked every 2 s.
            stack = await LocalStack.start(
                self.cluster.url(), self.log_dir, extra_env={"HEALTH_CHECK_SECONDS": "2"}
            )
            self._health = [
                health_pb2_grpc.HealthStub(c) for c in (stack.order_channel, stack.pool_channel)
            ]
            # The load's and the consumer's violations and counts go to reports of their own.
            self.load = Load(stack.orders, stack.pool, ChaosReport(self.seed, 0), self.seed, True)
            await self.load.add_wallets(3 * self.workers)
            tasks = [asyncio.create_task(self.load.worker()) for _ in range(self.workers)]
            self.feed = feed = FeedConsumer(
                stack.orders, ChaosReport(self.seed, 0), self.seed, stack.operator, False
            )
            feed.start()
            until = time.monotonic() + (seconds or 0)
            while (
                len(self.report.failovers) < failovers
                if failovers is not None
                else time.monotonic() < until
            ):
                if self.cluster.standby is None:
                    await self.cluster.rebuild_standby()
                await self._load_for_a_while()
                self.report.failovers.append(await self._fail_over(stack))
            await self._load_for_a_while()
            self.load.stop.set()
            await asyncio.gather(*tasks)  # lifecycles under way finish (retries are bounded)
            await self._check_at_the_end(stack)
        finally:
            self.report.elapsed = time.monotonic() - started
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if feed is not None:
                await feed.stop()
            if stack is not None:
                await stack.close()
            await self.cluster.close()

    async def _load_for_a_while(self) -> None:
        wanted, deadline = len(self.load.attempts) + 30, time.monotonic() + 30
        while len(self.load.attempts) < wanted and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(self.rng.uniform(0.2, 2.5))

    async def _fail_over(self, stack: LocalStack) -> Failover:
        # No await between the snapshot and the SIGKILL: what was acknowledged before it.
        before = dict(self.load.acknowledged)
        record = Failover(len(self.report.failovers) + 1, time.monotonic())
        await self.cluster.kill_primary()
        deadline = record.killed_at + NOT_SERVING_BOUND_SECONDS
        while len(record.not_serving_after) < 2 and time.monotonic() < deadline:
            for name, stub in zip(_NAMES, self._health, strict=True):
                if await health(stub) == NOT_SERVING:
                    record.not_serving_after.setdefault(name, time.monotonic() - record.killed_at)
            await asyncio.sleep(0.05)
        for name in _NAMES:
            if name not in record.not_serving_after:
                self._violation(f"failover {record.number}: {name} never said NOT_SERVING")
        record.promote_started = time.monotonic()
        await self.cluster.promote()
        record.promoted_at = time.monotonic()
        await self._serving_again(record, stack)
        conn = await asyncpg.connect(self.cluster.primary.url())
        try:
            record.missing_after_promotion = await acknowledged_updates_are_recorded(conn, before)
            record.feed_checked, record.feed_mismatches = await compare(conn, self.feed.received)
        finally:
            await conn.close()
        self.report.violations += [
            f"failover {record.number}: feed: {v}" for v in record.feed_mismatches
        ] + [
            f"failover {record.number}: acknowledged before the kill: {v}"
            for v in record.missing_after_promotion
        ]
        return record

    async def _serving_again(self, record: Failover, stack: LocalStack) -> None:
        """Until both serve again (health and a write through each); the answers meanwhile."""
        serving = [False, False]
        while not all(serving) and time.monotonic() < record.promoted_at + 60:
            for index in (0, 1):
                if not serving[index]:
                    healthy = await health(self._health[index]) == SERVING
                    serving[index] = healthy and await self._probe(index, stack)
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
        for attempt in self.load.attempts:
            if record.killed_at <= attempt.ended < record.promote_started:
                record.codes_before_promotion[attempt.code] += 1
                if attempt.code == "OK" and attempt.started > record.killed_at:
                    self._violation(f"failover {record.number}: OK with no primary: {attempt}")
            elif record.promote_started <= attempt.ended <= recovered_at:
                record.codes_after_promotion[attempt.code] += 1
        record.first_write_seconds = min(
            (
                a.ended - record.promote_started
                for a in self.load.attempts
                if a.code == "OK" and a.kind in WRITES and a.started >= record.promote_started
            ),
            default=None,
        )
        seen = record.codes_before_promotion + record.codes_after_promotion
        if unexpected := seen.keys() - EXPECTED:
            self._violation(f"failover {record.number}: answers {sorted(unexpected)} meanwhile")

    async def _probe(self, index: int, stack: LocalStack) -> bool:
        self._probes += 1
        if index == 0:
            request = opb.CreateOrderRequest(
                network="ETH", amount="1", request_id=f"probe-{self.seed}-{self._probes}"
            )
            _, created = await self.load.call(
                "probe_create",
                lambda: stack.orders.CreateOrder(request, metadata=stack.client, timeout=2),
            )
            if created is not None:
                self.load.acknowledged[uuid.UUID(created.order.id)] = "PENDING"
            return created is not None
        wallets = wpb.AddWalletsRequest(network="ETH", addresses=[eth_address(self.rng)])
        _, added = await self.load.call(
            "probe_wallet",
            lambda: stack.pool.AddWallets(wallets, metadata=stack.operator, timeout=2),
        )
        return added is not None

    async def _check_at_the_end(self, stack: LocalStack) -> None:
        load = self.load
        self.report.calls = load.report.calls
        for attempt in load.attempts:
            if attempt.code in ("INTERNAL", "UNKNOWN"):
                self._violation(f"{attempt.kind} {attempt.subject} answered {attempt.code}")
        self.report.orders = len(load.acknowledged)
        pool = await asyncpg.create_pool(self.cluster.url(), min_size=1, max_size=2)
        try:
            async with pool.acquire() as conn:
                for failover in self.report.failovers:
                    for attempt in load.attempts:
                        if attempt.kind in WRITES and (
                            attempt.started < failover.killed_at < attempt.ended
                        ):
                            await self._in_flight(conn, failover, attempt)
            violations = await check_all(pool, load.acknowledged, settle_seconds=30)
            self.report.violations += [f"final check: {v}" for v in violations]
            await self._check_feed(pool)
        finally:
            await pool.close()
        for process in (stack.order_process, stack.pool_process):
            self.report.log_problems += log_problems(process.logs())

    async def _in_flight(self, conn: Any, failover: Failover, attempt: Attempt) -> None:
        """Failed, or in the database (a later status counts as there), or lost."""
        if attempt.code != "OK":
            failover.in_flight["failed"] += 1
            return
        status = "PENDING" if attempt.kind == "create" else attempt.kind[len("update_") :].upper()
        wanted = {uuid.UUID(attempt.subject): status}
        if await acknowledged_updates_are_recorded(conn, wanted):
            failover.in_flight["lost"] += 1
            self._violation(f"failover {failover.number}: lost {attempt}")
        else:
            failover.in_flight["acknowledged"] += 1

    async def _check_feed(self, pool: asyncpg.Pool) -> None:
        feed = self.feed
        async with pool.acquire() as conn:
            await feed.catch_up(
                await conn.fetchval("SELECT confirmed_through FROM orders.event_log"), 30
            )
            checked, mismatches = await compare(conn, feed.received)
        self.report.feed.events, self.report.feed.reconnects = checked, feed.report.feed.reconnects
        self.report.violations += feed.report.violations + [f"feed: {v}" for v in mismatches]

    def _violation(self, text: str) -> None:
        self.report.violations.append(text)


async def run_failover_chaos(
    *,
    failovers: int | None = None,
    seconds: float | None = None,
    seed: int | None = None,
    log_dir: Path | None = None,
    workers: int = 12,
) -> FailoverReport:
    seed, log_dir = seed_and_log_dir("failover chaos", seed, log_dir, "exchange-failover-logs-")
    run = FailoverRun(seed, log_dir, workers)
    await run.run(failovers=failovers, seconds=seconds)
    return run.report


def main() -> None:
    args = parse_args(
        __doc__.split("\n\n")[0], seconds=120, seconds_help="how long failovers go on", workers=12
    )
    run_and_exit(
        "failover chaos",
        lambda: run_failover_chaos(
            seconds=args.seconds, seed=args.seed, log_dir=args.log_dir, workers=args.workers
        ),
    )


if __name__ == "__main__":
    main()
