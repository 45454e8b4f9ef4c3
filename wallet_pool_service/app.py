"""Wiring of the wallet pool service: settings, database, manager, server, background loops,
shutdown."""

import asyncio
import logging

import asyncpg

from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pb_grpc
from shared.config import StartupRefused, run_service
from shared.db import apply_migrations, connection
from shared.embedded_db import EmbeddedPostgres, resolve_database
from shared.grpc_server import GrpcServer
from shared.loops import PeriodicTask
from shared.tracing import Tracing, run_traced
from shared.wiring import open_pools, service_server, start_serving, stop_task
from wallet_pool_service.config import PoolSettings
from wallet_pool_service.manager import WalletPoolManager
from wallet_pool_service.metrics import PoolGauges
from wallet_pool_service.repository import PostgresWalletAdapter
from wallet_pool_service.servicer import METHOD_ROLES, SERVICE_NAME, WalletPoolServicer

log = logging.getLogger(__name__)

SCHEMA = "wallet_pool"


async def serve(settings: PoolSettings) -> None:
    await run_traced(
        settings.tracing, "wallet_pool_service", lambda tracing: _serve(settings, tracing)
    )


async def _serve(settings: PoolSettings, tracing: Tracing) -> None:
    manager = await WalletPoolManagerFactory.create(settings)
    loops: list[PeriodicTask] = []
    listener: asyncio.Task[None] | None = None
    try:
        server = _server(settings, tracing, manager)
        loops = _loops(settings, server, manager)
        await start_serving(settings, server, loops)
        listener = asyncio.create_task(manager.hand_offs.run(), name="hand-off-listener")
        await server.run_until_stopped()
    finally:
        await stop_task(listener)
        for loop in loops:
            await loop.stop()
        await manager.close()
        log.info("stopped")


def _server(settings: PoolSettings, tracing: Tracing, manager: WalletPoolManager) -> GrpcServer:
    servicer = WalletPoolServicer(manager)
    return service_server(
        settings,
        tracing,
        SERVICE_NAME,
        lambda s: pb_grpc.add_WalletPoolServiceServicer_to_server(servicer, s),
        METHOD_ROLES,
        lambda _grace_seconds: manager.hand_offs.close(),
    )


def _loops(
    settings: PoolSettings, server: GrpcServer, manager: WalletPoolManager
) -> list[PeriodicTask]:
    """The background loops, not started yet."""
    gauges = PoolGauges()

    async def publish_gauges() -> bool:
        gauges.publish(await manager.get_pool_stats())
        return False

    return [
        server.follow_dependency(manager.database_ready, settings.health_check_seconds),
        PeriodicTask(
            "hand-off-sweep", manager.hand_off_everywhere, settings.hand_off_sweep_seconds
        ),
        PeriodicTask("pool-gauges", publish_gauges, settings.metrics_refresh_seconds),
    ]


class WalletPoolManagerFactory:
    """Builds a ready manager: database pool, migrations, and (in development) demo wallets."""

    @staticmethod
    async def create_for_development(settings: PoolSettings) -> WalletPoolManager:
        """The given database, or the embedded one; seeds demo wallets into empty networks."""
        url, embedded = resolve_database(
            settings.database_url, "development", settings.embedded_data_dir
        )
        manager = await _connect(url, settings, embedded)
        seeded = await manager.seed_demo_wallets(settings.demo_wallets_per_network)
        if seeded:
            log.info("demo wallets seeded", extra={"count": seeded})
        return manager

    @staticmethod
    async def create_for_production(settings: PoolSettings) -> WalletPoolManager:
        """Needs an explicit database URL; never seeds."""
        url, _ = resolve_database(settings.database_url, "production", settings.embedded_data_dir)
        return await _connect(url, settings, None)

    @classmethod
    async def create(cls, settings: PoolSettings) -> WalletPoolManager:
        if settings.environment == "production":
            return await cls.create_for_production(settings)
        return await cls.create_for_development(settings)


async def _connect(
    url: str, settings: PoolSettings, embedded: EmbeddedPostgres | None
) -> WalletPoolManager:
    # The listen pool connects only when the hand-off listener starts.
    pool, listen_pool = await open_pools(url, settings, "wallet_pool_service")
    try:
        await apply_migrations(pool, SCHEMA, "wallet_pool_service.migrations")
        # The guard's setting, where the database enforces it. Replicas must agree: the last
        # one started wins.
        async with connection(pool) as conn:
            await PostgresWalletAdapter(conn).configure_reuse_guard(settings.reuse_confirmations)
            try:
                await PostgresWalletAdapter(conn).configure_assets(settings.assets.assets)
            except asyncpg.UniqueViolationError:
                raise StartupRefused(
                    "ASSETS gives a contract another code than it has in the database; a "
                    "contract deposits refer to keeps its code (add a new asset instead)"
                ) from None
    except BaseException:
        await pool.close()
        if listen_pool is not None:
            await listen_pool.close()
        if embedded is not None:
            embedded.close()
        raise
    return WalletPoolManager(
        pool,
        settings.networks,
        embedded,
        settings.low_water_mark,
        settings.wallet_cooldown_seconds,
        listen_pool,
        settings.assets,
    )


def main() -> None:
    run_service("wallet_pool_service", PoolSettings.from_env, serve)
