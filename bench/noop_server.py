"""The RPC floor (bench/README.md, N and N2): both services' APIs served empty behind the
same GrpcServer, interceptor, health and reflection as the services. With
BENCH_NOOP_POOL_TARGET it relays the order service's two calls to the pool there."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor

from exchange.order.v1 import order_service_pb2 as order_pb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as pool_pb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pool_grpc
from order_service.servicer import METHOD_ROLES as ORDER_ROLES
from shared.auth import Authenticator, Principal, load_tokens
from shared.config import env_str, run_service
from shared.grpc_server import GrpcServer
from wallet_pool_service.servicer import METHOD_ROLES as POOL_ROLES

SERVICES = (
    order_pb.DESCRIPTOR.services_by_name["OrderService"],
    pool_pb.DESCRIPTOR.services_by_name["WalletPoolService"],
)


async def _empty_stream(request: Any, context: Any) -> AsyncIterator[Any]:
    return
    yield  # an async generator that ends at once


_FINAL = {order_pb.ORDER_STATUS_COMPLETED, order_pb.ORDER_STATUS_CANCELLED}


def _relays(
    pool: pool_grpc.WalletPoolServiceAsyncStub, token: str
) -> dict[str, Callable[..., Any]]:
    metadata = (("authorization", f"Bearer {token}"),)

    async def create(request: Any, context: Any) -> Any:
        allocate = pool_pb.AllocateWalletRequest(
            order_id=str(uuid.uuid4()), network=request.network
        )
        await pool.AllocateWallet(allocate, metadata=metadata)
        return order_pb.CreateOrderResponse()

    async def update(request: Any, context: Any) -> Any:
        if request.status in _FINAL:
            release = pool_pb.ReleaseWalletRequest(order_id=request.order_id)
            await pool.ReleaseWallet(release, metadata=metadata)
        return order_pb.UpdateOrderStatusResponse()

    return {"CreateOrder": create, "UpdateOrderStatus": update}


def noop_handler(
    service: ServiceDescriptor, relays: dict[str, Callable[..., Any]] | None = None
) -> grpc.GenericRpcHandler:
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        request = message_factory.GetMessageClass(method.input_type)
        response = message_factory.GetMessageClass(method.output_type)
        relay = (relays or {}).get(method.name) if service.name == "OrderService" else None
        make = grpc.unary_unary_rpc_method_handler
        if relay is None and method.server_streaming:
            make, relay = grpc.unary_stream_rpc_method_handler, _empty_stream
        handlers[method.name] = make(
            relay or _answer(response),
            request_deserializer=request.FromString,
            response_serializer=response.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def _answer(response: type[Any]) -> Callable[[Any, Any], Awaitable[Any]]:
    async def handle(request: Any, context: Any) -> Any:
        return response()

    return handle


@dataclass(frozen=True)
class NoopSettings:
    address: str
    tokens: dict[str, Principal]
    pool_target: str
    service_token: str

    @classmethod
    def from_env(cls) -> NoopSettings:
        return cls(
            address=env_str("BENCH_NOOP_ADDR", "127.0.0.1:0"),
            tokens=load_tokens(),
            pool_target=env_str("BENCH_NOOP_POOL_TARGET", ""),
            service_token=os.environ.get("SERVICE_TOKEN", ""),
        )


async def serve(settings: NoopSettings) -> None:
    channel = grpc.aio.insecure_channel(settings.pool_target) if settings.pool_target else None
    relays = (
        _relays(pool_grpc.WalletPoolServiceStub(channel), settings.service_token)
        if channel is not None
        else None
    )
    server = GrpcServer(
        address=settings.address,
        service_names=[service.full_name for service in SERVICES],
        register=lambda server: server.add_generic_rpc_handlers(
            tuple(noop_handler(service, relays) for service in SERVICES)
        ),
        authenticator=Authenticator(settings.tokens, {**ORDER_ROLES, **POOL_ROLES}),
        grace_seconds=1.0,
    )
    await server.start()
    try:
        await server.run_until_stopped()
    finally:
        if channel is not None:
            await channel.close(None)


def main() -> None:
    run_service("noop_server", NoopSettings.from_env, serve)


if __name__ == "__main__":
    main()
