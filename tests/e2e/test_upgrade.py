"""A rolling upgrade from the previous release (tests/releases.py) to this checkout, as the
Kubernetes rollout does it: two replicas of each service of the previous release serve order
lifecycles and a feed consumer on a database they migrated; the new release's first replica
migrates the database while they serve; then each old replica is replaced, one at a time (a
new one up, the old one out of the Service and SIGTERMed). No call may fail, every
acknowledged change must be in the database and in the feed exactly once, and the
invariants must hold. Each service's replicas sit behind one address (tests/balancer.py),
as behind a Kubernetes Service."""

# The generated async stub types exist only in the stubs (.pyi).
from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import pytest

from exchange.order.v1 import order_service_pb2_grpc as order_grpc
from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pool_grpc
from scripts.processes import ServiceProcess, stop_all
from tests import releases
from tests.balancer import Balancer
from tests.chaos import ChaosReport, log_problems, no_work_done_twice, service_env
from tests.chaos.feed import SUBSCRIBER_CREDENTIAL, FeedConsumer, check_feed, log_end
from tests.chaos.load import CLIENT_OPTIONS, Load
from tests.databases import DatabaseFactory
from tests.e2e.conftest import local_only
from tests.invariants import check_all
from tests.schema_catalog import released_surface, surface

WORKERS = 8
SERVICES = ("wallet_pool_service", "order_service")


@dataclass
class Rollout:
    """Each service's replicas (old ones first) and the front the clients call."""

    env: dict[str, str]
    log_dir: Path
    old_python: Path
    fronts: dict[str, Balancer] = field(default_factory=dict)
    replicas: dict[str, list[ServiceProcess]] = field(default_factory=dict)
    stopped: list[ServiceProcess] = field(default_factory=list)

    def _env(self, service: str) -> dict[str, str]:
        if service == "order_service":
            front = self.fronts["wallet_pool_service"].port
            return {**self.env, "WALLET_POOL_TARGET": f"127.0.0.1:{front}"}
        return self.env

    async def start(self, service: str, name: str, *, old: bool) -> ServiceProcess:
        process = ServiceProcess(
            service,
            self._env(service),
            self.log_dir / f"{service}_{name}.log",
            python=self.old_python if old else None,
            cwd=self.old_python.parents[2] if old else None,
        )
        port = await process.start()
        self.replicas.setdefault(service, []).append(process)
        self.fronts[service].backends.append(port)
        return process

    async def replace(self, service: str, old: ServiceProcess, name: str) -> None:
        """A new replica up and in the Service; then the old one out of it, and SIGTERMed."""
        await self.start(service, name, old=False)
        self.fronts[service].backends.remove(old.port)
        self.replicas[service].remove(old)
        code = await old.stop()
        assert code == 0, f"{old.log_path.name} stopped with {code}:\n{old.logs()[-2000:]}"
        self.stopped.append(old)

    def processes(self) -> list[ServiceProcess]:
        return [p for service in SERVICES for p in self.replicas.get(service, [])]


@pytest.fixture
async def rollout(databases: DatabaseFactory, tmp_path: Path) -> AsyncIterator[Rollout]:
    old_python = await asyncio.to_thread(releases.install, releases.previous_release())
    env = service_env(
        await databases.create(migrated=False),
        {
            "ORDER_TTL_SECONDS": "8",
            "EXPIRY_CHECK_SECONDS": "0.5",
            "WALLET_COOLDOWN_SECONDS": "0.5",
            "AUTH_TOKENS": SUBSCRIBER_CREDENTIAL,
        },
    )
    run = Rollout(env, tmp_path, old_python)
    try:
        for service in SERVICES:
            run.fronts[service] = Balancer()
            await run.fronts[service].start()
            # The old release's replicas start together on an empty database.
            await asyncio.gather(*(run.start(service, name, old=True) for name in "ab"))
        yield run
    finally:
        await stop_all(run.processes())
        for front in run.fronts.values():
            await front.close()


