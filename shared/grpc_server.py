"""gRPC server plumbing shared by both services: one interceptor that authorizes calls and
turns errors into status codes, health and reflection, and a graceful stop on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from shared import errors
from shared.auth import Authenticator, current_principal
from shared.db import is_database_outage

log = logging.getLogger(__name__)

_STATUS_CODES: dict[type[errors.ServiceError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
}


def status_code_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and client-safe message for an exception raised by a handler."""
    for kind in type(exc).__mro__:
        if kind in _STATUS_CODES:
            return _STATUS_CODES[kind], str(exc)
    if is_database_outage(exc):
        return grpc.StatusCode.UNAVAILABLE, "the database is unavailable; retry later"
    return grpc.StatusCode.INTERNAL, "internal error"


class RpcInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]  # not generic at run time
    """Authorizes each unary call, translates its errors once, and logs one line per call."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method: str = handler_call_details.method
        behavior = handler.unary_unary
        authenticator = self._authenticator

        async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                principal = authenticator.authorize(
                    method, tuple(context.invocation_metadata() or ())
                )
                reset_token = current_principal.set(principal)
                try:
                    return await behavior(request, context)  # type: ignore[arg-type]
                finally:
                    current_principal.reset(reset_token)
            except Exception as exc:
                if isinstance(exc, grpc.aio.AbortError):
                    code = context.code() or grpc.StatusCode.UNKNOWN
                    raise
                code, message = status_code_for(exc)
                if code is grpc.StatusCode.INTERNAL:
                    log.exception("unhandled error", extra={"method": method})
                await context.abort(code, message)
            finally:
                log.info(
                    "rpc",
                    extra={
                        "method": method,
                        "code": code.name,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    },
                )

        return grpc.unary_unary_rpc_method_handler(
            guarded,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class GrpcServer:
    """A started server with health and reflection; `run_until_stopped` serves until SIGTERM."""

    def __init__(
        self,
        *,
        address: str,
        service_names: Sequence[str],
        register: Callable[[grpc.aio.Server], None],
        authenticator: Authenticator,
        grace_seconds: float,
    ) -> None:
        self._address = address
        self._service_names = list(service_names)
        self._grace = grace_seconds
        self.server = grpc.aio.server(interceptors=[RpcInterceptor(authenticator)])
        register(self.server)
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        self.port = 0

    async def start(self) -> int:
        self.port = self.server.add_insecure_port(self._address)
        if self.port == 0:
            raise OSError(f"could not bind {self._address}")
        await self.server.start()
        for name in ["", *self._service_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        host = self._address.rsplit(":", 1)[0]
        log.info("serving", extra={"address": f"{host}:{self.port}", "port": self.port})
        return self.port

    async def run_until_stopped(self) -> None:
        """Serve until SIGTERM or SIGINT, then stop gracefully: health first, then calls."""
        loop = asyncio.get_running_loop()
        stopping: list[asyncio.Task[None]] = []

        def on_signal(signum: int) -> None:
            if not stopping:
                log.info("stopping", extra={"signal": signal.Signals(signum).name})
                stopping.append(asyncio.create_task(self.stop()))

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            await self.server.wait_for_termination()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            if stopping:
                await stopping[0]

    async def stop(self) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self._grace)
