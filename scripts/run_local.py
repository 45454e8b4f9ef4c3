"""`make run`: PostgreSQL (embedded unless DATABASE_URL is set), both services, until Ctrl-C."""

import asyncio
import contextlib
import os
import secrets
import signal
from pathlib import Path

from scripts.processes import ServiceProcess
from shared.embedded_db import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".data"


def operator_token() -> str:
    """OPERATOR_TOKEN, or one generated once and kept in .data/ for later runs."""
    if os.environ.get("OPERATOR_TOKEN"):
        return os.environ["OPERATOR_TOKEN"]
    path = DATA / "operator_token"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def walkthrough(order_addr: str, pool_addr: str, token: str) -> str:
    grpcurl = ROOT / ".venv" / "bin" / "grpcurl"
    g = f"{grpcurl} -plaintext"
    return f"""
Both services are up.
  order service:       {order_addr}
  wallet pool service: {pool_addr}
  operator token:      {token}

Try:
  {g} {order_addr} list
  {g} -d '{{"network": "BTC", "amount": "0.015"}}' \\
      {order_addr} exchange.order.v1.OrderService/CreateOrder
  {g} -H 'authorization: Bearer {token}' \\
      -d '{{"order_id": "<id>", "status": "ORDER_STATUS_PROCESSING"}}' \\
      {order_addr} exchange.order.v1.OrderService/UpdateOrderStatus
  {g} -emit-defaults {pool_addr} exchange.wallet_pool.v1.WalletPoolService/GetPoolStats

Ctrl-C stops everything.
"""


async def run() -> int:
    DATA.mkdir(exist_ok=True)
    embedded = None
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        embedded = EmbeddedPostgres(DATA / "postgres")
        database_url = embedded.url
        print(f"Embedded PostgreSQL under {DATA / 'postgres'}", flush=True)
    token = operator_token()
    pool_addr = os.environ.get("WALLET_POOL_SERVICE_ADDR", "127.0.0.1:50052")
    order_addr = os.environ.get("ORDER_SERVICE_ADDR", "127.0.0.1:50051")
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "OPERATOR_TOKEN": token,
        "WALLET_POOL_SERVICE_ADDR": pool_addr,
        "ORDER_SERVICE_ADDR": order_addr,
        "WALLET_POOL_TARGET": os.environ.get("WALLET_POOL_TARGET", pool_addr),
    }
    logs = DATA / "logs"
    logs.mkdir(exist_ok=True)
    pool = ServiceProcess("wallet_pool_service", env, logs / "wallet_pool_service.log")
    order = ServiceProcess("order_service", env, logs / "order_service.log")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    exit_code = 0
    try:
        await pool.start()
        await order.start()
        print(walkthrough(order_addr, pool_addr, token), flush=True)
        print(f"Logs: {logs}/", flush=True)
        while not stop.is_set():
            if any(p.process is not None and p.process.poll() is not None for p in (pool, order)):
                print("A service exited unexpectedly; see the logs above.", flush=True)
                exit_code = 1
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
    except RuntimeError as exc:
        print(exc, flush=True)
        exit_code = 1
    finally:
        print("Stopping...", flush=True)
        for process in (order, pool):
            if process.process is not None and process.process.poll() is None:
                process.stop()
        if embedded is not None:
            embedded.close()
    return exit_code


def main() -> None:
    raise SystemExit(asyncio.run(run()))


if __name__ == "__main__":
    main()
