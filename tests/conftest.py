from collections.abc import AsyncIterator

import asyncpg
import pytest

from shared.db import create_pool
from tests.databases import DatabaseFactory
from tests.pgbouncer import PgBouncer


@pytest.fixture(scope="session")
async def databases() -> AsyncIterator[DatabaseFactory]:
    dbs = DatabaseFactory()
    await dbs.create_template()
    yield dbs
    await dbs.drop_all()


@pytest.fixture
async def database_url(databases: DatabaseFactory) -> AsyncIterator[str]:
    """A fresh, migrated database for this test, dropped when the test ends (see
    DatabaseFactory.drop_database)."""
    url = await databases.create()
    yield url
    await databases.drop_database(url)


@pytest.fixture
async def db_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=20)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
async def pgbouncer(databases: DatabaseFactory) -> AsyncIterator[PgBouncer]:
    """A real PgBouncer in transaction pooling in front of the test server."""
    bouncer = PgBouncer(databases.server_url)
    try:
        await bouncer.start()
        yield bouncer
    finally:
        bouncer.stop()
