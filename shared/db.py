"""Connection pools, the migrations runner, and telling an outage from a bug."""

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeAlias
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import asyncpg

from shared.config import ConfigError, StartupRefused

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
    # refuses to use ("cannot switch to state …", MagicStack/asyncpg#784); no host of a
    # multi-host URL takes writes (TargetServerAttributeNotMatched) is one too.
    asyncpg.InternalClientError,
    # The server is a standby, or a primary demoted or made read-only: a failover is under
    # way, and the pool must find the new primary (see `connection`).
    asyncpg.ReadOnlySQLTransactionError,
)
# Each host of a multi-host URL gets this long to connect and show that it takes writes,
# unless the URL says otherwise with libpq's `connect_timeout`.
DEFAULT_CONNECT_TIMEOUT_SECONDS = 5.0


def is_database_outage(exc: BaseException) -> bool:
    """True when `exc` means the database cannot be reached now, not that a query is wrong."""
    return isinstance(exc, _OUTAGE_ERRORS)


def is_schema_change(exc: BaseException) -> bool:
    """True when a statement prepared before a migration changed what it reads (a rollout's
    new release migrated the database): asyncpg has dropped the stale statements of the pool,
    so that trying again prepares them afresh. Outside a transaction asyncpg tries again by
    itself; inside one it cannot, and the transaction is rolled back: nothing was written."""
    return isinstance(exc, asyncpg.InvalidCachedStatementError)


def is_read_only(exc: BaseException) -> bool:
    """True when the server refused a write for being read-only (SQLSTATE 25006): nothing was
    written, and every connection to that server will refuse writes alike."""
    return isinstance(exc, asyncpg.ReadOnlySQLTransactionError)


@contextlib.asynccontextmanager
async def connection(pool: asyncpg.Pool) -> AsyncIterator["Connection"]:
    """A pooled connection, as `pool.acquire()`; but when its server turns out to be read-only
    (a standby, a demoted primary), the connection is dropped and the pool's other ones are
    expired, so that the next acquire connects again: with `target_session_attrs=read-write`
    to the new primary. Reused as it was, it would refuse every write until it closed."""
    async with pool.acquire() as conn:
        try:
            yield conn
        except Exception as exc:
            if is_read_only(exc):
                log.warning("database is read-only; reconnecting", extra={"error": str(exc)})
                conn.terminate()
                await pool.expire_connections()
            raise


async def accepts_writes(pool: asyncpg.Pool) -> bool:
    """The health check: the database answers, and takes writes (a standby answers too). A
    read-only one expires the pool's connections, so that they connect again."""
    async with connection(pool) as conn:
        writable = await conn.fetchval(
            "SELECT pg_catalog.current_setting('transaction_read_only') = 'off'"
        )
    if not writable:
        log.warning("database is read-only; reconnecting")
        await pool.expire_connections()
    return bool(writable)


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


def split_hosts(dsn: str) -> tuple[list[str], float]:
    """The URL once per host it lists (`postgresql://h1:5432,h2:5433/db`: one URL for h1, one
    for h2, each with the rest of the URL), and the time each host gets to connect: libpq's
    `connect_timeout`, taken out of the URL (asyncpg would send it to the server as a
    setting, and the server would refuse the connection). A URL that names its hosts
    otherwise (`?host=`, one host, a Unix socket) stays one URL."""
    parts = urlsplit(dsn)
    query = parse_qsl(parts.query, keep_blank_values=True)
    timeouts = [value for key, value in query if key == "connect_timeout"]
    try:
        timeout = float(timeouts[-1]) if timeouts else DEFAULT_CONNECT_TIMEOUT_SECONDS
    except ValueError:
        raise ConfigError(
            f"the database URL's connect_timeout must be seconds, got {timeouts[-1]!r}"
        ) from None
    if timeout <= 0:  # libpq: 0 waits forever
        timeout = DEFAULT_CONNECT_TIMEOUT_SECONDS
    kept = [item for item in parts.query.split("&") if item.split("=")[0] != "connect_timeout"]
    parts = parts._replace(query="&".join(kept))
    auth, at, hosts = parts.netloc.rpartition("@")
    if "," not in hosts or any(key in ("host", "port") for key, _ in query):
        return [urlunsplit(parts)], timeout
    return [
        urlunsplit(parts._replace(netloc=f"{auth}{at}{host}")) for host in hosts.split(",")
    ], timeout


