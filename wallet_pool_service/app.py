"""Wiring of the wallet pool service: settings, manager, server, background loop, shutdown."""

import logging

from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pb_grpc
from shared.auth import operator_authenticator
from shared.config import run_service
from shared.grpc_server import GrpcServer
from shared.loops import PeriodicTask
from wallet_pool_service.config import PoolSettings
from wallet_pool_service.manager import WalletPoolManagerFactory
from wallet_pool_service.servicer import OPERATOR_METHODS, SERVICE_NAME, WalletPoolServicer

log = logging.getLogger(__name__)


async def serve(settings: PoolSettings) -> None:
    if not settings.operator_token:
        log.warning("OPERATOR_TOKEN is not set: operator calls will be refused")
    manager = await WalletPoolManagerFactory.create(settings)
    sweeper = PeriodicTask(
        "hand-off-sweep", manager.hand_off_everywhere, settings.hand_off_sweep_seconds
    )
    try:
        servicer = WalletPoolServicer(manager)
        server = GrpcServer(
            address=settings.address,
            service_names=[SERVICE_NAME],
            register=lambda s: pb_grpc.add_WalletPoolServiceServicer_to_server(servicer, s),
            authenticator=operator_authenticator(settings.operator_token, OPERATOR_METHODS),
            grace_seconds=settings.shutdown_grace_seconds,
        )
        await server.start()
        sweeper.start()
        await server.run_until_stopped()
    finally:
        await sweeper.stop()
        await manager.close()
        log.info("stopped")


def main() -> None:
    run_service("wallet_pool_service", PoolSettings.from_env, serve)
