from collections.abc import AsyncIterator

import asyncpg
import pytest

from shared.db import create_pool
from tests.databases import DatabaseFactory


@pytest.fixture(scope="session")
async def databases() -> AsyncIterator[DatabaseFactory]:
    dbs = DatabaseFactory()
    await dbs.create_template()
    yield dbs
    await dbs.drop_all()


@pytest.fixture
async def database_url(databases: DatabaseFactory) -> str:
    """A fresh, migrated database for this test."""
    return await databases.create()


@pytest.fixture
async def db_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=20)
    yield pool
    await pool.close()