class _HostByHost:
    """Connects to the hosts of a multi-host URL one by one, each within its own timeout.

    asyncpg tries the hosts in order too, but within one timeout for them all: a host that
    swallows packets (a machine that is down) uses all of it, and the next host, where the
    new primary is, is never tried. Here a host that took a connection moves to the front
    and one that failed to the back, so a dead host costs its timeout once, not at every
    connection; asyncpg checks each host against `target_session_attrs`."""

    def __init__(self, dsns: list[str], timeout: float) -> None:
        self._order = list(dsns)
        self._timeout = timeout

    async def __call__(self, *_args: object, **kwargs: Any) -> asyncpg.Connection:
        error: BaseException | None = None
        for dsn in list(self._order):
            try:
                conn: asyncpg.Connection = await asyncpg.connect(
                    dsn, timeout=self._timeout, **kwargs
                )
            except Exception as exc:
                if not is_database_outage(exc):
                    raise
                error = exc
                self._order.remove(dsn)
                self._order.append(dsn)
                continue
            self._order.remove(dsn)
            self._order.insert(0, dsn)
            return conn
        assert error is not None
        raise error


async def create_listen_pool(
    dsn: str, application_name: str, statement_cache_size: int
) -> asyncpg.Pool:
    """The pool a LISTEN takes its session from. LISTEN needs a session of its own: behind a
    transaction-pooling PgBouncer, a direct URL. Connects when the listener starts (and again
    after outages)."""
    return await create_pool(
        dsn,
        min_size=0,
        max_size=1,
        application_name=application_name,
        statement_cache_size=statement_cache_size,
    )


