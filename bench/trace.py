"""`python -m bench.trace`: the SQL each call sends, as PostgreSQL logs it.

Starts the benchmark's embedded server, a database with `log_statement = 'all'`, and both
services. It makes a few AllocateWallet+ReleaseWallet cycles and a few order lifecycles one
after another, then prints the statements logged per operation (BEGIN, COMMIT and any
driver statements included), and the background loops' statements for the same time at
rest. This is how to recount what `bench/sqlfloor.py` has to mirror when the services'
code paths change. It needs the embedded server (it reads its log file), so not with
DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import collections
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import grpc

from bench.stack import TOKENS, BenchServer, add_wallets, start_services
from exchange.order.v1 import order_service_pb2 as order_pb
from exchange.order.v1 import order_service_pb2_grpc as order_grpc
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as pool_pb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pool_grpc
from tests.databases import ROOT

_LOGGED = re.compile(r"LOG:  (?:statement|execute [^:]*): (.*)")
_OPERATIONS = 20


def _metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _statements(text: str) -> list[str]:
    """The first line of each logged statement."""
    return [m.group(1).strip() for m in _LOGGED.finditer(text)]


def _print(label: str, statements: list[str], operations: int) -> None:
    print(f"\n{label}: {len(statements) / operations:.1f} statements per operation")
    for text, count in collections.Counter(statements).most_common():
        print(f"  {count / operations:5.2f}  {text[:100]}")


async def trace() -> None:
    if os.environ.get("DATABASE_URL"):
        raise SystemExit("bench.trace reads the embedded server's log: unset DATABASE_URL")
    log_file = Path(os.environ.get("BENCH_PG_DIR", "").strip() or ROOT / ".data" / "bench-postgres")
    log_file /= "log"
    server = await BenchServer.start()
    stack = None
    try:
        database = await server.database()
        await add_wallets(database, "ETH", 1, 1000)
        admin = await asyncpg.connect(server.factory.server_url)
        try:
            name = urlsplit(database).path.lstrip("/")
            await admin.execute(f"ALTER DATABASE \"{name}\" SET log_statement = 'all'")
        finally:
            await admin.close()
        stack = await start_services(database, Path(tempfile.mkdtemp(prefix="bench-trace-")))
        await asyncio.sleep(1.0)
        operator, client, service = (_metadata(token) for token in TOKENS)
        pool = pool_grpc.WalletPoolServiceStub(stack.pool_channel)
        orders = order_grpc.OrderServiceStub(stack.order_channel)

        async def cycles() -> None:
            for _ in range(_OPERATIONS):
                order_id = str(uuid.uuid4())
                allocated = await pool.AllocateWallet(
                    pool_pb.AllocateWalletRequest(order_id=order_id, network="ETH"),
                    metadata=service,
                )
                await pool.ReleaseWallet(
                    pool_pb.ReleaseWalletRequest(order_id=order_id, address=allocated.address),
                    metadata=service,
                )

        async def lifecycles() -> None:
            for _ in range(_OPERATIONS):
                created = await orders.CreateOrder(
                    order_pb.CreateOrderRequest(network="ETH", amount="1.5"), metadata=client
                )
                for status in (order_pb.ORDER_STATUS_PROCESSING, order_pb.ORDER_STATUS_COMPLETED):
                    await orders.UpdateOrderStatus(
                        order_pb.UpdateOrderStatusRequest(
                            order_id=created.order.id,
                            status=status,
                        ),
                        metadata=operator,
                    )

        async def logged(work: Callable[[], Awaitable[None]]) -> tuple[list[str], float]:
            offset = log_file.stat().st_size
            started = time.monotonic()
            await work()
            elapsed = time.monotonic() - started
            await asyncio.sleep(0.3)
            return _statements(log_file.read_bytes()[offset:].decode(errors="replace")), elapsed

        statements, cycle_seconds = await logged(cycles)
        _print("AllocateWallet + ReleaseWallet", statements, _OPERATIONS)
        statements, life_seconds = await logged(lifecycles)
        _print("CreateOrder, UpdateOrderStatus PROCESSING, COMPLETED", statements, _OPERATIONS)
        seconds = max(cycle_seconds, life_seconds)
        statements, _ = await logged(lambda: asyncio.sleep(seconds))
        print(
            f"\n(the background loops, counted in the figures above, logged {len(statements)}"
            f" statements in {seconds:.1f} s at rest)"
        )
    finally:
        if stack is not None:
            await stack.close()
        await server.close()


def main() -> None:
    try:
        asyncio.run(trace())
    except grpc.aio.AioRpcError as exc:
        print(f"bench.trace: {exc.code().name}: {exc.details()}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
