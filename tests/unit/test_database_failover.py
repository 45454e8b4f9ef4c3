"""What a failover looks like to the services: the errors of a server that went away or
turned read-only are outages (UNAVAILABLE)."""

import asyncpg
import grpc
import pytest

from shared.db import is_database_outage
from shared.grpc_server import status_code_for


@pytest.mark.parametrize(
    "error",
    [
        # A write on a standby or a demoted primary.
        asyncpg.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction"),
        # A server starting up or being promoted, and one shut down under the connection.
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        # No host of the URL takes writes (yet).
        asyncpg.TargetServerAttributeNotMatched("None of the hosts match"),
        ConnectionRefusedError(111, "Connect call failed"),
    ],
)
def test_what_a_failover_raises_is_an_outage_answered_unavailable(error: Exception) -> None:
    assert is_database_outage(error)
    assert status_code_for(error) == (
        grpc.StatusCode.UNAVAILABLE,
        "the database is unavailable; retry later",
    )
