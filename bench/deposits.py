"""9: what a chain watcher's deposit reports cost the claim cycle (bench/README.md)."""

from __future__ import annotations

import asyncio
import functools
import itertools
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import grpc

from bench.harness import Run, baseline_row, in_rounds, in_turn, load
from bench.loadgen import CYCLE, LoadResult, Window
from bench.stack import connected, pids_of
from bench.stats import Latency
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pool_grpc
from shared.timestamps import to_timestamp
from tests.e2e.stack import WATCHER_TOKEN, bearer

DEPOSITS = "9 deposit reports"
_REPORTS = 100
_PER_REPORT = 100
_CONCURRENCY = 32
_THROUGHPUT_TARGET = 0.90


class Reporter:
    """Reports of deposits to pool addresses, spread evenly over a window."""

    def __init__(self, pool_addr: str, addresses: list[str]) -> None:
        self._channel = grpc.aio.insecure_channel(pool_addr)
        self._pool = pool_grpc.WalletPoolServiceStub(self._channel)
        self._addresses = itertools.cycle(addresses)
        self.height = 0
        self.recorded = 0
        self.failed: list[str] = []
        self.latencies: list[float] = []

    async def during(self, window: Window) -> None:
        interval = (window.end - window.start) / _REPORTS
        for n in range(_REPORTS):
            await asyncio.sleep(max(0.0, window.start + n * interval - time.monotonic()))
            await self._report()

    async def _report(self) -> None:
        self.height += 1
        now = to_timestamp(datetime.now(UTC))
        deposits = [
            wpb.ChainDeposit(
                address=next(self._addresses),
                txid="0x" + secrets.token_hex(32),
                amount="0.01",
                block_height=self.height,
                block_time=now,
                confirmations=1,
            )
            for _ in range(_PER_REPORT)
        ]
        request = wpb.ReportDepositsRequest(
            network="ETH", deposits=deposits, scanned_height=self.height
        )
        started = time.monotonic()
        try:
            response = await self._pool.ReportDeposits(
                request, metadata=bearer(WATCHER_TOKEN), timeout=10
            )
        except grpc.aio.AioRpcError as exc:
            self.failed.append(exc.code().name)
            return
        self.latencies.append(time.monotonic() - started)
        self.recorded += response.recorded

    async def close(self) -> None:
        await self._channel.close(None)


async def deposit_reports(run: Run) -> None:
    settings = run.settings
    print(
        f"{DEPOSITS}: the claim cycle at concurrency {_CONCURRENCY} over "
        f"{settings.claim_pool_size:,} wallets, {settings.deposit_pairs} pairs of windows "
        f"without and with {_REPORTS * _PER_REPORT:,} deposits reported in batches of "
        f"{_PER_REPORT}",
        flush=True,
    )
    async with run.stack("deposits") as (database, stack):
        async with connected(database) as conn:
            query = "SELECT address FROM wallet_pool.wallets ORDER BY random() LIMIT 2000"
            reporter = Reporter(stack.pool_addr, [r["address"] for r in await conn.fetch(query)])
        window = functools.partial(load, run, run.job(CYCLE, stack, _CONCURRENCY), pids_of(stack))
        arms = {
            "without": functools.partial(window, None),
            "with": functools.partial(window, None, reporter.during),
        }
        try:
            results, cpu = await in_rounds(settings.deposit_pairs, arms)
        finally:
            await reporter.close()
    _report(run, reporter, results, cpu)


def _report(
    run: Run, reporter: Reporter, results: dict[str, list[LoadResult]], cpu: dict[str, list[Any]]
) -> None:
    expected = run.settings.deposit_pairs * _REPORTS * _PER_REPORT
    lost = expected - reporter.recorded
    report_latency = Latency.of(reporter.latencies)
    with_reports = in_turn(
        run,
        f"{DEPOSITS}: claim cycle while {_REPORTS * _PER_REPORT:,} deposits are reported in "
        f"batches of {_PER_REPORT}",
        _CONCURRENCY,
        CYCLE,
        (results["without"], results["with"]),
        "without",
        _THROUGHPUT_TARGET,
        (
            f"report p50 {report_latency.p50:.1f} ms p99 {report_latency.p99:.1f} ms",
            f"{lost} deposits not recorded" if lost else "",
            f"reports failed: {', '.join(reporter.failed)}" if reporter.failed else "",
        ),
        ok=not lost,
    )
    label = "  claim cycle without reports, windows in turn with the above"
    run.details["deposits"] = {
        "reports_per_window": _REPORTS,
        "deposits_per_report": _PER_REPORT,
        "concurrency": _CONCURRENCY,
        "pairs": run.settings.deposit_pairs,
        "without": baseline_row(run, label, _CONCURRENCY, CYCLE, results["without"]),
        "with": with_reports,
        "recorded": reporter.recorded,
        "expected": expected,
        "report_latency_ms": report_latency.to_json(),
        "cpu_cores": {"without": cpu["without"][0], "with": cpu["with"][0]},
        "cpu_cores_windows": cpu,
    }
