"""Wiring of the wallet pool service: settings, manager, server, background loops, shutdown."""

import asyncio
import contextlib
import logging

from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pb_grpc
from shared.auth import Authenticator
from shared.config import run_service
from shared.grpc_server import GrpcServer
from shared.loops import PeriodicTask
from shared.metrics import serve_metrics
from shared.tracing import Tracing
from wallet_pool_service.config import PoolSettings
from wallet_pool_service.manager import WalletPoolManagerFactory
from wallet_pool_service.metrics import PoolGauges
from wallet_pool_service.servicer import METHOD_ROLES, SERVICE_NAME, WalletPoolServicer

log = logging.getLogger(__name__)


async def serve(settings: PoolSettings) -> None:
    tracing = Tracing.start(settings.tracing, "wallet_pool_service")
    try:
        await _serve(settings, tracing)
    finally:
        await tracing.shutdown()


async def _serve(settings: PoolSettings, tracing: Tracing) -> None:
    manager = await WalletPoolManagerFactory.create(settings)
    loops: list[PeriodicTask] = []
    listener: asyncio.Task[None] | None = None
    try:
        servicer = WalletPoolServicer(manager)
        server = GrpcServer(
            address=settings.address,
            service_names=[SERVICE_NAME],
            register=lambda s: pb_grpc.add_WalletPoolServiceServicer_to_server(servicer, s),
            authenticator=Authenticator(settings.tokens, METHOD_ROLES),
            grace_seconds=settings.shutdown_grace_seconds,
            drain_seconds=settings.shutdown_drain_seconds,
            tls=settings.tls,
            before_grace=lambda _grace_seconds: manager.hand_offs.close(),
            interceptors=tracing.server_interceptors(),
        )
        if settings.metrics_addr:
            serve_metrics(settings.metrics_addr)
        await server.start()
        gauges = PoolGauges()

        async def publish_gauges() -> bool:
            gauges.publish(await manager.get_pool_stats())
            return False

        loops = [
            server.follow_dependency(manager.database_ready, settings.health_check_seconds),
            PeriodicTask(
                "hand-off-sweep", manager.hand_off_everywhere, settings.hand_off_sweep_seconds
            ),
            PeriodicTask("pool-gauges", publish_gauges, settings.metrics_refresh_seconds),
        ]
        for loop in loops:
            loop.start()
        listener = asyncio.create_task(manager.hand_offs.run(), name="hand-off-listener")
        await server.run_until_stopped()
    finally:
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        for loop in loops:
            await loop.stop()
        await manager.close()
        log.info("stopped")


def main() -> None:
    run_service("wallet_pool_service", PoolSettings.from_env, serve)
