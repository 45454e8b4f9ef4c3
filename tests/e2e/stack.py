"""The stack under test: both services as real processes on free ports (LocalStack), as
containers of the project's image (ContainerStack, E2E_CONTAINERS=1, `make test-containers`),
or, with E2E_ORDER_ADDR and E2E_WALLET_POOL_ADDR, an already running stack reached by address.
`start_stack` picks the first two; tests drive faults through `order_process`/`pool_process`
(start, stop, kill, freeze, thaw, running, logs) whichever it is."""

import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import grpc

from exchange.order.v1 import order_service_pb2_grpc as order_grpc
from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pool_grpc
from scripts.processes import ServiceProcess, stop_all
from tests.e2e import containers
from tests.e2e.containers import ContainerService
from tests.e2e.roles import service_role_urls
from tests.invariants_api import Api

OPERATOR_TOKEN = "e2e-operator-token"
CLIENT_TOKEN = "e2e-client-token"
SERVICE_TOKEN = "e2e-service-token"
WATCHER_TOKEN = "e2e-watcher-token"


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def service_env(
    database_url: str, environment: str = "production", extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of both services for a local run on free ports, with fast loops."""
    return {**os.environ, **service_settings(database_url, environment, extra)}


def service_settings(
    database_url: str, environment: str = "production", extra: dict[str, str] | None = None
) -> dict[str, str]:
    """What the suite sets for both services (without the caller's environment)."""
    return {
        "APP_ENV": environment,
        "DATABASE_URL": database_url,
        "OPERATOR_TOKEN": OPERATOR_TOKEN,
        "CLIENT_TOKEN": CLIENT_TOKEN,
        "SERVICE_TOKEN": SERVICE_TOKEN,
        "WATCHER_TOKEN": WATCHER_TOKEN,
        # The suite's flows reuse wallets without a chain watcher; the tests of the
        # watermark guard, the money paths, the replicas and the chaos run turn it on.
        "WALLET_REUSE_CONFIRMATIONS": "off",
        "DEPOSIT_SYNC_SECONDS": "0.2",
        "ORDER_METRICS_ADDR": "127.0.0.1:0",
        "WALLET_POOL_METRICS_ADDR": "127.0.0.1:0",
        "HEALTH_CHECK_SECONDS": "0.5",
        "METRICS_REFRESH_SECONDS": "0.5",
        "WALLET_POOL_SERVICE_ADDR": "127.0.0.1:0",
        "ORDER_SERVICE_ADDR": "127.0.0.1:0",
        "ALLOCATION_SYNC_SECONDS": "0.2",
        "RELEASE_RETRY_SECONDS": "0.2",
        "RELEASE_RETRY_MAX_BACKOFF_SECONDS": "1",
        "WALLET_POOL_TIMEOUT_SECONDS": "1",
        "SHUTDOWN_GRACE_SECONDS": "2",
        "SHUTDOWN_DRAIN_SECONDS": "0.3",
        **(extra or {}),
    }


class Service(Protocol):
    """One service of the stack, a process or a container."""

    module: str
    port: int
    metrics_port: int

    async def start(self) -> int: ...
    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int: ...
    async def kill(self) -> None: ...
    async def freeze(self) -> None: ...
    async def thaw(self) -> None: ...
    def running(self) -> bool: ...
    def logs(self) -> str: ...


class Stack:
    def __init__(
        self,
        order_addr: str,
        pool_addr: str,
        tokens: tuple[str, str, str],
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        """`tokens`: the operator's, a client's and the order service's."""
        self.order_addr = order_addr
        self.pool_addr = pool_addr
        self.tokens = tokens
        self.order_channel = _channel(order_addr, credentials)
        self.pool_channel = _channel(pool_addr, credentials)
        self.orders = order_grpc.OrderServiceStub(self.order_channel)
        self.pool = pool_grpc.WalletPoolServiceStub(self.pool_channel)
        self.operator = bearer(tokens[0])
        self.client = bearer(tokens[1])
        self.service = bearer(tokens[2])
        self.watcher = bearer(os.environ.get("E2E_WATCHER_TOKEN", WATCHER_TOKEN))

    @property
    def api(self) -> Api:
        """The stack as the invariants' API comparison asks it (tests/invariants_api.py)."""
        return Api(self.orders, self.pool, self.operator)

    async def close(self) -> None:
        await self.order_channel.close(None)
        await self.pool_channel.close(None)


def _channel(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    if credentials is None:
        return grpc.aio.insecure_channel(address)
    return grpc.aio.secure_channel(address, credentials)


class LocalStack(Stack):
    """Both services as processes on free ports; TLS when `credentials` are given (the
    certificate must name localhost)."""

    def __init__(
        self,
        pool: ServiceProcess,
        order: ServiceProcess,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        host = "localhost" if credentials else "127.0.0.1"
        super().__init__(
            f"{host}:{order.port}",
            f"{host}:{pool.port}",
            (OPERATOR_TOKEN, CLIENT_TOKEN, SERVICE_TOKEN),
            credentials,
        )
        self.pool_process = pool
        self.order_process = order

    @classmethod
    async def start(
        cls,
        database_url: str,
        log_dir: Path,
        environment: str = "production",
        extra_env: dict[str, str] | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        order_module: str = "order_service",
        service_roles: bool = True,
    ) -> "LocalStack":
        """`order_module`: what runs as the order service (the bench runs variants of it).
        `service_roles`: each service logs in as its own role (tests/e2e/roles.py), as in
        production, on an empty database; otherwise as `database_url`'s user."""
        roles = await service_role_urls(database_url) if service_roles else {}
        env = service_env(database_url, environment, {**roles, **(extra_env or {})})
        pool = ServiceProcess("wallet_pool_service", env, log_dir / "wallet_pool_service.log")
        pool_port = await pool.start()
        # Restarts of the pool reuse its first port, so the order service finds it again.
        pool.env = {**env, "WALLET_POOL_SERVICE_ADDR": f"127.0.0.1:{pool_port}"}
        pool_host = "localhost" if credentials else "127.0.0.1"
        order_env = {**env, "WALLET_POOL_TARGET": f"{pool_host}:{pool_port}"}
        order = ServiceProcess(order_module, order_env, log_dir / "order_service.log")
        try:
            await order.start()
        except BaseException:
            # No stack to close: the pool service would outlive the test.
            await stop_all([order, pool])
            raise
        return cls(pool, order, credentials)

    async def close(self) -> None:
        await super().close()
        for process in (self.order_process, self.pool_process):
            if process.process is not None and process.process.poll() is None:
                await process.stop()


class ContainerStack(Stack):
    """Both services as containers of the project's image on the compose stack's network
    (tests/e2e/containers.py); plaintext gRPC, ports published on loopback."""

    def __init__(self, pool: ContainerService, order: ContainerService) -> None:
        super().__init__(
            f"127.0.0.1:{order.port}",
            f"127.0.0.1:{pool.port}",
            (OPERATOR_TOKEN, CLIENT_TOKEN, SERVICE_TOKEN),
        )
        self.pool_process = pool
        self.order_process = order

    @classmethod
    async def start(
        cls,
        database_url: str,
        log_dir: Path,
        environment: str = "production",
        extra_env: dict[str, str] | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        service_roles: bool = True,
    ) -> "ContainerStack":
        """`service_roles`: as LocalStack's (the roles' URLs, like the database's, name the
        stack's PostgreSQL as the containers reach it)."""
        if credentials is not None:
            raise ValueError("the suite's containers serve plaintext only")
        roles = await service_role_urls(database_url) if service_roles else {}
        settings = in_network(
            service_settings(database_url, environment, {**roles, **(extra_env or {})})
        )
        pool = ContainerService(
            "wallet_pool_service",
            settings,
            containers.container_name("pool"),
            log_dir / "wallet_pool_service.log",
        )
        order_settings = {**settings, "WALLET_POOL_TARGET": containers.pool_target(pool)}
        order = ContainerService(
            "order_service",
            order_settings,
            containers.container_name("order"),
            log_dir / "order_service.log",
        )
        try:
            # The pool first, as LocalStack does: the order service's hand-off watch and
            # first calls find it serving.
            await pool.start()
            await order.start()
        except BaseException:
            await containers.remove_all([order, pool])
            raise
        return cls(pool, order)

    async def close(self) -> None:
        await super().close()
        await containers.remove_all([self.order_process, self.pool_process])

    async def restart_database(self) -> None:
        """`docker restart` of the stack's PostgreSQL (a clean shutdown, every client
        disconnected); returns once it accepts connections again."""
        await containers.restart_postgres()


async def start_stack(
    database_url: str,
    log_dir: Path,
    environment: str = "production",
    extra_env: dict[str, str] | None = None,
) -> LocalStack | ContainerStack:
    """The suite's own stack: containers under `make test-containers`, processes otherwise."""
    kind = ContainerStack if containers.enabled() else LocalStack
    return await kind.start(database_url, log_dir, environment, extra_env)


# The settings that name a database (the services' own roles' too, tests/e2e/roles.py).
DATABASE_SETTINGS = ("DATABASE_URL", "ORDER_DATABASE_URL", "WALLET_POOL_DATABASE_URL")


def in_network(settings: dict[str, str]) -> dict[str, str]:
    """`settings` with each database URL as the containers reach it (containers.in_network)."""
    return {
        name: containers.in_network(value) if name in DATABASE_SETTINGS and value else value
        for name, value in settings.items()
    }


# The suite's own stack, whichever kind: tests that drive faults annotate with this.
OwnStack = LocalStack | ContainerStack


def replica(
    module: str, database_url: str, log_path: Path, extra: dict[str, str], alias: str = ""
) -> ServiceProcess | ContainerService:
    """One more instance of a service, for tests of several replicas: a process, or a
    container (an extra service on the stack's network; replicas given one `alias` answer
    together under it, as compose's scaled services do). Start it with `start()`."""
    settings = service_settings(database_url, extra=extra)
    if not containers.enabled():
        return ServiceProcess(module, {**os.environ, **settings}, log_path)
    settings = in_network(settings)
    name = containers.container_name(module)
    return ContainerService(module, settings, name, log_path, alias or None)


def replicas_target(pools: Sequence[ServiceProcess | ContainerService]) -> str:
    """The order service's target for pool replicas that were started (its channel balances
    over them): their addresses, or the alias the containers share."""
    for pool in pools:
        if isinstance(pool, ContainerService):
            return containers.pool_target(pool)
    return "ipv4:" + ",".join(f"127.0.0.1:{pool.port}" for pool in pools)


async def stop_replicas(services: Sequence[ServiceProcess | ContainerService]) -> None:
    """Stops the processes (all at once) and removes the containers."""
    try:
        await stop_all([s for s in services if isinstance(s, ServiceProcess)])
    finally:
        await containers.remove_all([s for s in services if isinstance(s, ContainerService)])
