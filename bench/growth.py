"""4: allocation latency as the pool and a queue grow (rows put in with SQL)."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import asyncpg

from bench.harness import Run, errors_of, summary
from bench.loadgen import CYCLE, LoadJob, LoadResult, run_load
from bench.report import Row
from bench.stack import (
    add_queued_orders,
    add_wallets,
    clear_queue,
    connected,
    start_services,
    target_of,
)
from bench.stats import Latency
from shared.sql import load_queries

GROWTH = "4 growth: allocate"

_NETWORKS = ["BTC", "ETH", "TRON"]
_BACKGROUND_QUERIES: dict[str, tuple[str, tuple[tuple[Any, ...], ...]]] = {
    # label: (query, the argument lists to try): what the pool's loops and GetPoolStats run
    # while calls are served. The sweep's query took no argument before it took the networks.
    "networks_ready_for_hand_off (sweep, every HAND_OFF_SWEEP_SECONDS)": (
        "networks_ready_for_hand_off",
        ((_NETWORKS,), ()),
    ),
    "wallet_counts (gauges every METRICS_REFRESH_SECONDS, GetPoolStats)": (
        "wallet_counts",
        (("",),),
    ),
    "queue_counts (gauges, GetPoolStats)": ("queue_counts", (("",),)),
}


async def _background_query_ms(url: str) -> dict[str, float]:
    queries = load_queries("wallet_pool_service")
    timings: dict[str, float] = {}
    async with connected(url) as conn:
        for label, (name, candidates) in _BACKGROUND_QUERIES.items():
            for args in candidates:
                samples = []
                try:
                    for _ in range(3):
                        started = time.perf_counter()
                        await conn.fetch(queries[name], *args)
                        samples.append((time.perf_counter() - started) * 1000)
                except (asyncpg.PostgresError, asyncpg.InterfaceError):
                    continue  # another signature of the query
                timings[label] = round(statistics.median(samples), 3)
                break
    return timings


async def _wallet_count(url: str, network: str) -> int:
    async with connected(url) as conn:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM wallet_pool.wallets WHERE network = $1", network
        )
    return count


async def growth(run: Run) -> None:
    settings = run.settings
    sizes = settings.growth_sizes
    print(f"{GROWTH} p50 with {', '.join(f'{n:,}' for n in sizes)} wallets", flush=True)
    database = await run.server.database()
    await add_wallets(database, "ETH", 1, sizes[0])
    stack = await start_services(database, run.work_dir / "growth")
    points: list[dict[str, Any]] = []
    try:
        await asyncio.sleep(1.0)

        async def measure(network: str) -> tuple[Latency, LoadResult]:
            job = LoadJob(
                CYCLE,
                target_of(stack),
                1,
                settings.warmup_seconds,
                settings.duration_seconds,
                network,
            )
            result = await run_load(job, 1)
            return Latency.of(result.latencies.get("allocate", [])), result

        base, result = await measure("ETH")
        points.append(
            {
                "case": f"{sizes[0]} wallets",
                "allocate_ms": base.to_json(),
                **summary(result),
                "background_query_ms": await _background_query_ms(database),
            }
        )
        run.add(
            Row(
                scenario=f"{GROWTH}, {sizes[0]:,} wallets (baseline)",
                concurrency="1",
                throughput=result.throughput,
                p50=base.p50,
                p99=base.p99,
                baseline="itself",
                ratio=1.0,
                note=errors_of(result),
            )
        )

        def add_row(label: str, latency: Latency, result: LoadResult) -> None:
            ratio = latency.p50 / base.p50 if base.p50 else 0.0
            run.add(
                Row(
                    scenario=f"{GROWTH}, {label}",
                    concurrency="1",
                    throughput=result.throughput,
                    p50=latency.p50,
                    p99=latency.p99,
                    baseline=f"p50 {base.p50:.2f} ms at {sizes[0]:,} wallets",
                    ratio=ratio,
                    target="p50 <= 1.3 x baseline",
                    met=ratio <= 1.3 and not result.errors,
                    note=errors_of(result),
                )
            )

        queued = settings.growth_queue
        await add_queued_orders(database, "BTC", queued)
        latency, result = await measure("ETH")
        label = f"{sizes[0]:,} wallets + {queued:,} orders queued (BTC)"
        add_row(label, latency, result)
        points.append(
            {
                "case": label,
                "allocate_ms": latency.to_json(),
                **summary(result),
                "background_query_ms": await _background_query_ms(database),
            }
        )
        latency, result = await measure("BTC")
        label = f"joining the back of a {queued:,}-order queue (BTC)"
        add_row(label, latency, result)
        points.append({"case": label, "allocate_ms": latency.to_json(), **summary(result)})
        await clear_queue(database, "BTC")

        current = sizes[0]
        for size in sizes[1:]:
            started = time.monotonic()
            await add_wallets(database, "ETH", current + 1, size - current)
            print(f"  ({size - current:,} wallets added in {time.monotonic() - started:.1f} s)")
            current = size
            held = await _wallet_count(database, "ETH")
            if held != size:
                raise RuntimeError(f"the pool has {held:,} ETH wallets, expected {size:,}")
            latency, result = await measure("ETH")
            add_row(f"{size:,} wallets", latency, result)
            points.append(
                {
                    "case": f"{size} wallets",
                    "allocate_ms": latency.to_json(),
                    **summary(result),
                    "background_query_ms": await _background_query_ms(database),
                }
            )
    finally:
        await stack.close()
        await run.server.drop(database)
    run.details["growth"] = {"sizes": list(sizes), "queue": settings.growth_queue, "points": points}
