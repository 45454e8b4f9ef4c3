"""The RPC floor: both services' APIs on one server whose handlers do nothing (an empty
response; an empty stream), behind the same GrpcServer, interceptor (auth, parsing, logging,
metrics), health and reflection as the real services. `python -m bench.noop_server`; reads
BENCH_NOOP_ADDR (default 127.0.0.1:0), LOG_LEVEL and the same token variables.

Handlers are made from the services' descriptors, the way the generated
`add_*Servicer_to_server` registers a servicer, so every RPC in protos/ is served."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor

from exchange.order.v1 import order_service_pb2 as order_pb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as pool_pb
from order_service.servicer import METHOD_ROLES as ORDER_ROLES
from shared.auth import Authenticator, Principal, load_tokens
from shared.config import env_str, run_service
from shared.grpc_server import GrpcServer
from wallet_pool_service.servicer import METHOD_ROLES as POOL_ROLES

SERVICES = (
    order_pb.DESCRIPTOR.services_by_name["OrderService"],
    pool_pb.DESCRIPTOR.services_by_name["WalletPoolService"],
)


def _answer(response: type[Any]) -> Callable[[Any, Any], Awaitable[Any]]:
    async def handle(request: Any, context: Any) -> Any:
        return response()

    return handle


async def _empty_stream(request: Any, context: Any) -> AsyncIterator[Any]:
    return
    yield  # an async generator that ends at once


def noop_handler(service: ServiceDescriptor) -> grpc.GenericRpcHandler[Any, Any]:
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _empty_stream,
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _answer(response),
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


@dataclass(frozen=True)
class NoopSettings:
    address: str
    tokens: dict[str, Principal]

    @classmethod
    def from_env(cls) -> NoopSettings:
        return cls(address=env_str("BENCH_NOOP_ADDR", "127.0.0.1:0"), tokens=load_tokens())


def _register(server: grpc.aio.Server) -> None:
    server.add_generic_rpc_handlers(tuple(noop_handler(service) for service in SERVICES))


async def serve(settings: NoopSettings) -> None:
    server = GrpcServer(
        address=settings.address,
        service_names=[service.full_name for service in SERVICES],
        register=_register,
        authenticator=Authenticator(settings.tokens, {**ORDER_ROLES, **POOL_ROLES}),
        grace_seconds=1.0,
    )
    await server.start()
    await server.run_until_stopped()


def main() -> None:
    run_service("noop_server", NoopSettings.from_env, serve)


if __name__ == "__main__":
    main()
