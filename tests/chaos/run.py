"""The chaos run (README, Tests: `make chaos`): blows struck at random while the load, the
feed consumer and the chain watcher run, then the checks at the end and the report."""

import asyncio
import contextlib
import random
import signal
import time
from pathlib import Path

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from exchange.order.v1 import order_service_pb2_grpc as order_grpc
from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pool_grpc
from scripts.processes import ServiceProcess
from shared.db import is_database_outage
from tests.chaos.checks import final_state, log_problems, money_counts, no_work_done_twice
from tests.chaos.cli import parse_args, run_and_exit, seed_and_log_dir
from tests.chaos.feed import SUBSCRIBER_CREDENTIAL, FeedConsumer, check_feed, log_end
from tests.chaos.load import CLIENT_OPTIONS, Load, health
from tests.chaos.replication import ReplicatedCluster
from tests.chaos.report import ChaosReport
from tests.chaos.watcher import REUSE_CONFIRMATIONS, ChainWatcher
from tests.e2e import stack
from tests.invariants import (
    check_all,
    deposits_have_one_disposition_and_only_counted_ones_hold_or_count,
    no_address_held_by_two_live_orders,
    payment_status_is_the_function_of_the_recorded_deposits,
)
from tests.invariants_api import Api

_QUIET = {"ORDER_METRICS_ADDR": "off", "WALLET_POOL_METRICS_ADDR": "off"}
_QUIET["HAND_OFF_SWEEP_SECONDS"] = "0.5"


