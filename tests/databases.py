"""Test databases: one server (DATABASE_URL, or an embedded one), a migrated template,
and a fresh clone of it per test."""

import itertools
import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from shared.db import apply_migrations, create_pool
from shared.embedded_db import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[1]
MIGRATIONS = (
    ("wallet_pool", "wallet_pool_service.migrations"),
    ("orders", "order_service.migrations"),
)

# Every session on a test database (through PgBouncer too) finds nothing outside pg_catalog
# unless the query names the schema: the suite proves that every query does. (A clone does
# not inherit its template's settings.)
_NO_SEARCH_PATH = 'ALTER DATABASE "{name}" SET search_path = pg_catalog'

# The services' roles on a database (tests/e2e/roles.py) go with it.
_DROP_ROLES = 'DROP ROLE IF EXISTS "{name}_order", "{name}_pool"'


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


class DatabaseFactory:
    """Creates databases on one server; every name carries a per-run prefix."""

    def __init__(self) -> None:
        self._embedded: EmbeddedPostgres | None = None
        server_url = os.environ.get("DATABASE_URL")
        if not server_url:
            self._embedded = EmbeddedPostgres(ROOT / ".data" / "test-postgres")
            server_url = self._embedded.url
        self.server_url = server_url
        self._prefix = f"exchange_test_{uuid.uuid4().hex[:8]}"
        self._counter = itertools.count()
        self.template = f"{self._prefix}_template"
        self._created: list[str] = []

    async def _admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.server_url)

    async def create_template(self) -> None:
        conn = await self._admin()
        try:
            await conn.execute(f'CREATE DATABASE "{self.template}"')
            await conn.execute(_NO_SEARCH_PATH.format(name=self.template))
        finally:
            await conn.close()
        self._created.append(self.template)
        pool = await create_pool(
            with_database(self.server_url, self.template), min_size=1, max_size=2
        )
        try:
            for schema, package in MIGRATIONS:
                await apply_migrations(pool, schema, package)
        finally:
            await pool.close()

    async def create(self, *, migrated: bool = True) -> str:
        """A new database (a clone of the migrated template, or empty); returns its URL."""
        name = f"{self._prefix}_{next(self._counter)}"
        template = f'TEMPLATE "{self.template}"' if migrated else ""
        conn = await self._admin()
        try:
            await conn.execute(f'CREATE DATABASE "{name}" {template}')
            await conn.execute(_NO_SEARCH_PATH.format(name=name))
        finally:
            await conn.close()
        self._created.append(name)
        return with_database(self.server_url, name)

    async def drop_database(self, url: str) -> None:
        """Drops a database (again: nothing). A test's databases go when it ends, not all at
        the session's end: each drop waits for a checkpoint, and hundreds of them in one
        teardown outlast its timeout on a busy machine."""
        name = urlsplit(url).path.lstrip("/")
        if name not in self._created:
            return
        conn = await self._admin()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(_DROP_ROLES.format(name=name))
        finally:
            await conn.close()
        self._created.remove(name)

    async def drop_all(self) -> None:
        conn = await self._admin()
        try:
            for name in reversed(self._created):
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                await conn.execute(_DROP_ROLES.format(name=name))
        finally:
            await conn.close()
        if self._embedded is not None:
            self._embedded.close()
