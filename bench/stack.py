"""The run's database server, its databases and the services under test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import unittest.mock
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.loadgen import Target
from scripts.processes import ServiceProcess
from shared import addresses
from shared.embedded_db import EmbeddedPostgres
from tests.databases import ROOT, DatabaseFactory
from tests.e2e.stack import CLIENT_TOKEN, OPERATOR_TOKEN, SERVICE_TOKEN, LocalStack

TOKENS = (OPERATOR_TOKEN, CLIENT_TOKEN, SERVICE_TOKEN)

# The services' documented defaults, where LocalStack shortens them for tests: a benchmark
# measures what a deployment runs (each can still be overridden from the environment).
SERVICE_DEFAULTS = {
    "HEALTH_CHECK_SECONDS": "2",
    "METRICS_REFRESH_SECONDS": "5",
    "ALLOCATION_SYNC_SECONDS": "0.5",
    "RELEASE_RETRY_SECONDS": "1",
    "RELEASE_RETRY_MAX_BACKOFF_SECONDS": "10",
    "WALLET_POOL_TIMEOUT_SECONDS": "2",
}


@contextlib.asynccontextmanager
async def connected(url: str) -> AsyncIterator[asyncpg.Connection[Any]]:
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


def service_settings() -> dict[str, str]:
    return {name: os.environ.get(name, default) for name, default in SERVICE_DEFAULTS.items()}


@dataclass
class BenchServer:
    factory: DatabaseFactory
    embedded: EmbeddedPostgres | None
    lock: asyncpg.Connection[Any]

    @classmethod
    async def start(cls) -> BenchServer:
        embedded = None
        server_url = os.environ.get("DATABASE_URL", "").strip()
        if not server_url:
            embedded = EmbeddedPostgres(
                os.environ.get("BENCH_PG_DIR", "").strip() or ROOT / ".data" / "bench-postgres"
            )
            server_url = embedded.url
        # One run per server at a time: two would disturb each other's figures (and an
        # embedded server's leftovers are dropped only by the run that holds the lock).
        lock = await asyncpg.connect(server_url)
        if not await lock.fetchval("SELECT pg_try_advisory_lock(hashtext('exchange-bench'))"):
            # The server stays up for the run that uses it.
            await lock.close()
            raise RuntimeError("another benchmark run is using this database server")
        if embedded is not None:  # what an interrupted run left
            left = "SELECT datname FROM pg_database WHERE datname LIKE 'exchange\\_test\\_%'"
            for row in await lock.fetch(left):
                await lock.execute(f'DROP DATABASE IF EXISTS "{row["datname"]}" WITH (FORCE)')
        # The factory creates its databases on DATABASE_URL's server when that is set.
        with unittest.mock.patch.dict(os.environ, {"DATABASE_URL": server_url}):
            factory = DatabaseFactory()
        await factory.create_template()
        return cls(factory, embedded, lock)

    async def close(self) -> None:
        await self.factory.drop_all()
        await self.lock.close()  # releases the run's lock
        if self.embedded is not None:
            self.embedded.close()


async def start_services(
    database_url: str,
    log_dir: Path,
    extra_env: dict[str, str] | None = None,
    order_module: str = "order_service",
) -> LocalStack:
    await asyncio.to_thread(log_dir.mkdir, parents=True, exist_ok=True)
    env = {**service_settings(), **(extra_env or {})}
    return await LocalStack.start(
        database_url, log_dir, environment="production", extra_env=env, order_module=order_module
    )


def target_of(stack: LocalStack) -> Target:
    return Target(stack.order_addr, stack.pool_addr, TOKENS)


def pids_of(stack: LocalStack) -> dict[str, list[int]]:
    services = {"order_service": stack.order_process, "wallet_pool_service": stack.pool_process}
    return {name: [s.process.pid] for name, s in services.items() if s.process is not None}


async def start_noop(log_dir: Path, relay_to: ServiceProcess | None = None) -> ServiceProcess:
    """`relay_to`: the noop server this one calls as the order service calls the pool."""
    await asyncio.to_thread(log_dir.mkdir, parents=True, exist_ok=True)
    env = {**os.environ, "BENCH_NOOP_ADDR": "127.0.0.1:0"}
    env |= dict(zip(("OPERATOR_TOKEN", "CLIENT_TOKEN", "SERVICE_TOKEN"), TOKENS, strict=True))
    if relay_to is not None:
        env["BENCH_NOOP_POOL_TARGET"] = f"127.0.0.1:{relay_to.port}"
    name = "noop_server" if relay_to is None else "noop_relay"
    process = ServiceProcess("bench.noop_server", env, log_dir / f"{name}.log")
    await process.start()
    return process


def noop_target(process: ServiceProcess) -> Target:
    address = f"127.0.0.1:{process.port}"
    return Target(address, address, TOKENS)


# Base58Check version bytes of the addresses made up for the networks that use them.
_BASE58_VERSIONS = {"BTC": 0x00, "TRON": 0x41}


def made_up_address(network: str, n: int) -> str:
    """Valid: the pool checks every address it looks up (a release's among them)."""
    if network == "ETH":
        return f"0x{n:040x}"
    return addresses.base58check_encode(bytes([_BASE58_VERSIONS[network]]) + n.to_bytes(20))


async def add_wallets(url: str, network: str, first: int, count: int) -> None:
    """Wallets `made_up_address(network, n)` for n in [first, first + count)"""
    async with connected(url) as conn:
        if network == "ETH":
            await conn.execute(
                """
                INSERT INTO wallet_pool.wallets (network, address)
                SELECT 'ETH', '0x' || lpad(to_hex(n), 40, '0')
                FROM generate_series($1::bigint, $2::bigint) AS n
                """,
                first,
                first + count - 1,
            )
        else:
            await conn.execute(
                """
                INSERT INTO wallet_pool.wallets (network, address)
                SELECT $1, address FROM unnest($2::text[]) AS address
                """,
                network,
                [made_up_address(network, n) for n in range(first, first + count)],
            )
        # Vacuumed as well, as autovacuum would have done by the time a pool grew this big.
        await conn.execute("VACUUM ANALYZE wallet_pool.wallets")


async def pool_counters(url: str) -> dict[str, int]:
    """Claims made (hand-offs included) and orders ever queued (the queue's sequence)."""
    async with connected(url) as conn:
        assignments: int = await conn.fetchval("SELECT count(*) FROM wallet_pool.assignments")
        queued: int = await conn.fetchval(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM wallet_pool.queue_seq_seq"
        )
    return {"assignments": assignments, "queued": queued}
