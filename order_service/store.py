"""The order repository over the database pool, in the three shapes of access the use cases
need (a transaction, a consistent snapshot, one statement on its own), and the rule for the
bookkeeping that follows a committed change."""

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

import asyncpg

from order_service.repository import PostgresOrderRepository
from shared.db import accepts_writes, connection, is_database_outage, is_schema_change

log = logging.getLogger(__name__)


class OrderStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresOrderRepository]:
        async with connection(self.pool) as conn, conn.transaction():
            yield PostgresOrderRepository(conn)

    @contextlib.asynccontextmanager
    async def snapshot(self) -> AsyncIterator[PostgresOrderRepository]:
        """For reads of several statements that must agree with each other: one read-only
        REPEATABLE READ transaction, whose statements all see the database as of its first."""
        async with (
            connection(self.pool) as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            yield PostgresOrderRepository(conn)

    @contextlib.asynccontextmanager
    async def statement(self) -> AsyncIterator[PostgresOrderRepository]:
        """For a use case of one statement, atomic on its own: no BEGIN/COMMIT round trips."""
        async with connection(self.pool) as conn:
            yield PostgresOrderRepository(conn)

    async def ready(self) -> bool:
        """The database answers and takes writes."""
        return await accepts_writes(self.pool)


@contextlib.asynccontextmanager
async def after_commit(what: str, order_id: uuid.UUID) -> AsyncIterator[None]:
    """Around the bookkeeping that follows a committed change: a database outage there (or
    an upgrade's migration under a prepared statement) must not answer the committed change
    with an error. What it would have recorded is done again later (a release stays owed and
    is delivered again; a waiting order is asked about again), so it is logged and the change
    answered as committed."""
    try:
        yield
    except Exception as exc:
        if not (is_database_outage(exc) or is_schema_change(exc)):
            raise
        cause = "database unavailable" if is_database_outage(exc) else "schema changed"
        log.warning(
            f"{what} not recorded: {cause}; it will be done again",
            extra={"order_id": str(order_id)},
        )
