"""Failover chaos: order lifecycles through both services (real processes) on a PostgreSQL
primary with a synchronous standby (`replication`), while the primary is SIGKILLed at
random moments mid-load and the standby promoted. The services' DATABASE_URL lists both
nodes with `target_session_attrs=read-write`: they must find the new primary by themselves.

Each failover: SIGKILL the primary; both services must report NOT_SERVING (gRPC health) and
answer UNAVAILABLE, never INTERNAL or UNKNOWN; promote the standby; both must serve again
(health SERVING, and a write through each) within RECOVERY_BOUND_SECONDS of the promotion;
every status change acknowledged before the kill must be on the new primary with its history
row and owed release; every event sequence a consumer of the feed received (`feed`)
must name the same event on the new primary; and each write in flight at the kill is
counted: acknowledged (then it must be in the database at the end, else it was lost) or
failed to its caller. Then the dead
node is rebuilt as the new primary's synchronous standby and the load goes on until the next
failover. At the end the invariants must hold (`tests.invariants.check_all`).

    python -m tests.chaos.failover --seconds 120 [--seed N]   # make chaos CHAOS_MODE=failover

The load is in `failover_load`, what each failover saw and the report in `failover_report`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from exchange.order.v1 import order_service_pb2 as opb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from tests.chaos.checks import log_problems
from tests.chaos.cli import parse_args, run_and_exit, seed_and_log_dir
from tests.chaos.failover_load import CALL_SECONDS, WRITES, Attempt, Workload
from tests.chaos.failover_report import RECOVERY_BOUND_SECONDS, Failover, FailoverReport
from tests.chaos.feed import FeedConsumer, compare
from tests.chaos.load import CLIENT_OPTIONS, eth_address, health
from tests.chaos.replication import ReplicatedCluster
from tests.chaos.report import ChaosReport
from tests.e2e.stack import LocalStack
from tests.invariants import acknowledged_updates_are_recorded, check_all

__all__ = ["RECOVERY_BOUND_SECONDS", "FailoverReport", "run_failover_chaos"]

# After the kill, both services say NOT_SERVING within this (they check every 0.5 s here).
NOT_SERVING_BOUND_SECONDS = 10.0
# The only answers a client may get while the database fails over (DEADLINE_EXCEEDED would
# be a call that hung).
EXPECTED = frozenset({"OK", "UNAVAILABLE"})
_NAMES = ("order_service", "wallet_pool_service")
SERVING = health_pb2.HealthCheckResponse.SERVING


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
        self.feed: FeedConsumer | None = None
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
                grpc.aio.insecure_channel(addr, CLIENT_OPTIONS)
                for addr in (stack.order_addr, stack.pool_addr)
            ]
            self._health = [health_pb2_grpc.HealthStub(channel) for channel in channels]
            wallets = [eth_address(self.rng) for _ in range(3 * self.workers)]
            await stack.pool.AddWallets(
                wpb.AddWalletsRequest(network="ETH", addresses=wallets),
                metadata=stack.operator,
                timeout=CALL_SECONDS,
            )
            self.workload = workload = Workload(stack, self.seed, self.workers)
            workload.start()
            # The consumer's violations and reconnects go to a report of its own.
            feed_report = ChaosReport(self.seed, 0)
            self.feed = FeedConsumer(stack.orders, feed_report, self.seed, stack.operator, False)
            self.feed.start()
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
            if self.feed is not None:
                await self.feed.stop()
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

    async def _fail_over(self) -> Failover:
        assert self.workload is not None
        # No await between the snapshot and the SIGKILL: what was acknowledged before it.
        before = dict(self.workload.acknowledged)
        record = Failover(len(self.report.failovers) + 1, time.monotonic())
        await self.cluster.kill_primary()
        deadline = record.killed_at + NOT_SERVING_BOUND_SECONDS
        while len(record.not_serving_after) < 2 and time.monotonic() < deadline:
            for index, name in enumerate(_NAMES):
                if await health(self._health[index]) == health_pb2.HealthCheckResponse.NOT_SERVING:
                    record.not_serving_after.setdefault(name, time.monotonic() - record.killed_at)
            await asyncio.sleep(0.05)
        for name in _NAMES:
            if name not in record.not_serving_after:
                self._violation(f"failover {record.number}: {name} never said NOT_SERVING")
        record.promote_started = time.monotonic()
        await self.cluster.promote()
        record.promoted_at = time.monotonic()
        await self._serving_again(record)
        conn = await asyncpg.connect(self.cluster.primary.url())
        try:
            record.missing_after_promotion = await acknowledged_updates_are_recorded(conn, before)
            assert self.feed is not None
            record.feed_checked, record.feed_mismatches = await compare(conn, self.feed.received)
        finally:
            await conn.close()
        self.report.violations += [
            f"failover {record.number}: feed: {v}" for v in record.feed_mismatches
        ]
        self.report.violations += [
            f"failover {record.number}: acknowledged before the kill: {v}"
            for v in record.missing_after_promotion
        ]
        return record

    async def _serving_again(self, record: Failover) -> None:
        """Until both services serve again after the promotion (health and a write through
        each); the answers the clients had meanwhile."""
        serving = [False, False]
        while not all(serving) and time.monotonic() < record.promoted_at + 60:
            for index in (0, 1):
                if not serving[index]:
                    healthy = (
                        await health(self._health[index]) == health_pb2.HealthCheckResponse.SERVING
                    )
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
        assert self.workload is not None
        for attempt in self.workload.attempts:
            if record.killed_at <= attempt.ended < record.promote_started:
                record.codes_before_promotion[attempt.code] += 1
                if attempt.code == "OK" and attempt.started > record.killed_at:
                    self._violation(f"failover {record.number}: OK with no primary: {attempt}")
            elif record.promote_started <= attempt.ended <= recovered_at:
                record.codes_after_promotion[attempt.code] += 1
        record.first_write_seconds = min(
            (
                a.ended - record.promote_started
                for a in self.workload.attempts
                if a.code == "OK" and a.kind in WRITES and a.started >= record.promote_started
            ),
            default=None,
        )
        seen = record.codes_before_promotion + record.codes_after_promotion
        unexpected = seen.keys() - EXPECTED
        if unexpected:
            self._violation(f"failover {record.number}: answers {sorted(unexpected)} meanwhile")

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
            await self._check_feed(pool)
        finally:
            await pool.close()
        assert self.stack is not None
        for process in (self.stack.order_process, self.stack.pool_process):
            self.report.log_problems += log_problems(process.logs())

    async def _check_feed(self, pool: asyncpg.Pool) -> None:
        """The consumer has the whole log, each sequence once in order, and each names the
        event the final primary has under it."""
        assert self.feed is not None
        feed = self.feed
        async with pool.acquire() as conn:
            await feed.catch_up(
                await conn.fetchval("SELECT confirmed_through FROM orders.event_log"), 30
            )
            checked, mismatches = await compare(conn, feed.received)
        self.report.feed_received = checked
        self.report.feed_reconnects = feed.report.feed.reconnects
        self.report.violations += feed.report.violations + [f"feed: {v}" for v in mismatches]

    def _violation(self, text: str) -> None:
        self.report.violations.append(text)


async def _missing(conn: Any, attempt: Attempt) -> bool:
    """An acknowledged write is not in the database (a later status counts as there)."""
    status = "PENDING" if attempt.kind == "create" else attempt.kind.upper()
    violations = await acknowledged_updates_are_recorded(
        conn, {uuid.UUID(attempt.order_id): status}
    )
    return bool(violations)


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
    seed, log_dir = seed_and_log_dir("failover chaos", seed, log_dir, "exchange-failover-logs-")
    run = FailoverRun(seed, log_dir, workers)
    await run.run(failovers=failovers, seconds=seconds)
    return run.report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args = parse_args(parser, seconds=120, seconds_help="how long failovers go on", workers=12)
    run_and_exit(
        "failover chaos",
        lambda: run_failover_chaos(
            seconds=args.seconds, seed=args.seed, log_dir=args.log_dir, workers=args.workers
        ),
    )


if __name__ == "__main__":
    main()
