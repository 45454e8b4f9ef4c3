"""The order service's view of the wallet pool service, and its gRPC adapter."""

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import grpc

from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as pb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pb_grpc
from shared.logs import current_request_id
from shared.tls import ClientTls

_SERVICE = pb.DESCRIPTOR.services_by_name["WalletPoolService"].full_name

# Both calls are idempotent, so retrying an UNAVAILABLE attempt is safe. Round robin spreads
# calls over every address the target resolves to (several pool replicas).
_SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{"service": _SERVICE}],
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.05s",
                "maxBackoff": "0.5s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}
_CHANNEL_OPTIONS = [
    ("grpc.service_config", json.dumps(_SERVICE_CONFIG)),
    ("grpc.enable_retries", 1),
    # Reconnect quickly once the pool is back, instead of gRPC's default of up to two minutes.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
]


# A watch stream is renewed this often, so that no call is without a deadline.
_WATCH_SECONDS = 300.0


@dataclass(frozen=True)
class PoolAllocation:
    address: str | None
    queue_position: int | None


class WalletPoolError(Exception):
    """A call to the wallet pool failed; `code` is the gRPC status code's name."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details

    @property
    def refused(self) -> bool:
        """The pool answered and refused (as opposed to being unreachable)."""
        return self.code in ("FAILED_PRECONDITION", "INVALID_ARGUMENT", "NOT_FOUND")


class WalletPoolGateway(Protocol):
    async def allocate(self, order_id: uuid.UUID, network: str) -> PoolAllocation: ...
    async def release(self, order_id: uuid.UUID, address: str) -> None: ...
    def watch_hand_offs(self) -> AsyncIterator[tuple[uuid.UUID, str]]: ...


class GrpcWalletPoolGateway:
    def __init__(
        self, channel: grpc.aio.Channel, timeout_seconds: float, token: str | None
    ) -> None:
        self._channel = channel
        self._stub = pb_grpc.WalletPoolServiceStub(channel)
        self._timeout = timeout_seconds
        self._authorization = (("authorization", f"Bearer {token}"),) if token else ()

    @classmethod
    def connect(
        cls,
        target: str,
        timeout_seconds: float,
        token: str | None,
        tls: ClientTls | None = None,
    ) -> "GrpcWalletPoolGateway":
        if tls is None:
            channel = grpc.aio.insecure_channel(target, options=_CHANNEL_OPTIONS)
        else:
            options = list(_CHANNEL_OPTIONS)
            if tls.server_name:
                options.append(("grpc.ssl_target_name_override", tls.server_name))
            channel = grpc.aio.secure_channel(target, tls.credentials(), options=options)
        return cls(channel, timeout_seconds, token)

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        request_id = current_request_id.get()
        if request_id:
            return (*self._authorization, ("x-request-id", request_id))
        return self._authorization

    async def allocate(self, order_id: uuid.UUID, network: str) -> PoolAllocation:
        request = pb.AllocateWalletRequest(order_id=str(order_id), network=network)
        try:
            response = await self._stub.AllocateWallet(
                request, timeout=self._timeout, metadata=self._metadata()
            )
        except grpc.aio.AioRpcError as exc:
            raise WalletPoolError(exc.code().name, exc.details() or "") from None
        if response.WhichOneof("result") == "address":
            return PoolAllocation(address=response.address, queue_position=None)
        return PoolAllocation(address=None, queue_position=response.queue_position or None)

    async def release(self, order_id: uuid.UUID, address: str) -> None:
        request = pb.ReleaseWalletRequest(order_id=str(order_id), address=address)
        try:
            await self._stub.ReleaseWallet(
                request, timeout=self._timeout, metadata=self._metadata()
            )
        except grpc.aio.AioRpcError as exc:
            raise WalletPoolError(exc.code().name, exc.details() or "") from None

    async def watch_hand_offs(self) -> AsyncIterator[tuple[uuid.UUID, str]]:
        """(order id, address) of each wallet the pool hands to a waiting order, until the
        stream ends (the pool stops, or the stream's deadline passes: watch again)."""
        call = self._stub.WatchHandOffs(
            pb.WatchHandOffsRequest(), timeout=_WATCH_SECONDS, metadata=self._metadata()
        )
        try:
            async for hand_off in call:
                yield uuid.UUID(hand_off.order_id), hand_off.address
        except grpc.aio.AioRpcError as exc:
            if exc.code() is not grpc.StatusCode.DEADLINE_EXCEEDED:
                raise WalletPoolError(exc.code().name, exc.details() or "") from None
        finally:
            call.cancel()

    async def close(self) -> None:
        await self._channel.close(None)
