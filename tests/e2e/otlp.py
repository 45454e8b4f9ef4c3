"""An OTLP/gRPC trace receiver for the tests: the collector's own TraceService (from the
opentelemetry-proto package) on a real gRPC server, keeping every span it is sent."""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as otlp
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as otlp_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.waiting import HANG_GUARD_SECONDS


@dataclass(frozen=True)
class ReceivedSpan:
    service: str  # the resource's service.name
    trace_id: str  # hex, as in the log lines
    span_id: str
    parent_span_id: str  # "" for a root span
    name: str
    kind: int
    attributes: dict[str, Any]

    @property
    def is_sql(self) -> bool:
        return any(key in self.attributes for key in ("db.system", "db.system.name"))


def _value(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


class OtlpReceiver(otlp_grpc.TraceServiceServicer):
    def __init__(self, keep: bool = True) -> None:
        """`keep`: keep each span (else only count them, for a long run)."""
        self.spans: list[ReceivedSpan] = []
        self.received = 0
        self._keep = keep
        self._server = grpc.aio.server()
        otlp_grpc.add_TraceServiceServicer_to_server(self, self._server)  # type: ignore[no-untyped-call]
        self.port = 0

    async def start(self) -> str:
        """Serves on a free port; returns the endpoint for OTEL_EXPORTER_OTLP_ENDPOINT."""
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        await self._server.start()
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        await self._server.stop(1)

    async def Export(  # the generated servicer's name: the collector's contract
        self, request: otlp.ExportTraceServiceRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> otlp.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            self.received += sum(len(scope.spans) for scope in resource_spans.scope_spans)
            if not self._keep:
                continue
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(_received(str(resource.get("service.name")), span))
        return otlp.ExportTraceServiceResponse()

    async def wait_for(
        self,
        found: Callable[[list[ReceivedSpan]], bool],
        seconds: float = HANG_GUARD_SECONDS,
    ) -> list[ReceivedSpan]:
        """The spans received, once `found` says they are complete."""
        deadline = time.monotonic() + seconds
        while not found(self.spans):
            assert time.monotonic() < deadline, [(s.service, s.name) for s in self.spans]
            await asyncio.sleep(0.1)
        return list(self.spans)


def _received(service: str, span: trace_pb2.Span) -> ReceivedSpan:
    return ReceivedSpan(
        service=service,
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        name=span.name,
        kind=span.kind,
        attributes={a.key: _value(a.value) for a in span.attributes},
    )
