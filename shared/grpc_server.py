"""gRPC server plumbing shared by both services: one interceptor that authorizes calls,
turns errors into status codes (with google.rpc details), logs and measures each call;
health that follows the database; reflection; optional TLS; a graceful stop on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from shared import errors
from shared.auth import Authenticator, current_principal
from shared.db import is_database_outage, is_schema_change
from shared.logs import current_request_id
from shared.loops import PeriodicTask
from shared.metrics import HEALTH_CHANGES, HEALTH_SERVING, RPC_HANDLED, RPC_SECONDS, RPC_STARTED
from shared.tls import ServerTls

log = logging.getLogger(__name__)

_STATUS_CODES: dict[type[errors.ServiceError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
}
_MAX_REQUEST_ID = 128
# The health service name for liveness: SERVING while the process serves at all, whatever
# its database does (the overall status, '', is readiness and follows the database), so that
# a liveness probe does not restart every replica during a database outage.
LIVENESS_SERVICE = "liveness"
# Pings find clients that vanished without closing their connection, so that their streams
# end instead of holding the server's resources; clients may ping as often as every 10 s.
_SERVER_OPTIONS = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    # Keep pinging a connection whose streams are quiet (a watch waiting for a change).
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    # A second server on a port already served fails to start ("address in use") instead
    # of silently taking half of its calls (gRPC sets SO_REUSEPORT by default on Linux).
    ("grpc.so_reuseport", 0),
]

# By when the call being served must have answered its caller, on the event loop's clock
# (None: the caller set no deadline); set by the RPC interceptor, so that waits on other
# services can end in time for the answer.
current_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "current_deadline", default=None
)


def status_code_for(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and client-safe message for an exception raised by a handler."""
    for kind in type(exc).__mro__:
        if kind in _STATUS_CODES:
            return _STATUS_CODES[kind], str(exc)
    if is_database_outage(exc):
        return grpc.StatusCode.UNAVAILABLE, "the database is unavailable; retry later"
    if is_schema_change(exc):
        return grpc.StatusCode.UNAVAILABLE, "the database was upgraded during the call; retry"
    return grpc.StatusCode.INTERNAL, "internal error"


def error_details(exc: BaseException) -> list[Any]:
    """google.rpc detail messages: for a client's mistake, which field or precondition; for
    a write whose outcome is unknown, an ErrorInfo saying so."""
    if isinstance(exc, errors.InvalidArgument):
        return [
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=exc.field, description=exc.problem
                    )
                ]
            )
        ]
    if isinstance(exc, errors.FailedPrecondition) and exc.violations:
        return [
            error_details_pb2.PreconditionFailure(
                violations=[
                    error_details_pb2.PreconditionFailure.Violation(
                        type=v.type, subject=v.subject, description=v.description
                    )
                    for v in exc.violations
                ]
            )
        ]
    if isinstance(exc, errors.OutcomeUnknown):
        return [
            error_details_pb2.ErrorInfo(reason=exc.reason, domain=exc.domain, metadata=exc.metadata)
        ]
    return []


def _status_metadata(
    code: grpc.StatusCode, message: str, details: list[Any]
) -> Sequence[tuple[str, str | bytes]]:
    packed = []
    for detail in details:
        wrapper = any_pb2.Any()
        wrapper.Pack(detail)
        packed.append(wrapper)
    status = status_pb2.Status(code=code.value[0], message=message, details=packed)
    assert status.code != code_pb2.OK
    trailing: Sequence[tuple[str, str | bytes]] = rpc_status.to_status(status).trailing_metadata
    return trailing


def _request_id(metadata: Sequence[tuple[str, str | bytes]]) -> str:
    for key, value in metadata:
        if key.lower() == "x-request-id":
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            text = text.strip()[:_MAX_REQUEST_ID]
            if text.isprintable() and text:
                return text
    return uuid.uuid4().hex


