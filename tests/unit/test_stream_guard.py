"""The guard around a server stream, when its generator is closed from another context
(what a stopping server does to a stream still open): it ends quietly."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from shared.auth import Authenticator
from shared.grpc_server import RpcInterceptor, current_deadline
from shared.logs import current_request_id


class CallDetails:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata: tuple[tuple[str, str | bytes], ...] = ()


class StreamContext:
    """The two things the guard asks of a call's context."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("x-request-id", "stream-1"),)

    def time_remaining(self) -> float | None:
        return 30.0


async def endless(_request: Any, _context: Any) -> AsyncIterator[bytes]:
    while True:
        yield b"tick"
        await asyncio.sleep(0)


async def test_a_stream_closed_from_another_context_ends_quietly() -> None:
    async def continuation(_details: Any) -> "grpc.RpcMethodHandler[Any, Any]":
        return grpc.unary_stream_rpc_method_handler(endless)

    interceptor = RpcInterceptor(Authenticator({}, {}))
    details = CallDetails("/test.Service/Stream")
    handler = await interceptor.intercept_service(continuation, details)
    assert handler is not None and handler.unary_stream is not None
    stream = handler.unary_stream(b"", StreamContext())  # type: ignore[arg-type]

    async def serve() -> str | None:
        await anext(stream)  # type: ignore[call-overload]
        return current_request_id.get()

    assert await asyncio.create_task(serve()) == "stream-1"
    # Closed from this test's task, whose context is not the one the stream started in: the
    # check is that this does not raise, and that the stream's deadline stays in its own.
    await stream.aclose()  # type: ignore[attr-defined]
    assert current_deadline.get() is None
