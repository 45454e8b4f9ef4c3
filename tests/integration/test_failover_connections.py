"""The pool across a failover: a host that never answers costs only its own connect timeout,
and a connection whose server turned read-only is dropped, so the pool connects again."""

import asyncio
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from shared.db import accepts_writes, connection, create_pool
from tests.e2e.proxy import DatabaseProxy
from tests.waiting import HANG_GUARD_SECONDS


@pytest.fixture
async def tcp_url(database_url: str) -> AsyncIterator[str]:
    """The test's database by TCP on 127.0.0.1 (the embedded server listens on a socket)."""
    proxy = DatabaseProxy(database_url)
    await proxy.start()
    yield proxy.url_for(urlsplit(database_url).path.lstrip("/"))
    await proxy.cut()


async def test_a_host_that_never_answers_costs_its_connect_timeout_then_the_next_is_used(
    tcp_url: str,
) -> None:
    accepted: list[asyncio.StreamWriter] = []

    async def swallow(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # and never answer, as a machine gone silent

    hung = await asyncio.start_server(swallow, "127.0.0.1", 0)
    hung_port = hung.sockets[0].getsockname()[1]
    parts = urlsplit(tcp_url)
    auth, _, host = parts.netloc.rpartition("@")
    url = urlunsplit(
        parts._replace(
            netloc=f"{auth}@127.0.0.1:{hung_port},{host}",
            query="target_session_attrs=read-write&connect_timeout=1",
        )
    )
    try:
        # asyncpg alone would spend its whole timeout (60 s) on the first host: connecting
        # at all before the hang guard is the proof.
        pool = await asyncio.wait_for(create_pool(url, min_size=1, max_size=2), HANG_GUARD_SECONDS)
        assert len(accepted) == 1
        # A host that failed is tried last from then on.
        await pool.expire_connections()
        async with connection(pool) as conn:
            assert await conn.fetchval("SELECT 1") == 1
        assert len(accepted) == 1
        await pool.close()
    finally:
        hung.close()
        for writer in accepted:
            writer.close()


async def test_a_connection_to_a_server_turned_read_only_is_dropped_and_the_pool_reconnects(
    database_url: str,
) -> None:
    name = urlsplit(database_url).path.lstrip("/")
    admin = await asyncpg.connect(database_url)
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        # Sessions opened from now on refuse writes, as a standby's would.
        await admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
        await pool.expire_connections()
        write = "INSERT INTO wallet_pool.wallets (address, network) VALUES ($1, 'ETH')"
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            async with connection(pool) as conn:
                await conn.execute(write, "0x" + "1" * 40)
        assert not await accepts_writes(pool)

        await admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        # A session keeps the default it started with: only a new connection writes.
        assert await accepts_writes(pool)
        async with connection(pool) as conn:
            await conn.execute(write, "0x" + "2" * 40)
    finally:
        await pool.close()
        await admin.close()
