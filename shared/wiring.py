"""What both services' wiring does alike: open the database pools, build the gRPC server from
the common settings, start serving, and stop a background task."""

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence

import asyncpg
import grpc

from shared.auth import Authenticator
from shared.db import create_listen_pool, create_pool
from shared.grpc_server import GrpcServer
from shared.loops import PeriodicTask
from shared.metrics import serve_metrics
from shared.settings import ServiceSettings
from shared.tracing import Tracing


async def open_pools(
    url: str, settings: ServiceSettings, application_name: str
) -> tuple[asyncpg.Pool, asyncpg.Pool | None]:
    """The service's database pool, and the pool LISTEN takes its session from (None: the
    service's own). The latter connects only when a listener starts."""
    pool = await create_pool(
        url,
        min_size=1,
        max_size=settings.db_pool_size,
        application_name=application_name,
        statement_cache_size=settings.statement_cache_size,
    )
    listen_pool = (
        await create_listen_pool(
            settings.listen_database_url, application_name, settings.statement_cache_size
        )
        if settings.listen_database_url
        else None
    )
    return pool, listen_pool


def service_server(
    settings: ServiceSettings,
    tracing: Tracing,
    service_name: str,
    register: Callable[[grpc.aio.Server], None],
    method_roles: Mapping[str, frozenset[str]],
    before_grace: Callable[[float], None],
) -> GrpcServer:
    """The service's server, as its settings say (address, credentials, TLS, shutdown)."""
    return GrpcServer(
        address=settings.address,
        service_names=[service_name],
        register=register,
        authenticator=Authenticator(settings.tokens, method_roles),
        grace_seconds=settings.shutdown_grace_seconds,
        drain_seconds=settings.shutdown_drain_seconds,
        tls=settings.tls,
        before_grace=before_grace,
        interceptors=tracing.server_interceptors(),
    )


async def start_serving(
    settings: ServiceSettings, server: GrpcServer, loops: Sequence[PeriodicTask]
) -> None:
    """The metrics endpoint (if set), the server, then the background loops (stopped by the
    caller, who holds them from before any of this starts)."""
    if settings.metrics_addr:
        serve_metrics(settings.metrics_addr)
    await server.start()
    for loop in loops:
        loop.start()


async def stop_task(task: "asyncio.Task[None] | None") -> None:
    """Cancel `task` (None: never started) and wait until it has ended."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
