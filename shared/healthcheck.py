"""`python -m shared.healthcheck HOST:PORT`: exit 0 if the server reports SERVING (for
container health checks, where no grpcurl is installed). Speaks TLS when the service does
(see `ClientTls.for_health_check`), plaintext otherwise."""

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.config import ConfigError
from shared.tls import ClientTls


def default_address() -> str:
    """The address of the service this container runs (the image's HEALTHCHECK names none)."""
    for name in ("ORDER_SERVICE_ADDR", "WALLET_POOL_SERVICE_ADDR"):
        if os.environ.get(name):
            return os.environ[name].replace("0.0.0.0:", "127.0.0.1:")
    return "127.0.0.1:50051"


def main() -> int:
    address = sys.argv[1] if len(sys.argv) > 1 else default_address()
    try:
        tls = ClientTls.for_health_check()
    except ConfigError as exc:
        print(f"{address}: configuration error: {exc}", file=sys.stderr)
        return 2
    channel = (
        grpc.secure_channel(address, tls.credentials(), options=tls.options())
        if tls
        else grpc.insecure_channel(address)
    )
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=3
            )
        except grpc.RpcError as exc:
            print(f"{address}: {exc.code().name} {exc.details()}", file=sys.stderr)
            return 1
    serving = response.status == health_pb2.HealthCheckResponse.SERVING
    print(f"{address}: {health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)}")
    return 0 if serving else 1


if __name__ == "__main__":
    raise SystemExit(main())