async def create_pool(
    dsn: str,
    *,
    min_size: int,
    max_size: int,
    application_name: str = "exchange",
    statement_cache_size: int = 100,
) -> asyncpg.Pool:
    """`application_name` names the service's connections in pg_stat_activity. `dsn` may
    list several hosts (`postgresql://h1:5432,h2:5433/db?target_session_attrs=read-write`):
    see `split_hosts`.

    `statement_cache_size` 0 is for PgBouncer in transaction pooling: each query is then
    prepared unnamed and parsed again in the same round trip as its execution, so it never
    relies on a statement prepared on another server connection.
    """
    dsns, connect_timeout = split_hosts(dsn)
    pool = await asyncpg.create_pool(
        dsns[0],
        connect=_HostByHost(dsns, connect_timeout),
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


class MigrationChanged(StartupRefused):
    """An applied migration's file differs from what was applied: the schema is no longer
    what the files describe, so the service refuses to start."""

    def __init__(self, schema: str, changed: list[str]) -> None:
        super().__init__(
            f"migration {', '.join(changed)} changed since it was applied to schema {schema!r}"
            " (its sha256 differs from the one recorded in schema_migrations): restore the file"
            " as it was applied and put the change in a new migration"
        )
        self.changed = changed


def migration_checksum(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()


def definitions_package(package: str) -> str | None:
    """The package of current definitions beside a migrations package (`order_service.sql`
    beside `order_service.migrations`), or None when there is none."""
    parent = package.rpartition(".")[0]
    if not parent:
        return None
    folder = resources.files(parent).joinpath("sql")
    return f"{parent}.sql" if folder.is_dir() else None


async def _apply_definitions(
    conn: "Connection", schema: str, package: str, *, every_file: bool
) -> list[str]:
    """Run `package`'s `.sql` files (functions, triggers, views, each `CREATE OR REPLACE`),
    in name order, when their checksum differs from the one recorded in
    `schema.schema_definitions`, or all of them when `every_file` (a migration was just
    applied, and may have replaced something they define). Returns the files run."""
    files = _sql_files(package)
    done = {
        row["file"]: row["checksum"]
        for row in await conn.fetch(f"SELECT file, checksum FROM {schema}.schema_definitions")
    }
    ran = []
    for entry in files:
        text = entry.read_bytes()
        checksum = migration_checksum(text)
        if not every_file and done.get(entry.name) == checksum:
            continue
        await conn.execute(text.decode("utf-8"))
        await conn.execute(
            f"INSERT INTO {schema}.schema_definitions AS d (file, checksum) VALUES ($1, $2)"
            " ON CONFLICT (file) DO UPDATE SET checksum = $2, applied_at = now()",
            entry.name,
            checksum,
        )
        ran.append(entry.name)
    if ran:
        log.info("definitions applied", extra={"schema": schema, "files": ran})
    return ran


async def apply_migrations(
    pool: asyncpg.Pool, schema: str, package: str, *, definitions: str | None = ""
) -> list[str]:
    """Apply `package`'s ordered `NNN_name.sql` files not yet recorded in `schema`, then the
    current definitions of its functions, triggers and views (`definitions`, by default the
    `sql` package beside `package`; None: none).

    Each file runs in its own transaction together with its bookkeeping row, under a
    transaction-level advisory lock that serialises replicas starting at once (a session
    lock would not be safe behind a transaction-pooling PgBouncer, where the unlock may run
    on another server connection). Returns what was applied.

    Each row records the sha256 of the file as applied; an applied file that no longer
    matches raises MigrationChanged. Rows from before checksums were recorded get the file's
    checksum on the first run that sees them. A recorded migration without a file (the code
    rolled back to an older release) is left alone.

    The definitions run in the transaction of the last migration applied, or in one of their
    own under the same lock: each file whose checksum changed, every file after a migration.
    A database that has migrations this code does not know (a newer release migrated it)
    keeps the newer release's definitions.
    """
    if definitions == "":
        definitions = definitions_package(package)
    files = _sql_files(package)
    folder = package.replace(".", "/")
    checksums = {entry.name: migration_checksum(entry.read_bytes()) for entry in files}
    applied: list[str] = []
    async with connection(pool) as conn:
        async with conn.transaction():
            await _lock_migrations(conn, schema)
            await _create_bookkeeping(conn, schema)
            done = await _check_recorded(conn, schema, folder, checksums)
        pending = [entry for entry in files if entry.name.removesuffix(".sql") not in done]
        newer = set(done) - {entry.name.removesuffix(".sql") for entry in files}
        if newer:
            definitions = None
            log.info(
                "database migrated by a newer release; its definitions are kept",
                extra={"schema": schema, "versions": sorted(newer)},
            )
        defined = definitions is None
        for entry in pending:
            # The definitions run in the transaction of the last migration applied.
            last = entry is pending[-1] and definitions is not None
            with_definitions = definitions if last else None
            if not await _apply_retrying(conn, schema, folder, entry, checksums, with_definitions):
                continue
            defined = defined or last
            version = entry.name.removesuffix(".sql")
            applied.append(version)
            log.info("migration applied", extra={"schema": schema, "version": version})
        if not defined:
            assert definitions is not None
            async with conn.transaction():
                await _lock_migrations(conn, schema)
                await _apply_definitions(conn, schema, definitions, every_file=bool(applied))
    return applied


def _sql_files(package: str) -> list[Any]:
    """The package's `.sql` files, by name (migrations: in the order they apply)."""
    return sorted(
        (entry for entry in resources.files(package).iterdir() if entry.name.endswith(".sql")),
        key=lambda entry: entry.name,
    )


async def _lock_migrations(conn: "Connection", schema: str) -> None:
    """The transaction-level advisory lock that serialises replicas migrating `schema`."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"migrations:{schema}")


async def _apply_retrying(
    conn: "Connection",
    schema: str,
    folder: str,
    entry: Any,
    checksums: dict[str, str],
    definitions: str | None,
) -> bool:
    """One migration in a transaction of its own under the lock, with every file of
    `definitions` after it when given (and applied); tried again when it waited on a lock
    too long or deadlocked. False when another replica applied it meanwhile."""
    version = entry.name.removesuffix(".sql")
    attempt = 1
    while True:
        try:
            async with conn.transaction():
                await _lock_migrations(conn, schema)
                applied = await _apply_one(conn, schema, folder, entry, checksums)
                if applied and definitions is not None:
                    await _apply_definitions(conn, schema, definitions, every_file=True)
            return applied
        except (asyncpg.LockNotAvailableError, asyncpg.DeadlockDetectedError):
            if attempt == _LOCK_ATTEMPTS:
                raise
            log.warning(
                "migration waited on a lock too long or deadlocked: trying again",
                extra={"schema": schema, "version": version, "attempt": attempt},
            )
            await asyncio.sleep(0.5 * 2**attempt)
            attempt += 1


async def _apply_one(
    conn: "Connection",
    schema: str,
    folder: str,
    entry: Any,
    checksums: dict[str, str],
) -> bool:
    """Run one migration file and record it; False when another replica applied it while
    this one waited for the lock."""
    version = entry.name.removesuffix(".sql")
    recorded = await conn.fetchrow(
        f"SELECT checksum FROM {schema}.schema_migrations WHERE version = $1", version
    )
    if recorded is not None:
        if recorded["checksum"] != checksums[entry.name]:
            raise MigrationChanged(schema, [f"{folder}/{entry.name}"])
        return False
    await _lock_schema(conn, schema)
    await conn.execute(entry.read_text(encoding="utf-8"))
    await conn.execute(
        f"INSERT INTO {schema}.schema_migrations (version, checksum) VALUES ($1, $2)",
        version,
        checksums[entry.name],
    )
    return True


async def _lock_schema(conn: "Connection", schema: str) -> None:
    """Every table and view of `schema`, ACCESS EXCLUSIVE, before a migration and its
    definitions change anything: taken at once, or not at all within _LOCK_SECONDS (the
    transaction is then tried again). Holding them all, the migration never waits on a table
    while a replica of the previous release waits on one it holds: that replica's snapshot
    read (a table, then another) would otherwise be the deadlock's victim, and fail its call,
    because it waited first. Partial locks are held for less than PostgreSQL's
    deadlock_timeout (1 s), so no reader's deadlock check ever sees the migration."""
    names = await conn.fetch(
        """SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v') ORDER BY c.oid""",
        schema,
    )
    if not names:
        return
    timeout = await conn.fetchval("SHOW statement_timeout")
    await conn.execute(f"SET LOCAL statement_timeout = '{_LOCK_SECONDS * 1000:.0f}ms'")
    try:
        await conn.execute(
            f"LOCK TABLE {', '.join(r['name'] for r in names)} IN ACCESS EXCLUSIVE MODE"
        )
    except asyncpg.QueryCanceledError as exc:
        # Only this wait is tried again: a migration past its own statement_timeout is not.
        raise asyncpg.LockNotAvailableError(f"{schema}'s tables: {exc}") from exc
    await conn.execute("SELECT set_config('statement_timeout', $1, true)", timeout)


_LOCK_SECONDS = 0.3


# A migration that waits on a lock past its lock_timeout, or that PostgreSQL picks as the
# victim of a deadlock with a replica of the previous release still serving, is rolled back
# whole: it is tried again after a pause rather than failing the start.
_LOCK_ATTEMPTS = 5


async def _create_bookkeeping(conn: "Connection", schema: str) -> None:
    """The schema and its tables of applied migrations and definitions, when missing."""
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
            applied_at timestamptz NOT NULL DEFAULT now(),
            checksum text
        )"""
    )
    await conn.execute(
        f"""
        CREATE TABLE IF NOT EXISTS {schema}.schema_definitions (
            file text PRIMARY KEY,
            checksum text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )"""
    )
    # Tables from before checksums: ALTER only then (it locks the table exclusively).
    if not await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_attribute"
        " WHERE attrelid = $1::regclass AND attname = 'checksum' AND NOT attisdropped)",
        f"{schema}.schema_migrations",
    ):
        await conn.execute(f"ALTER TABLE {schema}.schema_migrations ADD COLUMN checksum text")


async def _check_recorded(
    conn: "Connection", schema: str, folder: str, checksums: dict[str, str]
) -> dict[str, str | None]:
    """The applied migrations and their checksums; a file changed since it was applied raises
    MigrationChanged, and a row from before checksums gets its file's."""
    done: dict[str, str | None] = {
        row["version"]: row["checksum"]
        for row in await conn.fetch(f"SELECT version, checksum FROM {schema}.schema_migrations")
    }
    changed = []
    for name, checksum in checksums.items():
        version = name.removesuffix(".sql")
        if version not in done:
            continue
        if done[version] is None:
            await conn.execute(
                f"UPDATE {schema}.schema_migrations SET checksum = $2 WHERE version = $1",
                version,
                checksum,
            )
            log.info("migration checksum recorded", extra={"schema": schema, "version": version})
        elif done[version] != checksum:
            changed.append(f"{folder}/{name}")
    if changed:
        raise MigrationChanged(schema, changed)
    return done
