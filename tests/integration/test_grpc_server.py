"""The gRPC server on its socket."""

import pytest

from shared.auth import Authenticator
from shared.grpc_server import GrpcServer


def _server(address: str) -> GrpcServer:
    return GrpcServer(
        address=address,
        service_names=[],
        register=lambda server: None,
        authenticator=Authenticator({}, {}),
        grace_seconds=0,
    )


async def test_a_second_server_on_a_served_port_fails_to_start_instead_of_sharing_it() -> None:
    first = _server("127.0.0.1:0")
    await first.start()
    try:
        # With gRPC's default SO_REUSEPORT both would listen, each taking part of the calls.
        with pytest.raises(OSError, match=f"could not bind 127.0.0.1:{first.port}"):
            await _server(f"127.0.0.1:{first.port}").start()
    finally:
        await first.stop()
