"""Each service runs under its own least-privilege database role (deploy/postgres/roles.sql),
as production should: the suite's stack does, every connection of each service logs in as
its role, and at run time neither role can read or write the other's schema."""

from urllib.parse import urlsplit

import asyncpg
import pytest

from exchange.order.v1 import order_service_pb2 as opb
from tests.e2e.conftest import local_only
from tests.e2e.roles import role_names
from tests.e2e.stack import LocalStack
from tests.e2e.test_release_flow import add_wallets, create, eth_address, finish

pytestmark = local_only("reads each service process's environment for its role's URL")


async def connections_by_service(db: asyncpg.Pool, database: str) -> dict[str, set[str]]:
    """Each service's connections to the database (by application_name): their roles."""
    rows = await db.fetch(
        """SELECT application_name, usename FROM pg_catalog.pg_stat_activity
           WHERE datname = $1 AND application_name IN ('order_service', 'wallet_pool_service')""",
        database,
    )
    found: dict[str, set[str]] = {}
    for row in rows:
        found.setdefault(row["application_name"], set()).add(row["usename"])
    return found


async def test_each_service_runs_as_its_own_role_and_cannot_touch_the_others_schema(
    stack: LocalStack, db: asyncpg.Pool, e2e_database_url: str
) -> None:
    # A whole lifecycle works under the roles: an order, its wallet, its release.
    address = eth_address()
    await add_wallets(stack, "ETH", [address])
    order = await create(stack)
    assert order.wallet_address == address
    await finish(stack, order.id, opb.ORDER_STATUS_COMPLETED)

    order_role, pool_role = role_names(e2e_database_url)
    database = urlsplit(e2e_database_url).path.lstrip("/")
    assert await connections_by_service(db, database) == {
        "order_service": {order_role},
        "wallet_pool_service": {pool_role},
    }

    # The URLs the running services were given, with what they may not do.
    order_url = stack.order_process.env["ORDER_DATABASE_URL"]
    pool_url = stack.pool_process.env["WALLET_POOL_DATABASE_URL"]
    for url, foreign in [
        (order_url, "SELECT count(*) FROM wallet_pool.wallets"),
        (order_url, "UPDATE wallet_pool.wallets SET order_id = NULL"),
        (order_url, "SELECT wallet_pool.release_wallet(gen_random_uuid(), NULL)"),
        (pool_url, "SELECT count(*) FROM orders.orders"),
        (pool_url, "DELETE FROM orders.pending_releases"),
        (pool_url, "INSERT INTO orders.order_events (order_id) VALUES (gen_random_uuid())"),
        (pool_url, "CREATE TABLE public.sneaky (a int)"),
    ]:
        conn = await asyncpg.connect(url)
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(foreign)
        finally:
            await conn.close()
    # Nothing of the pool changed hands through those attempts.
    assert await db.fetchval("SELECT count(*) FROM wallet_pool.wallets WHERE order_id IS NULL") == 1
