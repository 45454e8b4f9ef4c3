"""`make run`: PostgreSQL (embedded unless DATABASE_URL is set), both services, and in
development a chain per network (scripts/dev_chain.py) reporting heights, until Ctrl-C."""

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

from scripts.dev_chain import data_dir
from scripts.processes import ServiceProcess
from shared import config
from shared.assets import ASSETS_VARIABLE, DEFAULT_ASSETS
from shared.embedded_db import EmbeddedPostgres
from shared.networks import supported_networks
from wallet_pool_service.config import parse_reuse_confirmations

ROOT = Path(__file__).resolve().parents[1]
# Development's guard: two blocks of the development chain (two seconds) past a release, so
# the plan's check (complete an order, its wallet is available again) passes within seconds
# while the guard still holds every released wallet for a few blocks, as in production.
DEV_REUSE_CONFIRMATIONS = "2"
# Development's deposits: every asset CONFIRMED at two blocks of the development chain (two
# seconds), so a payment made with the chain's `pay` is seen CONFIRMING and then PAID within
# seconds (production: BTC 3, ETH 64, TRON 20), when ASSETS is unset.
DEV_ASSET_CONFIRMATIONS = 2


def token(data: Path, role: str) -> str:
    """<ROLE>_TOKEN, or one generated once and kept in <data>/<role>_token for later runs."""
    variable = f"{role.upper()}_TOKEN"
    if os.environ.get(variable):
        return os.environ[variable]
    path = data / f"{role}_token"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def guard_line(env: dict[str, str], chains: tuple[str, ...], block_seconds: float) -> str:
    """One line: the guard's mode per network, and where the heights come from."""
    networks = supported_networks()
    confirmations = parse_reuse_confirmations(env.get("WALLET_REUSE_CONFIRMATIONS", ""), networks)
    guarded = {n: c for n, c in confirmations.items() if c is not None}
    if not guarded:
        mode = "off (released wallets are reused after the cooldown alone)"
    else:
        mode = "on, " + ", ".join(f"{n} {c} blocks" for n, c in guarded.items()) + " past a release"
        off = [n for n, c in confirmations.items() if c is None]
        mode += f" (off for {', '.join(off)})" if off else ""
    setting = env.get("WALLET_REUSE_CONFIRMATIONS") or "default"
    if chains:
        source = (
            f"make run's development chains ({', '.join(chains)}), a block every "
            f"{block_seconds:g} s, reporting with the watcher token"
        )
    else:
        why = "DEV_CHAIN=off" if config.environment() == "development" else "APP_ENV=production"
        source = f"your own watchers, with the watcher token (make run starts no chain: {why})"
    return f"reuse guard: {mode} [WALLET_REUSE_CONFIRMATIONS={setting}]; heights from {source}"


def dev_assets(networks: tuple[str, ...]) -> str:
    """The ASSETS setting of make run's demo: the built-in assets of `networks`, each with
    DEV_ASSET_CONFIRMATIONS confirmations."""
    return ",".join(
        f"{a.network}:{a.code}:{a.contract or ''}:{a.decimals}:{a.min_deposit}:"
        f"{DEV_ASSET_CONFIRMATIONS}"
        for a in DEFAULT_ASSETS
        if a.network in networks
    )


def assets_line(env: dict[str, str]) -> str:
    """One line: the confirmations deposits need, and whose setting that is."""
    if os.environ.get(ASSETS_VARIABLE):
        return f"deposits: confirmations as your {ASSETS_VARIABLE} sets them (ListAssets)"
    if env.get(ASSETS_VARIABLE):
        return (
            f"deposits: CONFIRMED at {DEV_ASSET_CONFIRMATIONS} confirmations for every asset "
            f"(make run's demo setting, as {ASSETS_VARIABLE} is unset; built in: BTC 3, "
            "ETH 64, TRON 20)"
        )
    return "deposits: the built-in confirmations (BTC 3, ETH 64, TRON 20; see ListAssets)"


def walkthrough(
    order: ServiceProcess, pool: ServiceProcess, tokens: dict[str, str], data: Path, guard: str
) -> str:
    g = f"{ROOT / '.venv' / 'bin' / 'grpcurl'} -plaintext"
    order_addr, pool_addr = reachable(order), reachable(pool)
    return f"""
Both services are up.
  order service:       {order_addr}   (metrics: {metrics(order)})
  wallet pool service: {pool_addr}   (metrics: {metrics(pool)})
  operator token:      {tokens["operator"]}   ({data / "operator_token"})
  client token:        {tokens["client"]}   ({data / "client_token"})
  watcher token:       {tokens["watcher"]}   ({data / "watcher_token"}: the chain watchers' reports)
  {guard}
  {assets_line(pool.env)}

Try:
  {g} {order_addr} list
  {g} -H 'authorization: Bearer {tokens["client"]}' -d '{{"network": "BTC", "amount": "0.015"}}' \\
      {order_addr} exchange.order.v1.OrderService/CreateOrder
  {g} -emit-defaults -H 'authorization: Bearer {tokens["operator"]}' \\
      {pool_addr} exchange.wallet_pool.v1.WalletPoolService/GetPoolStats
The README has the whole cookbook. Ctrl-C stops everything.
"""


# Where each service is told to listen.
_ADDRESS_VARIABLE = {
    "order_service": "ORDER_SERVICE_ADDR",
    "wallet_pool_service": "WALLET_POOL_SERVICE_ADDR",
}


