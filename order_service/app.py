"""Wiring of the order service: settings, database, pool channel, server, loops, shutdown."""

import asyncio
import logging

import asyncpg

from exchange.order.v1 import order_service_pb2_grpc as pb_grpc
from order_service import metrics
from order_service.config import OrderSettings
from order_service.feed import OrderFeed
from order_service.manager import OrderManager, ReleasePolicy
from order_service.servicer import METHOD_ROLES, SERVICE_NAME, OrderServicer
from order_service.wallet_pool_client import GrpcWalletPoolGateway
from shared.config import run_service
from shared.db import apply_migrations, close_pool
from shared.embedded_db import resolve_database
from shared.grpc_server import GrpcServer
from shared.listen import Listener
from shared.loops import PeriodicTask
from shared.proto import same_fields
from shared.tracing import Tracing, run_traced
from shared.wiring import open_pools, service_server, start_serving, stop_task

log = logging.getLogger(__name__)

SCHEMA = "orders"
# Of a graceful stop's grace period, what calls cut off from the pool keep for answering.
_ANSWER_AFTER_CUT_OFF_SECONDS = 1.0


async def serve(settings: OrderSettings) -> None:
    await run_traced(settings.tracing, "order_service", lambda tracing: _serve(settings, tracing))


async def _serve(settings: OrderSettings, tracing: Tracing) -> None:
    url, embedded = resolve_database(
        settings.database_url, settings.environment, settings.embedded_data_dir
    )
    pool, listen_pool = await open_pools(url, settings, "order_service")
    gateway = GrpcWalletPoolGateway.connect(
        settings.wallet_pool_target,
        settings.wallet_pool_timeout_seconds,
        settings.service_token,
        settings.wallet_pool_tls,
        tracing.client_interceptors(),
    )
    loops: list[PeriodicTask] = []
    listener: asyncio.Task[None] | None = None
    feed: OrderFeed | None = None
    try:
        await apply_migrations(pool, SCHEMA, "order_service.migrations")
        manager = _manager(settings, pool, gateway)
        feed = manager.feed
        server = _server(settings, tracing, manager, gateway)
        loops = _loops(settings, server, manager)
        await start_serving(settings, server, loops)
        listener = asyncio.create_task(
            Listener(
                listen_pool or pool,
                "order listener",
                manager.feed.handlers,
                manager.feed.on_connect,
            ).run(),
            name="order-listener",
        )
        await server.run_until_stopped()
    finally:
        await _stop_background(listener, feed, loops)
        await gateway.close()
        await close_pool(pool)
        if listen_pool is not None:
            await close_pool(listen_pool)
        if embedded is not None:
            embedded.close()
        log.info("stopped")


def _manager(
    settings: OrderSettings, pool: asyncpg.Pool, gateway: GrpcWalletPoolGateway
) -> OrderManager:
    return OrderManager(
        pool,
        gateway,
        settings.networks,
        ReleasePolicy(
            # Long enough for an inline attempt (with its transparent retries) to finish;
            # short enough that a crash right after commit delays the release little.
            lease_seconds=5 * settings.wallet_pool_timeout_seconds,
            backoff_cap_seconds=settings.release_retry_max_backoff_seconds,
        ),
        sync_lease_seconds=max(
            settings.allocation_sync_seconds, settings.wallet_pool_timeout_seconds
        ),
        # Settings the manager takes under their own names.
        **same_fields(
            settings,
            "order_ttl_seconds",
            "event_retention_seconds",
            "max_watch_streams",
            "assets",
            "tolerance",
            "completion_requires_payment",
        ),
    )


def _server(
    settings: OrderSettings,
    tracing: Tracing,
    manager: OrderManager,
    gateway: GrpcWalletPoolGateway,
) -> GrpcServer:
    servicer = OrderServicer(manager)

    def stop_waiting(grace: float) -> None:
        # Watchers end (they watch again elsewhere); calls waiting on the pool give up
        # in time to answer with what they committed.
        manager.feed.close()
        gateway.cut_off(max(0.0, grace - _ANSWER_AFTER_CUT_OFF_SECONDS))

    return service_server(
        settings,
        tracing,
        SERVICE_NAME,
        lambda s: pb_grpc.add_OrderServiceServicer_to_server(servicer, s),
        METHOD_ROLES,
        stop_waiting,
    )


def _loops(
    settings: OrderSettings, server: GrpcServer, manager: OrderManager
) -> list[PeriodicTask]:
    """The background loops, not started yet."""

    async def publish_pending_releases() -> bool:
        metrics.PENDING_RELEASES.set(await manager.releases.count_pending())
        return False

    loops = [
        server.follow_dependency(manager.database_ready, settings.health_check_seconds),
        PeriodicTask("release-retry", manager.releases.deliver_due, settings.release_retry_seconds),
        PeriodicTask(
            "allocation-sync",
            manager.allocation.sync_waiting_orders,
            settings.allocation_sync_seconds,
        ),
        PeriodicTask("pending-release-gauge", publish_pending_releases, 5.0),
        PeriodicTask("deposit-sync", manager.deposits.sync, settings.deposit_sync_seconds),
        # Reconnects half a second after the stream ends.
        PeriodicTask("hand-off-watch", manager.allocation.follow_hand_offs, 0.5),
        # The safety net of the sequencer runs that follow each change heard of.
        PeriodicTask(
            "event-sequencer", manager.events.sequence_events, settings.event_sequencer_seconds
        ),
        PeriodicTask(
            "event-retention",
            manager.events.expire_events,
            min(60.0, settings.event_retention_seconds / 4),
        ),
    ]
    if settings.order_ttl_seconds:
        loops.append(
            PeriodicTask(
                "expiry", manager.expiry.expire_stale_orders, settings.expiry_check_seconds
            )
        )
    return loops


async def _stop_background(
    listener: asyncio.Task[None] | None, feed: OrderFeed | None, loops: list[PeriodicTask]
) -> None:
    """The listener, the feed's sequencer runs and the loops, stopped in that order."""
    await stop_task(listener)
    if feed is not None:
        await feed.stop()
    for loop in loops:
        await loop.stop()


def main() -> None:
    run_service("order_service", OrderSettings.from_env, serve)
