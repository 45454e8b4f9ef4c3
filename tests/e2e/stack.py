"""Both services as real processes on free ports (or, with E2E_ORDER_ADDR and
E2E_WALLET_POOL_ADDR, an already running stack such as docker compose)."""

import os
from pathlib import Path

import grpc

from exchange.order.v1 import order_service_pb2_grpc as order_grpc
from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pool_grpc
from scripts.processes import ServiceProcess

OPERATOR_TOKEN = "e2e-operator-token"
CLIENT_TOKEN = "e2e-client-token"
SERVICE_TOKEN = "e2e-service-token"


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


class Stack:
    def __init__(self, order_addr: str, pool_addr: str, tokens: tuple[str, str, str]) -> None:
        """`tokens`: the operator's, a client's and the order service's."""
        self.order_addr = order_addr
        self.pool_addr = pool_addr
        self.tokens = tokens
        self.order_channel = grpc.aio.insecure_channel(order_addr)
        self.pool_channel = grpc.aio.insecure_channel(pool_addr)
        self.orders = order_grpc.OrderServiceStub(self.order_channel)
        self.pool = pool_grpc.WalletPoolServiceStub(self.pool_channel)
        self.operator = bearer(tokens[0])
        self.client = bearer(tokens[1])
        self.service = bearer(tokens[2])

    async def close(self) -> None:
        await self.order_channel.close(None)
        await self.pool_channel.close(None)


class LocalStack(Stack):
    def __init__(self, pool: ServiceProcess, order: ServiceProcess) -> None:
        super().__init__(
            f"127.0.0.1:{order.port}",
            f"127.0.0.1:{pool.port}",
            (OPERATOR_TOKEN, CLIENT_TOKEN, SERVICE_TOKEN),
        )
        self.pool_process = pool
        self.order_process = order

    @classmethod
    async def start(
        cls, database_url: str, log_dir: Path, environment: str = "production"
    ) -> "LocalStack":
        env = {
            **os.environ,
            "APP_ENV": environment,
            "DATABASE_URL": database_url,
            "OPERATOR_TOKEN": OPERATOR_TOKEN,
            "CLIENT_TOKEN": CLIENT_TOKEN,
            "SERVICE_TOKEN": SERVICE_TOKEN,
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
        }
        pool = ServiceProcess("wallet_pool_service", env, log_dir / "wallet_pool_service.log")
        pool_port = await pool.start()
        # Restarts of the pool reuse its first port, so the order service finds it again.
        pool.env = {**env, "WALLET_POOL_SERVICE_ADDR": f"127.0.0.1:{pool_port}"}
        order_env = {**env, "WALLET_POOL_TARGET": f"127.0.0.1:{pool_port}"}
        order = ServiceProcess("order_service", order_env, log_dir / "order_service.log")
        await order.start()
        return cls(pool, order)

    async def close(self) -> None:
        await super().close()
        for process in (self.order_process, self.pool_process):
            if process.process is not None and process.process.poll() is None:
                process.stop()
