"""Both services as real processes on free ports (or, with E2E_ORDER_ADDR and
E2E_WALLET_POOL_ADDR, an already running stack such as docker compose)."""

import os
from pathlib import Path

import grpc

from exchange.order.v1 import order_service_pb2_grpc as order_grpc
from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pool_grpc
from scripts.processes import ServiceProcess, stop_all
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
    return {
        **os.environ,
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