@local_only("runs the previous release's own installation as host processes beside this one")
# Building the previous release's environment, when `make previous-release` has not, takes
# minutes: the only wait here beyond the suite's timeout.
@pytest.mark.timeout(900)
async def test_the_release_rolls_out_over_the_previous_one_under_load_with_no_failed_call(
    rollout: Rollout,
) -> None:
    if not os.environ.get("UPGRADE_FROM"):
        await _released_schema_is_what_the_release_migrated(rollout.env["DATABASE_URL"])
    seed = random.randrange(2**32)
    report = ChaosReport(seed, 0)
    channels = {
        service: grpc.aio.insecure_channel(f"127.0.0.1:{front.port}", CLIENT_OPTIONS)
        for service, front in rollout.fronts.items()
    }
    orders = order_grpc.OrderServiceStub(channels["order_service"])
    load = Load(
        orders, pool_grpc.WalletPoolServiceStub(channels["wallet_pool_service"]), report, seed
    )
    await load.add_wallets(12)
    feed = FeedConsumer(orders, report, seed)
    feed.start()
    tasks = [asyncio.create_task(load.worker()) for _ in range(WORKERS)]
    tasks.append(asyncio.create_task(load.operator()))
    try:
        await asyncio.sleep(4)
        for service in SERVICES:
            for index, old in enumerate(list(rollout.replicas[service])):
                await rollout.replace(service, old, f"new{index}")
                await asyncio.sleep(2)
        await asyncio.sleep(3)
        load.stop.set()
        await asyncio.gather(*tasks)
        violations = await _check_at_end(rollout, load, feed, report)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await feed.stop()
        for channel in channels.values():
            await channel.close(None)
    # A watch stream on a replica that stops ends with UNAVAILABLE, as README says; the
    # consumer watches again from its last sequence, and check_feed judges what it got.
    # So does a create a stopping replica received but never started (CANCELLED, gRPC's
    # grpc/grpc#41785; what can be repeated the channel repeats, shared/channels.py): a keyed
    # one is repeated, and _check_at_end finds that none of them created an order.
    failed = {
        kind: {
            code: n
            for code, n in codes.items()
            if code != "OK" and not (code == "CANCELLED" and kind in ("create", "create_again"))
        }
        for kind, codes in report.calls.items()
        if kind != "watch_events"
    }
    print(f"upgrade (seed {seed}): {report.orders} orders, answers {report.calls}, {report.feed}")
    assert report.orders > 0 and report.feed.events > 0
    assert {kind: codes for kind, codes in failed.items() if codes} == {}, f"seed {seed}"
    assert (
        violations + [v for v in report.violations if not _old_stream_on_a_stale_plan(v)] == []
    ), f"seed {seed}"
    assert sum(map(_old_stream_on_a_stale_plan, report.violations)) <= 1, f"seed {seed}"
    problems = [
        f"{p.log_path.name}: {line}"
        for p in rollout.stopped + rollout.processes()
        for line in log_problems(p.logs())
        if not (p in rollout.stopped and _stale_plan(line))
    ]
    assert problems == []


def _old_stream_on_a_stale_plan(violation: str) -> bool:
    """The previous release's event read (`SELECT e.*` inside its REPEATABLE READ snapshot)
    fails once with INTERNAL when the new release's migration has just added columns to the
    tables it reads (order migration 009): asyncpg cannot prepare it again inside a
    transaction. Its watch stream ends; the consumer watches again from its last sequence and
    check_feed still finds every event once. A defect of that release's code, left in the
    issue's closing note: at most one such answer is let through, on the feed only."""
    return "feed: WatchOrderEvents after" in violation and "answered INTERNAL" in violation


def _stale_plan(line: str) -> bool:
    """The previous release logs a step or a call whose prepared `SELECT *`/`RETURNING *` a
    migration's new columns invalidated, inside a transaction where asyncpg cannot prepare it
    again by itself; a loop's next step does, a call is answered (checked above). This release
    logs a loop's as a warning (shared/loops.py)."""
    return "InvalidCachedStatementError" in line


async def _released_schema_is_what_the_release_migrated(url: str) -> None:
    """protos/released_schema.txt (what test_definitions holds every later schema to) is the
    surface of the schema the previous release itself migrated."""
    conn = await asyncpg.connect(url)
    try:
        migrated = await surface(conn)
    finally:
        await conn.close()
    assert released_surface() == migrated


async def _check_at_end(
    rollout: Rollout, load: Load, feed: FeedConsumer, report: ChaosReport
) -> list[str]:
    pool = await asyncpg.create_pool(rollout.env["DATABASE_URL"], min_size=1, max_size=2)
    assert pool is not None
    try:
        violations = await check_all(pool, load.acknowledged, settle_seconds=30)
        async with pool.acquire() as conn:
            violations += await no_work_done_twice(conn)
            orders = await conn.fetchval("SELECT count(*) FROM orders.orders")
            if orders != report.orders:
                violations.append(f"{orders} orders, {report.orders} creates answered OK")
            end, history_through = await log_end(conn, report, 15)
            await feed.catch_up(end, 30)
            await feed.stop()
            violations += await check_feed(
                conn, feed.received, load.acknowledged_statuses, history_through
            )
    finally:
        with contextlib.suppress(Exception):
            await pool.close()
    return violations