def service_env(database_url: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The suite's service environment without metrics ports, with a quicker hand-off sweep."""
    return stack.service_env(database_url, extra={**_QUIET, **(extra or {})})


class ChaosRun:
    def __init__(self, seconds: float, seed: int, log_dir: Path, workers: int) -> None:
        self.seconds = seconds
        self.seed = seed
        self.log_dir = log_dir
        self.workers = workers
        self.report = ChaosReport(seed, seconds, log_dir=log_dir)
        self._chaos_rng = random.Random(f"{seed}:chaos")
        self._down: set[str] = set()
        self.cluster = ReplicatedCluster()
        self.processes: dict[str, ServiceProcess] = {}
        self._channels: list[grpc.aio.Channel] = []

    async def _start_services(self) -> tuple[Load, FeedConsumer, ChainWatcher]:
        await self.cluster.start(standby=False)
        extra = {
            **_QUIET,
            # Some lifecycles leave their orders PENDING, to expire.
            "ORDER_TTL_SECONDS": "10",
            "EXPIRY_CHECK_SECONDS": "0.5",
            "WALLET_COOLDOWN_SECONDS": "0.5",
            # A released ETH wallet also waits for the chain watcher (ChainWatcher).
            "WALLET_REUSE_CONFIRMATIONS": f"ETH:{REUSE_CONFIRMATIONS}",
            "AUTH_TOKENS": SUBSCRIBER_CREDENTIAL,
        }
        services = await stack.LocalStack.start(
            self.cluster.primary.url(), self.log_dir, extra_env=extra, service_roles=False
        )
        await stack.Stack.close(services)  # its channels: the clients' reconnect faster
        order, pool = services.order_process, services.pool_process
        # Restarts reuse the first ports (the pool's already), so that the clients find the
        # order service again.
        order.env = {**order.env, "ORDER_SERVICE_ADDR": f"127.0.0.1:{order.port}"}
        self.processes = {"order_service": order, "wallet_pool_service": pool}
        order_channel = grpc.aio.insecure_channel(services.order_addr, CLIENT_OPTIONS)
        pool_channel = grpc.aio.insecure_channel(services.pool_addr, CLIENT_OPTIONS)
        self._channels = [order_channel, pool_channel]
        orders = order_grpc.OrderServiceStub(order_channel)
        pool_stub = pool_grpc.WalletPoolServiceStub(pool_channel)
        load = Load(orders, pool_stub, self.report, self.seed)
        await load.add_wallets(24)
        watcher = ChainWatcher(pool_stub, self.cluster.primary.url(), self.report, self.seed)
        return load, FeedConsumer(orders, self.report, self.seed), watcher

    async def _close(self) -> None:
        for channel in self._channels:
            await channel.close(None)
        for process in self.processes.values():
            if process.process is not None and process.process.poll() is None:
                with contextlib.suppress(TimeoutError):
                    await process.stop()
        await self.cluster.close()

    async def _monitor(self, stop: asyncio.Event) -> None:
        """Invariant 1 must hold at every moment: sample it whenever the database answers."""
        while not stop.is_set():
            await asyncio.sleep(1.0)
            try:
                conn = await asyncpg.connect(self.cluster.primary.url(), timeout=2)
            except Exception as exc:
                if is_database_outage(exc) or isinstance(exc, asyncpg.PostgresError):
                    continue
                raise
            try:
                for violation in await no_address_held_by_two_live_orders(conn):
                    self.report.violation(f"while running: {violation}")
            except Exception as exc:  # a restart cut it: no sample; anything else is loud
                if not is_database_outage(exc):
                    self.report.violation(f"the invariant monitor's query failed: {exc!r}")
            finally:
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)

    def _check_alive(self) -> None:
        """A service nobody killed must still run, whatever the database did."""
        for name, process in self.processes.items():
            assert process.process is not None
            code = process.process.poll()
            if name not in self._down and code is not None:
                tail = "\n".join(process.logs().splitlines()[-15:])
                self.report.violation(
                    f"{name} exited by itself with code {code}; last lines:\n{tail}"
                )
                self._down.add(name)

    async def _kill(self, name: str) -> None:
        self.report.event(f"SIGKILL {name}")
        await self.processes[name].stop(signal.SIGKILL)
        self.report.kills[name] += 1
        self._down.add(name)

    async def _restart(self, name: str) -> None:
        for attempt in range(5):
            try:
                await self.processes[name].start()
            except RuntimeError as exc:
                self.report.violation(f"{name} did not start again (attempt {attempt + 1}): {exc}")
                await asyncio.sleep(1)
                continue
            self.report.event(f"started {name}")
            self._down.discard(name)
            return
        raise RuntimeError(f"{name} does not start any more")

    async def _restart_postgres(self, how: str) -> None:
        self.report.event(f"PostgreSQL {how} restart")
        pause = self._chaos_rng.uniform(0, 2) if how == "crash" else 0.0
        await self.cluster.restart_primary(how == "crash", pause)
        self.report.postgres_restarts[how] += 1
        self.report.event("PostgreSQL is back")
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
        self.report.event("chaos over")

    async def _wait_serving(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        names = ("order_service", "wallet_pool_service")
        for name, channel in zip(names, self._channels, strict=True):
            stub = health_pb2_grpc.HealthStub(channel)
            while await health(stub) != health_pb2.HealthCheckResponse.SERVING:
                if time.monotonic() >= deadline:
                    self.report.violation(f"{name} is not SERVING {seconds:.0f} s after the chaos")
                    break
                await asyncio.sleep(0.2)

    def _phase(self, name: str, since: float) -> float:
        now = time.monotonic()
        self.report.phases.append((name, now - since))
        return now

    async def run(self) -> ChaosReport:
        try:
            load, feed, watcher = await self._start_services()
            await self._drive(load, feed, watcher, self._phase("start-up", self.report.started))
        finally:
            self.report.elapsed = time.monotonic() - self.report.started
            await self._close()
        return self.report

    async def _drive(
        self, load: Load, feed: FeedConsumer, watcher: ChainWatcher, mark: float
    ) -> None:
        feed.start()
        tasks = [asyncio.create_task(load.worker()) for _ in range(self.workers)]
        tasks += [
            asyncio.create_task(load.operator()),
            asyncio.create_task(self._monitor(load.stop)),
            asyncio.create_task(watcher.run(load.stop)),
        ]
        try:
            await self._chaos(mark + self.seconds)
            mark = self._phase("chaos", mark)
            load.stop.set()
            # Lifecycles in flight finish (their retries are bounded).
            await asyncio.gather(*tasks)
            self._check_alive()
            await self._wait_serving(30)
            mark = self._phase("lifecycles ending", mark)
            self.report.violations += [
                f"final check: {v}" for v in await self._check_at_end(load, feed, watcher, mark)
            ]
            for process in self.processes.values():
                self.report.log_problems += log_problems(process.logs())
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await feed.stop()

    async def _check_at_end(
        self, load: Load, feed: FeedConsumer, watcher: ChainWatcher, mark: float
    ) -> list[str]:
        pool = await asyncpg.create_pool(self.cluster.primary.url(), min_size=1, max_size=2)
        try:
            self.report.watcher_height = watcher.height
            self.report.deposits = len(watcher.acknowledged)
            self.report.retracted = watcher.retracted
            violations = await check_all(
                pool,
                load.acknowledged,
                settle_seconds=30,
                deposits=watcher.acknowledged,
                api=Api(load.orders, load.pool, stack.bearer(stack.OPERATOR_TOKEN)),
            )
            async with pool.acquire() as conn:
                violations += await no_work_done_twice(conn)
                violations += (
                    await deposits_have_one_disposition_and_only_counted_ones_hold_or_count(conn)
                )
                violations += await payment_status_is_the_function_of_the_recorded_deposits(conn)
                self.report.final_state = await final_state(conn)
                counts = await money_counts(conn)
            self.report.orders_paid = counts.orders_paid
            self.report.late_deposits = counts.late_deposits
            self.report.guarded_reuses = counts.guarded_reuses
            violations += counts.shortfalls()
            mark = self._phase("settling and checking", mark)
            async with pool.acquire() as conn:
                end, history_through = await log_end(conn, self.report, 15)
                self.report.feed.log_end = end
                await feed.catch_up(end, 30)
                await feed.stop()
                feed_violations = await check_feed(
                    conn, feed.received, load.acknowledged_statuses, history_through
                )
            self._phase("feed catching up and checking", mark)
        finally:
            await pool.close()
        return violations + [f"feed: {v}" for v in feed_violations]


async def run_chaos(
    seconds: float, seed: int | None = None, log_dir: Path | None = None, workers: int = 24
) -> ChaosReport:
    seed, log_dir = seed_and_log_dir("chaos", seed, log_dir, "exchange-chaos-logs-")
    return await ChaosRun(seconds, seed, log_dir, workers).run()


def main() -> None:
    args = parse_args(
        "Chaos: order lifecycles and the event feed while both services are SIGKILLed and "
        "PostgreSQL restarts.",
        seconds=60, seconds_help="how long the chaos lasts", workers=24,
        prog="python -m tests.chaos",
    )  # fmt: skip
    run_and_exit(
        "chaos run", lambda: run_chaos(args.seconds, args.seed, args.log_dir, args.workers)
    )
