"""What a failover looks like to the services: multi-host URLs split host by host, and the
errors of a server that went away or turned read-only are outages (UNAVAILABLE)."""

import asyncpg
import grpc
import pytest

from shared.config import ConfigError
from shared.db import DEFAULT_CONNECT_TIMEOUT_SECONDS, is_database_outage, split_hosts
from shared.grpc_server import status_code_for


def test_a_multi_host_url_is_split_into_one_url_per_host_in_order() -> None:
    urls, timeout = split_hosts(
        "postgresql://app:pw@h1:5432,h2:5433,[::1]/exchange?target_session_attrs=read-write"
    )
    assert urls == [
        "postgresql://app:pw@h1:5432/exchange?target_session_attrs=read-write",
        "postgresql://app:pw@h2:5433/exchange?target_session_attrs=read-write",
        "postgresql://app:pw@[::1]/exchange?target_session_attrs=read-write",
    ]
    assert timeout == DEFAULT_CONNECT_TIMEOUT_SECONDS


def test_connect_timeout_is_taken_out_of_the_url_and_applies_to_each_host() -> None:
    urls, timeout = split_hosts("postgresql://h1,h2/db?connect_timeout=2&sslmode=disable")
    assert urls == ["postgresql://h1/db?sslmode=disable", "postgresql://h2/db?sslmode=disable"]
    assert timeout == 2.0


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres@127.0.0.1:5432/db",
        "postgresql://postgres:@/db?host=/tmp/socket-dir",
        "postgresql://postgres@/db?host=h1,h2&port=5432,5433",
    ],
)
def test_a_url_that_names_its_hosts_otherwise_stays_one_url(url: str) -> None:
    assert split_hosts(url) == ([url], DEFAULT_CONNECT_TIMEOUT_SECONDS)


def test_a_connect_timeout_that_is_no_number_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="connect_timeout"):
        split_hosts("postgresql://h1,h2/db?connect_timeout=soon")


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
