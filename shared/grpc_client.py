"""Client-side gRPC metrics: interceptors for a channel that count the calls made on it by
method and status code and time them (shared.metrics: grpc_client_*)."""

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from shared.metrics import CLIENT_HANDLED, CLIENT_SECONDS, CLIENT_STARTED


def _labels(details: grpc.aio.ClientCallDetails, grpc_type: str) -> tuple[str, str, str]:
    # grpcio passes the method as bytes (grpc/grpc#31092).
    method = details.method
    text = method.decode() if isinstance(method, bytes) else str(method)
    service, _, name = text.strip("/").rpartition("/")
    return grpc_type, service, name


def _observe(labels: tuple[str, str, str], code: grpc.StatusCode, started: float) -> None:
    CLIENT_HANDLED.labels(*labels, code.name).inc()
    CLIENT_SECONDS.labels(*labels).observe(time.perf_counter() - started)


class _UnaryUnaryMetrics(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]  # not generic at run time
    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        labels = _labels(client_call_details, "unary")
        CLIENT_STARTED.labels(*labels).inc()
        started = time.perf_counter()
        # The call's status is only known once it ends; a call cancelled meanwhile (the
        # caller's task, or call.cancel()) is CANCELLED.
        code = grpc.StatusCode.CANCELLED
        try:
            call = await continuation(client_call_details, request)
            code = await call.code()
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            raise
        except Exception:
            code = grpc.StatusCode.UNKNOWN
            raise
        finally:
            _observe(labels, code, started)
        return call


class _UnaryStreamMetrics(grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]  # not generic at run time
    async def intercept_unary_stream(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Any],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> AsyncIterator[Any]:
        labels = _labels(client_call_details, "server_stream")
        CLIENT_STARTED.labels(*labels).inc()
        started = time.perf_counter()
        call = await continuation(client_call_details, request)
        return self._responses(call, labels, started)

    @staticmethod
    async def _responses(
        call: Any, labels: tuple[str, str, str], started: float
    ) -> AsyncIterator[Any]:
        # Left before its end (the caller stopped reading and cancelled it): CANCELLED.
        code = grpc.StatusCode.CANCELLED
        try:
            async for response in call:
                yield response
            code = await call.code()
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            raise
        finally:
            _observe(labels, code, started)


def client_metrics_interceptors() -> list[Any]:
    """For a channel whose calls are unary or server streams (the pool's). Typed Any: the
    stubs' ClientInterceptor is a placeholder."""
    return [_UnaryUnaryMetrics(), _UnaryStreamMetrics()]
