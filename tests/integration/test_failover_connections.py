"""The pool across a failover: a connection whose server turned read-only is dropped, so
the pool connects again."""

from urllib.parse import urlsplit

import asyncpg
import pytest

from shared.db import accepts_writes, connection, create_pool


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
