"""The alert rules and the Grafana dashboard under deploy/ name only series the services
really export, with labels those series carry: both services run as processes, one order
lifecycle (a queued order and a watch included) makes their labelled series exist, and
the metric names in every rule's `expr` and every panel's `targets[].expr` are compared with
what `/metrics` of both serves.

The comparison is with sample names as Prometheus stores them (a counter family
`order_release_attempts` is the series `order_release_attempts_total`; a histogram
`grpc_server_handling_seconds` is `..._bucket`, `..._sum` and `..._count`), so a query of a
family name that no series carries fails as it would in Prometheus."""

import asyncio
import time

import grpc
import pytest

from exchange.order.v1 import order_service_pb2 as opb
from tests.e2e.conftest import own_stack
from tests.e2e.stack import OwnStack
from tests.e2e.test_deposits import chain_deposit, report
from tests.e2e.test_operations import scrape
from tests.e2e.test_release_flow import add_wallets, create, eth_address, finish
from tests.e2e.test_watch import Watch
from tests.monitoring import (
    alert_queries,
    dashboard_queries,
    exported,
    load_dashboard,
    load_rules,
    parse,
    problems,
    sample_value,
)
from tests.waiting import HANG_GUARD_SECONDS

POOL = "exchange.wallet_pool.v1.WalletPoolService"
# The services' own metric families (the Prometheus client adds process_* and python_*).
OWN_PREFIXES = ("grpc_", "order_", "wallet_pool_")


async def one_lifecycle_with_a_queue_and_a_watch(stack: OwnStack) -> None:
    await add_wallets(stack, "ETH", [eth_address()])
    holder, waiting = await create(stack), await create(stack)
    # The ETH watcher reports a deposit to the holder's address.
    await report(stack, 10, chain_deposit(holder.wallet_address, height=9))
    watch = Watch(stack, waiting.id, stack.client)
    await watch.until("ALLOCATION_QUEUED")
    await finish(stack, holder.id, opb.ORDER_STATUS_COMPLETED)
    await finish(stack, waiting.id, opb.ORDER_STATUS_CANCELLED)
    assert await asyncio.wait_for(watch.ended, HANG_GUARD_SECONDS) == grpc.StatusCode.OK


async def scrape_both(stack: OwnStack) -> tuple[str, str]:
    """Both services' metrics, once the pool's gauges were refreshed after the lifecycle."""
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while True:
        order = await scrape(stack.order_process.metrics_port)
        pool = await scrape(stack.pool_process.metrics_port)
        # Both in one refresh: after the report, the wallet is free only after the lifecycle.
        refreshed = 'wallet_pool_watcher_scanned_height{network="ETH"} 10.0' in pool
        if refreshed and 'wallet_pool_wallets{network="ETH",state="available"} 1.0' in pool:
            return order, pool
        assert time.monotonic() < deadline, pool
        await asyncio.sleep(0.1)


@own_stack
async def test_alerts_and_dashboard_name_only_series_and_labels_the_services_export(
    stack: OwnStack,
) -> None:
    await one_lifecycle_with_a_queue_and_a_watch(stack)
    samples, families = exported(*await scrape_both(stack))
    # The lifecycle made the labelled series exist (a family with no child has no sample).
    assert {
        "order_release_attempts_total",
        "order_watch_streams",
        "grpc_server_handling_seconds_bucket",
        "wallet_pool_queue_length",
        "grpc_health_serving",
    } <= set(samples)

    assert problems(alert_queries(load_rules()), samples) == []
    assert problems(dashboard_queries(load_dashboard()), samples) == []

    # The dashboard shows every family of the services' own; a family is shown when one of
    # its series is (a counter's _total, a histogram's _bucket).
    shown = {
        selector.metric
        for query in dashboard_queries(load_dashboard())
        for selector in parse(query.expr)[0]
    }
    own = {
        family
        for family in families
        # x_created: when the client created a counter's or histogram's series.
        if family.startswith(OWN_PREFIXES) and not family.endswith("_created")
    }
    missing = {
        family
        for family in own
        if not any(name == family or name.startswith(f"{family}_") for name in shown)
    }
    assert missing == set()


@own_stack
# No allocation sync meanwhile: the calls counted are the test's own.
@pytest.mark.stack_env(ALLOCATION_SYNC_SECONDS="3600")
async def test_the_order_service_counts_and_times_its_calls_to_the_pool_by_method_and_code(
    stack: OwnStack,
) -> None:
    await add_wallets(stack, "ETH", [eth_address()])
    order = await create(stack)
    await finish(stack, order.id, opb.ORDER_STATUS_CANCELLED)
    metrics = await scrape(stack.order_process.metrics_port)

    def client(name: str, method: str, **labels: str) -> float:
        return sample_value(
            metrics, name, grpc_type="unary", grpc_service=POOL, grpc_method=method, **labels
        )

    for method in ("AllocateWallet", "ReleaseWallet"):
        assert client("grpc_client_started_total", method) == 1
        assert client("grpc_client_handled_total", method, grpc_code="OK") == 1
        assert client("grpc_client_handling_seconds_count", method) == 1
    # The hand-off stream is open on both ends: started, not yet handled.
    hand_offs = {"grpc_type": "server_stream", "grpc_service": POOL, "grpc_method": "WatchHandOffs"}
    assert sample_value(metrics, "grpc_client_started_total", **hand_offs) >= 1
    pool = await scrape(stack.pool_process.metrics_port)
    assert (
        sample_value(pool, "grpc_server_started_total", **hand_offs)
        - sample_value(pool, "grpc_server_handled_total", **hand_offs)
        == 1
    )
    assert (
        sample_value(
            pool, "grpc_server_started_total", grpc_type="unary", grpc_method="AllocateWallet"
        )
        == 1
    )

    # With the pool gone, the calls fail, and say how.
    await stack.pool_process.stop()
    waiting = await create(stack)
    assert not waiting.wallet_address
    metrics = await scrape(stack.order_process.metrics_port)
    assert client("grpc_client_handled_total", "AllocateWallet", grpc_code="UNAVAILABLE") == 1
    assert client("grpc_client_handled_total", "AllocateWallet", grpc_code="OK") == 1
    # One call (its transparent retries inside it), started and ended.
    assert client("grpc_client_started_total", "AllocateWallet") == 2
    assert client("grpc_client_handling_seconds_count", "AllocateWallet") == 2
