"""Client-side gRPC metrics (shared.metrics: grpc_client_*): what a client records of each call
it makes. Recorded by the caller around the call, not by a channel interceptor: any
interceptor puts each call of grpcio.aio through a task of its own, which cost about 50 µs of
CPU per call against the bench's noop server."""

import time

import grpc

from shared.metrics import CLIENT_HANDLED, CLIENT_SECONDS, CLIENT_STARTED


class ClientCall:
    """One call, counted as started when made; `ended` records its status code and time."""

    def __init__(self, grpc_type: str, service: str, method: str) -> None:
        self._labels = (grpc_type, service, method)
        self._started = time.perf_counter()
        CLIENT_STARTED.labels(*self._labels).inc()

    def ended(self, code: grpc.StatusCode) -> None:
        CLIENT_HANDLED.labels(*self._labels, code.name).inc()
        CLIENT_SECONDS.labels(*self._labels).observe(time.perf_counter() - self._started)