class RpcInterceptor(grpc.aio.ServerInterceptor):
    """Guards each call of the services' own methods (unary, and server streams written as
    async generators): authorizes it, then parses its request (bytes that are not the request
    message are INVALID_ARGUMENT), translates its errors once, logs and measures it."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        deserialize = handler.request_deserializer
        message_name = _message_name(deserialize)

        def parse(request: Any) -> Any:
            if deserialize is None:
                return request
            # Parsed here, not by grpcio: grpcio.aio answers a parse failure with UNKNOWN
            # and the parser's own words.
            try:
                return deserialize(request)
            except DecodeError:
                raise errors.InvalidArgument(
                    "request", f"is not a valid {message_name} message"
                ) from None

        # The handlers below receive the request's bytes and parse them themselves. (The stubs
        # know handlers of the sync server only, whose context is not grpc.aio's: the ignores.)
        if handler.unary_unary is not None:
            unary = handler.unary_unary

            async def guarded(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                async with self._guard(method, "unary", context):
                    return await unary(parse(request), context)  # type: ignore[arg-type]

            return grpc.unary_unary_rpc_method_handler(
                guarded, request_deserializer=None, response_serializer=handler.response_serializer
            )
        if handler.unary_stream is not None and inspect.isasyncgenfunction(handler.unary_stream):
            stream = handler.unary_stream

            async def guarded_stream(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                async with self._guard(method, "server_stream", context):
                    async for response in stream(parse(request), context):  # type: ignore[arg-type]
                        yield response

            return grpc.unary_stream_rpc_method_handler(
                guarded_stream,
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
        # Health's Watch and reflection: open to all, written with context.write.
        return handler

    @contextlib.asynccontextmanager
    async def _guard(
        self, method: str, grpc_type: str, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[None]:
        service_name, _, method_name = method.strip("/").rpartition("/")
        started = time.perf_counter()
        RPC_STARTED.labels(grpc_type, service_name, method_name).inc()
        metadata = tuple(context.invocation_metadata() or ())
        request_token = current_request_id.set(_request_id(metadata))
        remaining = context.time_remaining()
        deadline_token = current_deadline.set(
            None if remaining is None else asyncio.get_running_loop().time() + remaining
        )
        code = grpc.StatusCode.OK
        try:
            principal_token = current_principal.set(self._authenticator.authorize(method, metadata))
            try:
                yield
            finally:
                with contextlib.suppress(ValueError):
                    current_principal.reset(principal_token)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            if isinstance(exc, grpc.aio.AbortError):
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            code, message = status_code_for(exc)
            if code is grpc.StatusCode.INTERNAL:
                log.exception("unhandled error", extra={"method": method})
            await context.abort(code, message, _status_metadata(code, message, error_details(exc)))
        finally:
            elapsed = time.perf_counter() - started
            RPC_HANDLED.labels(grpc_type, service_name, method_name, code.name).inc()
            RPC_SECONDS.labels(grpc_type, service_name, method_name).observe(elapsed)
            log.info(
                "rpc",
                extra={
                    "method": method,
                    "code": code.name,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )
            # A stream's generator may be closed from another context (the server stopping
            # finalises it), where reset raises; each call's task has a context of its own,
            # so leaving the values there harms nothing.
            with contextlib.suppress(ValueError):
                current_request_id.reset(request_token)
                current_deadline.reset(deadline_token)


def _message_name(deserializer: Callable[[bytes], Any] | None) -> str:
    """The request message's name, from its generated `FromString` (or a generic word)."""
    descriptor = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    return str(getattr(descriptor, "name", "request"))


class GrpcServer:
    """A server with health and reflection; `run_until_stopped` serves until SIGTERM."""

    def __init__(
        self,
        *,
        address: str,
        service_names: Sequence[str],
        register: Callable[[grpc.aio.Server], None],
        authenticator: Authenticator,
        grace_seconds: float,
        drain_seconds: float = 0.0,
        tls: ServerTls | None = None,
        before_grace: Callable[[float], None] = lambda grace_seconds: None,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    ) -> None:
        """`interceptors` run before (around) the services' own one (tracing's).
        `before_grace`: called as the grace period of a graceful stop begins, with its
        length: ends what would hold calls past it (long-lived streams, waits on other
        services)."""
        self._address = address
        self._before_grace = before_grace
        self._service_names = list(service_names)
        self._grace = grace_seconds
        self._drain = drain_seconds
        self._tls = tls
        self.server = grpc.aio.server(
            interceptors=[*interceptors, RpcInterceptor(authenticator)], options=_SERVER_OPTIONS
        )
        register(self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        self.port = 0
        self._stopping = False
        self._serving: bool | None = None

    async def start(self) -> int:
        try:
            if self._tls is None:
                self.port = self.server.add_insecure_port(self._address)
            else:
                self.port = self.server.add_secure_port(self._address, self._tls.credentials())
        except RuntimeError:  # grpcio's answer to a bind that failed (the port is taken)
            self.port = 0
        if self.port == 0:
            raise OSError(f"could not bind {self._address}")
        await self.server.start()
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await self.set_serving(True)
        host = self._address.rsplit(":", 1)[0]
        log.info(
            "serving",
            extra={"address": f"{host}:{self.port}", "port": self.port, "tls": bool(self._tls)},
        )
        return self.port

    async def set_serving(self, serving: bool) -> None:
        """Health of every service on this server (and of the server as a whole)."""
        if self._stopping or serving == self._serving:
            return
        for name in self._service_names:
            if self._serving is not None:
                HEALTH_CHANGES.labels(name).inc()
            else:
                HEALTH_CHANGES.labels(name)  # exported at 0 from the start
            HEALTH_SERVING.labels(name).set(1 if serving else 0)
        self._serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self._service_names]:
            await self.health.set(name, status)
        if self._serving is not None:
            log.log(
                logging.INFO if serving else logging.WARNING,
                "health changed",
                extra={"serving": serving},
            )

    def follow_dependency(
        self, check: Callable[[], Awaitable[bool]], interval: float
    ) -> PeriodicTask:
        """A loop that reports SERVING only while `check` (the database) answers in time."""

        async def step() -> bool:
            try:
                async with asyncio.timeout(max(interval, 1.0)):  # see shared.loops
                    healthy = await check()
            except Exception:
                healthy = False
            await self.set_serving(healthy)
            return False

        return PeriodicTask("health", step, interval)

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
        """NOT_SERVING first; keep serving for the drain period (calls already queued, and
        callers that have not yet seen the health change); then let calls in flight finish
        within the grace period."""
        self._stopping = True
        for name in self._service_names:
            HEALTH_SERVING.labels(name).set(0)
        await self.health.enter_graceful_shutdown()
        if self._drain:
            await asyncio.sleep(self._drain)
        self._before_grace(self._grace)
        await self.server.stop(self._grace)
