"""4: allocation latency as the pool and a queue grow (rows put in with SQL)."""

from __future__ import annotations

import itertools
import statistics
import time
from typing import Any

from bench.harness import Run, errors_of, summary, timed
from bench.loadgen import CYCLE, run_load
from bench.stack import add_wallets, connected
from bench.stats import Latency
from shared.sql import load_queries

GROWTH = "4 growth: allocate"

_NETWORKS = ["BTC", "ETH", "TRON"]
# label: (query, its arguments): what the pool's loops and GetPoolStats run while calls are
# served.
_BACKGROUND_QUERIES: dict[str, tuple[str, tuple[Any, ...]]] = {
    "networks_ready_for_hand_off (sweep, every HAND_OFF_SWEEP_SECONDS)": (
        "networks_ready_for_hand_off",
        (_NETWORKS,),
    ),
    "wallet_counts (gauges every METRICS_REFRESH_SECONDS, GetPoolStats)": ("wallet_counts", ("",)),
    "queue_counts (gauges, GetPoolStats)": ("queue_counts", ("",)),
}


async def _background_query_ms(url: str) -> dict[str, float]:
    queries = load_queries("wallet_pool_service")
    timings: dict[str, float] = {}
    async with connected(url) as conn:
        for label, (name, args) in _BACKGROUND_QUERIES.items():
            samples = []
            for _ in range(3):
                started = time.perf_counter()
                await conn.fetch(queries[name], *args)
                samples.append((time.perf_counter() - started) * 1000)
            timings[label] = round(statistics.median(samples), 3)
    return timings


async def growth(run: Run) -> None:
    settings = run.settings
    sizes, queued = settings.growth_sizes, settings.growth_queue
    print(f"{GROWTH} p50 with {', '.join(f'{n:,}' for n in sizes)} wallets", flush=True)
    points: list[dict[str, Any]] = []
    base: list[Latency] = []
    async with run.stack("growth", wallets=sizes[0]) as (database, stack):

        async def measure(label: str, network: str = "ETH", background: bool = True) -> None:
            result = await run_load(run.job(CYCLE, stack, 1, network), 1)
            latency = Latency.of(result.latencies.get("allocate", []))
            base.append(base[0] if base else latency)
            ratio = latency.p50 / base[0].p50 if base[0].p50 else 0.0
            fields: dict[str, Any] = {"baseline": "itself", "ratio": 1.0}
            if len(base) > 1:
                fields = {
                    "baseline": f"p50 {base[0].p50:.2f} ms at {sizes[0]:,} wallets",
                    "ratio": ratio,
                    "target": "p50 <= 1.3 x baseline",
                    "met": ratio <= 1.3 and not result.errors,
                }
            name = f"{GROWTH}, {label}" + ("" if len(base) > 1 else " (baseline)")
            note = errors_of(result)
            run.add(timed(name, 1, latency, throughput=result.throughput, note=note, **fields))
            point = {"case": label, "allocate_ms": latency.to_json(), **summary(result)}
            if background:
                point["background_query_ms"] = await _background_query_ms(database)
            points.append(point)

        await measure(f"{sizes[0]:,} wallets")
        async with connected(database) as conn:
            # Vacuumed, as autovacuum would have by the time a queue grew this long.
            await conn.execute(
                "INSERT INTO wallet_pool.queue (order_id, network) "
                "SELECT gen_random_uuid(), 'BTC' FROM generate_series(1, $1::bigint)",
                queued,
            )
            await conn.execute("VACUUM ANALYZE wallet_pool.queue, wallet_pool.queue_blocks")
        await measure(f"{sizes[0]:,} wallets + {queued:,} orders queued (BTC)")
        await measure(f"joining the back of a {queued:,}-order queue (BTC)", "BTC", False)
        async with connected(database) as conn:
            await conn.execute("DELETE FROM wallet_pool.queue WHERE network = 'BTC'")
            await conn.execute("VACUUM ANALYZE wallet_pool.queue")
        for current, size in itertools.pairwise(sizes):
            started = time.monotonic()
            await add_wallets(database, "ETH", current + 1, size - current)
            print(f"  ({size - current:,} wallets added in {time.monotonic() - started:.1f} s)")
            async with connected(database) as conn:
                held = await conn.fetchval("SELECT count(*) FROM wallet_pool.wallets")
            if held != size:
                raise RuntimeError(f"the pool has {held:,} wallets, expected {size:,}")
            await measure(f"{size:,} wallets")
    run.details["growth"] = {"sizes": list(sizes), "queue": queued, "points": points}
