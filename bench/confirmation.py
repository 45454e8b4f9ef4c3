"""10: what confirming events by the synchronous standby costs (bench/README.md)."""

from __future__ import annotations

import asyncio
import functools

from bench.harness import Run, baseline_row, in_rounds, in_turn, load, service_cpu_ms
from bench.loadgen import LIFECYCLE
from bench.stack import add_wallets, connected, pids_of, start_services
from tests.chaos.replication import DATABASE, ReplicatedCluster
from tests.e2e.stack import LocalStack

CONFIRMATION = "10 confirmation"
ARMS = {"confirmed": "order_service", "without": "bench.order_without_confirmation"}


async def _event_log(url: str) -> dict[str, int]:
    async with connected(url) as conn:
        row = await conn.fetchrow("SELECT last_sequence, confirmed_through FROM orders.event_log")
    assert row is not None
    return dict(row)


async def confirmation_cost(run: Run) -> None:
    concurrency, rounds = run.settings.lifecycle_concurrency, run.settings.confirmation_rounds
    print(
        f"{CONFIRMATION}: {rounds} rounds of lifecycle windows at concurrency {concurrency} "
        "on a primary with a synchronous standby: events confirmed, and without",
        flush=True,
    )
    cluster = ReplicatedCluster()
    stacks: dict[str, LocalStack] = {}
    try:
        await cluster.start()
        async with connected(cluster.primary.url("postgres")) as conn:
            await conn.execute("CREATE DATABASE exchange_without")
        urls = {"confirmed": cluster.url(DATABASE), "without": cluster.url("exchange_without")}
        for name, module in ARMS.items():
            stacks[name] = await start_services(
                urls[name], run.work_dir / f"confirmation-{name}", order_module=module
            )
            await add_wallets(
                _node_url(cluster, urls[name]), "ETH", 1, run.settings.claim_pool_size
            )
        await asyncio.sleep(1.0)  # background loops' first round
        arms = {
            name: functools.partial(
                load, run, run.job(LIFECYCLE, stack, concurrency), pids_of(stack), None
            )
            for name, stack in stacks.items()
        }
        results, cpu = await in_rounds(rounds, arms, alternate=True)
        await asyncio.sleep(1.0)  # the last sequencer runs
        logs = {name: await _event_log(_node_url(cluster, urls[name])) for name in ARMS}
    finally:
        for stack in stacks.values():
            await stack.close()
        await cluster.close()
    cost = {name: service_cpu_ms(results[name], cpu[name]) for name in ARMS}
    shown = logs["confirmed"]
    confirmed = in_turn(
        run,
        f"{CONFIRMATION}: lifecycle, events shown once the standby has them",
        concurrency,
        LIFECYCLE,
        (results["without"], results["confirmed"]),
        "without",
        None,
        (
            f"services' CPU {cost['confirmed']:.2f} ms per lifecycle "
            f"(without {cost['without']:.2f})",
            f"shown {shown['confirmed_through']} of {shown['last_sequence']} numbered",
        ),
    )
    label = "  lifecycle without the confirmation, windows in turn with the above"
    run.details["confirmation"] = {
        "concurrency": concurrency,
        "confirmed": confirmed,
        "without": baseline_row(run, label, concurrency, LIFECYCLE, results["without"]),
        "services_cpu_ms_per_lifecycle": {name: round(ms, 3) for name, ms in cost.items()},
        "event_log": logs,
        "cpu_cores_windows": cpu,
    }


def _node_url(cluster: ReplicatedCluster, url: str) -> str:
    """The primary's own URL of the database `url` names (the cluster's lists both nodes)."""
    return cluster.primary.url(url.rpartition("/")[2].partition("?")[0])
