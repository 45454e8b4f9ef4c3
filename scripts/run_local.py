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
METRICS = {
    "order": os.environ.get("ORDER_METRICS_ADDR", "127.0.0.1:9451"),
    "pool": os.environ.get("WALLET_POOL_METRICS_ADDR", "127.0.0.1:9452"),
}


def token(role: str) -> str:
    """<ROLE>_TOKEN, or one generated once and kept in .data/<role>_token for later runs."""
    variable = f"{role.upper()}_TOKEN"
    if os.environ.get(variable):
        return os.environ[variable]
    path = DATA / f"{role}_token"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def walkthrough(order_addr: str, pool_addr: str, tokens: dict[str, str]) -> str:
    g = f"{ROOT / '.venv' / 'bin' / 'grpcurl'} -plaintext"
    return f"""
Both services are up.
  order service:       {order_addr}   (metrics: http://{METRICS["order"]}/metrics)
  wallet pool service: {pool_addr}   (metrics: http://{METRICS["pool"]}/metrics)
  operator token:      {tokens["operator"]}   (.data/operator_token)
  client token:        {tokens["client"]}   (.data/client_token)
  watcher token:       {tokens["watcher"]}   (.data/watcher_token: the chain watchers' reports)

Try:
  {g} {order_addr} list
  {g} -H 'authorization: Bearer {tokens["client"]}' -d '{{"network": "BTC", "amount": "0.015"}}' \\
      {order_addr} exchange.order.v1.OrderService/CreateOrder
  {g} -emit-defaults -H 'authorization: Bearer {tokens["operator"]}' \\
      {pool_addr} exchange.wallet_pool.v1.WalletPoolService/GetPoolStats
The README has the whole cookbook. Ctrl-C stops everything.
"""


async def run() -> int:
    DATA.mkdir(exist_ok=True)
    embedded = None
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        embedded = EmbeddedPostgres(DATA / "postgres")
        database_url = embedded.url
        print(f"Embedded PostgreSQL under {DATA / 'postgres'}", flush=True)
    tokens = {role: token(role) for role in ("operator", "client", "service", "watcher")}
    pool_addr = os.environ.get("WALLET_POOL_SERVICE_ADDR", "127.0.0.1:50052")
    order_addr = os.environ.get("ORDER_SERVICE_ADDR", "127.0.0.1:50051")
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "OPERATOR_TOKEN": tokens["operator"],
        "CLIENT_TOKEN": tokens["client"],
        "SERVICE_TOKEN": tokens["service"],
        "WATCHER_TOKEN": tokens["watcher"],
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
        print(walkthrough(order_addr, pool_addr, tokens), flush=True)
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
                await process.stop()
        if embedded is not None:
            embedded.close()
    return exit_code


def main() -> None:
    raise SystemExit(asyncio.run(run()))


if __name__ == "__main__":
    main()
