"""Connection pools, the migrations runner, and telling an outage from a bug."""

import asyncio
import logging
from importlib import resources
from typing import TYPE_CHECKING, TypeAlias

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    # What a repository is bound to: a pooled connection inside a transaction.
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
else:
    Connection = asyncpg.Connection

log = logging.getLogger(__name__)

_OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.InterfaceError,
    # A connection whose server went away mid-operation can be left in a state asyncpg
    # refuses to use ("cannot switch to state …", MagicStack/asyncpg#784).
    asyncpg.InternalClientError,
)


def is_database_outage(exc: BaseException) -> bool:
    """True when `exc` means the database cannot be reached now, not that a query is wrong."""
    return isinstance(exc, _OUTAGE_ERRORS)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Skips asyncpg's reset query (a round trip on every release): no code here leaves
    session state behind (no SET, no held cursors, no session locks; LISTEN is undone by the
    code that takes it), and an open transaction is still rolled back."""


async def close_pool(pool: asyncpg.Pool, timeout_seconds: float = 5.0) -> None:
    """Close gracefully, but not forever: asyncpg's close waits for every connection to be
    released, and one still held by a call cut short at shutdown would keep the process
    from exiting. Past the timeout the remaining connections are terminated."""
    try:
        await asyncio.wait_for(pool.close(), timeout_seconds)
    except TimeoutError:
        log.warning(
            "database pool did not close in time; terminating its connections",
            extra={"timeout_seconds": timeout_seconds},
        )
        pool.terminate()


async def create_pool(
    dsn: str,
    *,
    min_size: int,
    max_size: int,
    application_name: str = "exchange",
    statement_cache_size: int = 100,
) -> asyncpg.Pool:
    """`application_name` names the service's connections in pg_stat_activity.

    `statement_cache_size` 0 is for PgBouncer in transaction pooling: each query is then
    prepared unnamed and parsed again in the same round trip as its execution, so it never
    relies on a statement prepared on another server connection.
    """
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=30,
        reset=_keep_session,
        statement_cache_size=statement_cache_size,
        # Only a startup parameter that PgBouncer accepts (search_path is refused there):
        # every query names its own schema, whatever the search path.
        server_settings={"application_name": application_name},
    )
    assert pool is not None
    return pool


async def apply_migrations(pool: asyncpg.Pool, schema: str, package: str) -> list[str]:
    """Apply `package`'s ordered `NNN_name.sql` files not yet recorded in `schema`.

    Each file runs in its own transaction together with its bookkeeping row, under a
    transaction-level advisory lock that serialises replicas starting at once (a session
    lock would not be safe behind a transaction-pooling PgBouncer, where the unlock may run
    on another server connection). Returns what was applied.
    """
    files = sorted(
        (entry for entry in resources.files(package).iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )
    lock_key = f"migrations:{schema}"
    applied: list[str] = []
    async with pool.acquire() as conn:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", lock_key)
            # A least-privilege role owns its schema but may not create schemas, and
            # CREATE SCHEMA IF NOT EXISTS checks that right even when the schema exists.
            if not await conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", schema
            ):
                await conn.execute(f"CREATE SCHEMA {schema}")
            await conn.execute(
                f"""
                CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
                    version text PRIMARY KEY,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )"""
            )
            done = {
                row["version"]
                for row in await conn.fetch(f"SELECT version FROM {schema}.schema_migrations")
            }
        for entry in files:
            version = entry.name.removesuffix(".sql")
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", lock_key)
                # Another replica may have applied it while this one waited for the lock.
                if await conn.fetchval(
                    f"SELECT EXISTS (SELECT 1 FROM {schema}.schema_migrations WHERE version = $1)",
                    version,
                ):
                    continue
                await conn.execute(entry.read_text(encoding="utf-8"))
                await conn.execute(
                    f"INSERT INTO {schema}.schema_migrations (version) VALUES ($1)", version
                )
            applied.append(version)
            log.info("migration applied", extra={"schema": schema, "version": version})
    return applied
