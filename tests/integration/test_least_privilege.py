"""The compose init script's roles: each service's role works in its own schema only."""

import shutil
import subprocess
import uuid
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from shared.db import apply_migrations, create_pool
from tests.databases import ROOT, DatabaseFactory


def _as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}:secret@{host}"))


async def test_each_service_role_reaches_only_its_own_schema(databases: DatabaseFactory) -> None:
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql is needed to run the init script")
    url = await databases.create(migrated=False)
    suffix = uuid.uuid4().hex[:8]
    order_role, pool_role = f"order_svc_{suffix}", f"pool_svc_{suffix}"
    subprocess.run(
        [
            psql,
            url,
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            f"order_role={order_role}",
            "-v",
            "order_password=secret",
            "-v",
            f"pool_role={pool_role}",
            "-v",
            "pool_password=secret",
            "-v",
            f"database={urlsplit(url).path.lstrip('/')}",
            "-f",
            str(ROOT / "deploy" / "postgres" / "roles.sql"),
        ],
        check=True,
        capture_output=True,
    )
    try:
        for role, schema, package in [
            (order_role, "orders", "order_service.migrations"),
            (pool_role, "wallet_pool", "wallet_pool_service.migrations"),
        ]:
            pool = await create_pool(_as_role(url, role), min_size=1, max_size=1)
            try:
                assert await apply_migrations(pool, schema, package)
            finally:
                await pool.close()

        for role, foreign in [
            (order_role, "SELECT count(*) FROM wallet_pool.wallets"),
            (order_role, "UPDATE wallet_pool.wallets SET order_id = NULL"),
            (pool_role, "SELECT count(*) FROM orders.orders"),
            (pool_role, "DELETE FROM orders.pending_releases"),
            (pool_role, "CREATE TABLE public.sneaky (a int)"),
        ]:
            conn = await asyncpg.connect(_as_role(url, role))
            try:
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(foreign)
            finally:
                await conn.close()
    finally:
        await databases.drop_database(url)
        admin = await asyncpg.connect(databases.server_url)
        try:
            for role in (order_role, pool_role):
                await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        finally:
            await admin.close()