def reachable(process: ServiceProcess) -> str:
    """Where to call the service: the host it was given (127.0.0.1 for a wildcard), and the
    port it took (port 0 picks a free one)."""
    host = process.env[_ADDRESS_VARIABLE[process.module]].rpartition(":")[0]
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = "127.0.0.1"
    return f"{host}:{process.port}"


def metrics(process: ServiceProcess) -> str:
    return f"http://127.0.0.1:{process.metrics_port}/metrics" if process.metrics_port else "off"


def service_env(data: Path, database_url: str, tokens: dict[str, str]) -> dict[str, str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "OPERATOR_TOKEN": tokens["operator"],
        "CLIENT_TOKEN": tokens["client"],
        "SERVICE_TOKEN": tokens["service"],
        "WATCHER_TOKEN": tokens["watcher"],
        "WALLET_POOL_SERVICE_ADDR": os.environ.get("WALLET_POOL_SERVICE_ADDR", "127.0.0.1:50052"),
        "ORDER_SERVICE_ADDR": os.environ.get("ORDER_SERVICE_ADDR", "127.0.0.1:50051"),
    }
    if config.environment() == "development" and "WALLET_REUSE_CONFIRMATIONS" not in os.environ:
        env["WALLET_REUSE_CONFIRMATIONS"] = DEV_REUSE_CONFIRMATIONS
    if config.environment() == "development" and not os.environ.get(ASSETS_VARIABLE):
        env[ASSETS_VARIABLE] = dev_assets(supported_networks())
    return env


def start_chains(
    env: dict[str, str], pool_addr: str, chains: tuple[str, ...], block_seconds: float, log: Path
) -> subprocess.Popen[bytes]:
    """The development chains, one process beside the services (scripts/dev_chain.py)."""
    command = [sys.executable, "-m", "scripts.dev_chain", "run", "--pool", pool_addr]
    command += ["--networks", ",".join(chains), "--block-seconds", str(block_seconds)]
    with log.open("ab") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)


async def stop_chains(chains: subprocess.Popen[bytes]) -> None:
    chains.send_signal(signal.SIGTERM)
    for _ in range(100):
        if chains.poll() is not None:
            return
        await asyncio.sleep(0.05)
    chains.kill()


def dev_chain_networks() -> tuple[str, ...]:
    """The networks make run simulates a chain for: all, in development, unless DEV_CHAIN=off."""
    if config.environment() != "development":
        return ()
    if config.env_str("DEV_CHAIN", "on").lower() == "off":
        return ()
    return supported_networks()


async def run() -> int:
    data = data_dir()
    data.mkdir(parents=True, exist_ok=True)
    try:
        block_seconds = config.env_float("DEV_CHAIN_BLOCK_SECONDS", 1.0, minimum=0.05, maximum=3600)
        chains = dev_chain_networks()
    except config.ConfigError as exc:
        print(f"make run: configuration error: {exc}", flush=True)
        return 2
    embedded = None
    database_url = os.environ.get("DATABASE_URL")
    if not database_url:
        embedded = EmbeddedPostgres(data / "postgres")
        database_url = embedded.url
        print(f"Embedded PostgreSQL under {data / 'postgres'}", flush=True)
    tokens = {role: token(data, role) for role in ("operator", "client", "service", "watcher")}
    try:
        env = service_env(data, database_url, tokens)
        guard = guard_line(env, chains, block_seconds)
    except config.ConfigError as exc:
        print(f"make run: configuration error: {exc}", flush=True)
        return 2
    logs = data / "logs"
    logs.mkdir(exist_ok=True)
    pool = ServiceProcess("wallet_pool_service", env, logs / "wallet_pool_service.log")
    order = ServiceProcess("order_service", env, logs / "order_service.log")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    exit_code = 0
    chain_process = None
    try:
        await pool.start()
        pool_addr = reachable(pool)
        # Port 0 picks a free port: the order service and the chains use the one taken.
        order.env = {**env, "WALLET_POOL_TARGET": os.environ.get("WALLET_POOL_TARGET", pool_addr)}
        if chains:
            chain_env = {**env, "DEV_DATA_DIR": str(data)}
            log = logs / "dev_chain.log"
            chain_process = start_chains(chain_env, pool_addr, chains, block_seconds, log)
        await order.start()
        print(walkthrough(order, pool, tokens, data, guard), flush=True)
        print(f"Logs: {logs}/", flush=True)
        exit_code = await watch(stop, (pool, order), chain_process)
    except RuntimeError as exc:
        print(exc, flush=True)
        exit_code = 1
    finally:
        print("Stopping...", flush=True)
        if chain_process is not None and chain_process.poll() is None:
            await stop_chains(chain_process)
        for process in (order, pool):
            if process.process is not None and process.process.poll() is None:
                await process.stop()
        if embedded is not None:
            embedded.close()
    return exit_code


async def watch(
    stop: asyncio.Event,
    processes: tuple[ServiceProcess, ...],
    chains: subprocess.Popen[bytes] | None,
) -> int:
    """Until Ctrl-C: 0; 1 as soon as a service or the chains stop by themselves."""
    while not stop.is_set():
        if any(p.process is not None and p.process.poll() is not None for p in processes):
            print("A service exited unexpectedly; see the logs above.", flush=True)
            return 1
        if chains is not None and chains.poll() is not None:
            print("The development chains stopped; see logs/dev_chain.log.", flush=True)
            return 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    return 0


def main() -> None:
    raise SystemExit(asyncio.run(run()))


if __name__ == "__main__":
    main()
