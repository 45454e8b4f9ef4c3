"""Each service under its own least-privilege database role, as production runs them: the
roles of deploy/postgres/roles.sql (the file compose's init script and the Kubernetes
secrets rely on), created on a test database for that database alone."""

import re
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tests.databases import ROOT

ROLES_SQL = ROOT / "deploy" / "postgres" / "roles.sql"
# The server the tests use trusts local connections; a server that checks passwords
# checks this one.
PASSWORD = "e2e-role-secret"


def role_names(database_url: str) -> tuple[str, str]:
    """The order service's and the pool's role on this database: named after it, so that
    dropping the database's roles with it needs no bookkeeping."""
    database = urlsplit(database_url).path.lstrip("/")
    return f"{database}_order", f"{database}_pool"


def as_role(url: str, role: str) -> str:
    """`url` (any host: the server, a proxy) logging in as `role`."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}:{PASSWORD}@{host}"))


def render(sql: str, variables: dict[str, str]) -> str:
    """roles.sql's psql variables (:"identifier", :'literal') filled in, for asyncpg."""

    def fill(match: re.Match[str]) -> str:
        quote, name = match.group(1), match.group(2)
        value = variables[name]
        if quote == '"':
            return '"' + value.replace('"', '""') + '"'
        return "'" + value.replace("'", "''") + "'"

    return re.sub(r""":(["'])(\w+)\1""", fill, sql)


async def service_role_urls(database_url: str) -> dict[str, str]:
    """ORDER_DATABASE_URL and WALLET_POOL_DATABASE_URL under each service's own role,
    creating the roles and their schemas on the (empty) database first. A database whose
    schemas someone else made already (a migrated clone) keeps `database_url`'s user: {}."""
    order_role, pool_role = role_names(database_url)
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            """SELECT n.nspname, r.rolname FROM pg_catalog.pg_namespace n
               JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner
               WHERE n.nspname IN ('orders', 'wallet_pool')"""
        )
        owners: dict[str, str] = {row["nspname"]: row["rolname"] for row in rows}
        if not owners:
            variables = {
                "order_role": order_role,
                "order_password": PASSWORD,
                "pool_role": pool_role,
                "pool_password": PASSWORD,
                "database": urlsplit(database_url).path.lstrip("/"),
            }
            await conn.execute(render(ROLES_SQL.read_text(), variables))
        elif owners != {"orders": order_role, "wallet_pool": pool_role}:
            return {}
    finally:
        await conn.close()
    return {
        "ORDER_DATABASE_URL": as_role(database_url, order_role),
        "WALLET_POOL_DATABASE_URL": as_role(database_url, pool_role),
    }
