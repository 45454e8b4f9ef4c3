"""5: each service's resident memory after many lifecycles."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from bench.harness import Run, errors_of, summary
from bench.loadgen import LIFECYCLE, LoadJob, run_load
from bench.report import Row
from bench.stack import pids_of, target_of
from bench.system import rss

MEMORY = "5 memory"


async def memory(run: Run) -> None:
    settings = run.settings
    small, large = settings.lifecycles_small, settings.lifecycles_large
    concurrency = settings.lifecycle_concurrency
    print(f"{MEMORY} after {small:,} and {large:,} lifecycles (concurrency {concurrency})")
    async with run.stack("memory") as (_, stack):
        await asyncio.sleep(1.0)
        pids = pids_of(stack)
        at_start = rss(pids)
        job = LoadJob(LIFECYCLE, target_of(stack), concurrency, total_ops=small)
        first = await run_load(job, settings.client_processes)
        after_small = rss(pids)
        print(f"  {small:,} lifecycles in {first.seconds:.0f} s ({first.throughput:,.0f}/s)")
        second = await run_load(replace(job, total_ops=large - small), settings.client_processes)
        after_large = rss(pids)
        print(f"  {large:,} lifecycles after {second.seconds:.0f} s more")
    for name in pids:
        rss_small, rss_large = after_small[name]["VmRSS"], after_large[name]["VmRSS"]
        growth_ratio = rss_large / rss_small if rss_small else 0.0
        errors = errors_of(first) or errors_of(second)
        run.add(
            Row(
                scenario=f"{MEMORY}: {name} RSS after {small:,} -> {large:,} lifecycles",
                concurrency=str(concurrency),
                measured=f"{rss_small:.1f} -> {rss_large:.1f} MB",
                throughput=second.throughput,
                baseline=f"{at_start[name]['VmRSS']:.1f} MB at start",
                ratio=growth_ratio,
                target="<= 150 MB, growth < 1.10 x",
                met=max(rss_small, rss_large) <= 150.0 and growth_ratio < 1.10 and not errors,
                note=errors,
            )
        )
    run.details["memory"] = {
        "lifecycles": [small, large],
        "concurrency": concurrency,
        "mb_at_start": at_start,
        "mb_after_small": after_small,
        "mb_after_large": after_large,
        "first": summary(first),
        "second": summary(second),
    }
