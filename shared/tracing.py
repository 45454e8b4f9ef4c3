"""OpenTelemetry tracing, from the `otel` extra: off unless the standard OTEL_* variables ask
for it (see `tracing_settings`). When on: a span for each call served (the server
interceptor) and made to the other service (the client interceptors, which pass the trace on
in the call's metadata), for each SQL statement (asyncpg), and the trace id in every log line.

Nothing here imports OpenTelemetry at module level, so the services run without the extra."""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from shared.config import ConfigError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import Sampler

log = logging.getLogger(__name__)

EXPORTERS = ("otlp", "console")
# What the extra brings, and what tracing needs of it.
EXTRA_MODULES = (
    "opentelemetry.sdk.trace",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    "opentelemetry.instrumentation.grpc",
    "opentelemetry.instrumentation.asyncpg",
)
# Calls that are not worth a trace of their own: probes every few seconds, and reflection.
UNTRACED_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection")


@dataclass(frozen=True)
class TracingSettings:
    exporters: tuple[str, ...]
    # The variable that turned tracing on, for messages.
    switched_on_by: str


def tracing_settings(environ: Mapping[str, str] = os.environ) -> TracingSettings | None:
    """Tracing is on when OTEL_TRACES_EXPORTER names an exporter (`otlp`, `console`), or
    when it is unset and an OTLP endpoint is (OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
    OTEL_EXPORTER_OTLP_ENDPOINT); OTEL_TRACES_EXPORTER=none or OTEL_SDK_DISABLED=true keep it
    off. On without the extra installed is a configuration error naming what is missing."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    names = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    endpoint = (
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        if environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        else "OTEL_EXPORTER_OTLP_ENDPOINT"
        if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        else None
    )
    if names:
        exporters = tuple(dict.fromkeys(n.strip() for n in names.split(",") if n.strip()))
        switched_on_by = f"OTEL_TRACES_EXPORTER={names}"
    elif endpoint:
        exporters, switched_on_by = ("otlp",), endpoint
    else:
        return None
    if exporters == ("none",):
        return None
    unknown = [name for name in exporters if name not in EXPORTERS]
    if unknown:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER must be {', '.join(EXPORTERS)} or none, got {names!r}"
        )
    protocol_variable = next(
        (
            name
            for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
            if environ.get(name, "").strip()
        ),
        None,
    )
    protocol = environ[protocol_variable].strip() if protocol_variable else "grpc"
    if "otlp" in exporters and protocol != "grpc":
        raise ConfigError(
            f"{protocol_variable} must be grpc (the only OTLP protocol the otel extra brings), "
            f"got {protocol!r}"
        )
    missing = []
    for module in EXTRA_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ConfigError(
            f"{switched_on_by} turns tracing on, but the OpenTelemetry packages are not "
            f"installed (no module {', '.join(missing)}): install the otel extra "
            "(pip install 'exchange-office[otel]'), or unset the OTEL_* variables"
        )
    return TracingSettings(exporters, switched_on_by)


def _sql_in_calls_only(configured: Sampler) -> Sampler:
    """OTEL_TRACES_SAMPLER's sampler (parent-based, always on, by default), except that a SQL
    statement outside any traced call is not a trace of its own: the background loops and
    health checks query every second or so, and would bury the calls' traces."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

    class SqlInCallsOnly(Sampler):
        def should_sample(
            self,
            parent_context: Any,
            trace_id: int,
            name: str,
            kind: Any = None,
            attributes: Any = None,
            links: Any = None,
            trace_state: Any = None,
        ) -> SamplingResult:
            parent = trace.get_current_span(parent_context).get_span_context()
            if not parent.is_valid and kind is trace.SpanKind.CLIENT and _is_sql(attributes):
                return SamplingResult(Decision.DROP)
            return configured.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )

        def get_description(self) -> str:
            return f"SqlInCallsOnly{{{configured.get_description()}}}"

    return SqlInCallsOnly()


def _is_sql(attributes: Any) -> bool:
    return bool(attributes) and ("db.system" in attributes or "db.system.name" in attributes)


class _TraceIds(logging.Filter):
    """Adds the current span's trace and span ids to each record (the JSON formatter writes
    every extra attribute), so that a log line leads to its trace: only for a trace that is
    sampled, since the ids of one that is not lead nowhere."""

    def filter(self, record: logging.LogRecord) -> bool:
        from opentelemetry import trace

        context = trace.get_current_span().get_span_context()
        if context.is_valid and context.trace_flags.sampled:
            record.trace_id = trace.format_trace_id(context.trace_id)
            record.span_id = trace.format_span_id(context.span_id)
        return True


class Tracing:
    """The running tracing of one service (or none: every method is then a no-op)."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self._provider = provider
        self._log_filter = _TraceIds()

    @classmethod
    def start(cls, settings: TracingSettings | None, service: str) -> Tracing:
        """Spans go to the exporters of `settings`, batched; `service` is the service.name
        unless OTEL_SERVICE_NAME (or OTEL_RESOURCE_ATTRIBUTES) names another. The OTLP
        exporter reads its own variables (endpoint, headers, TLS, timeout)."""
        if settings is None:
            return cls()
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SpanExporter,
        )

        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: service}))
        provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        # Before any tracer is made: tracers take the provider's sampler when they are.
        provider.sampler = _sql_in_calls_only(provider.sampler)
        for name in settings.exporters:
            exporter: SpanExporter = OTLPSpanExporter() if name == "otlp" else ConsoleSpanExporter()
            provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        AsyncPGInstrumentor().instrument(  # type: ignore[no-untyped-call]
            tracer_provider=provider
        )
        tracing = cls(provider)
        for handler in logging.getLogger().handlers:
            handler.addFilter(tracing._log_filter)
        log.info(
            "tracing",
            extra={"exporters": list(settings.exporters), "by": settings.switched_on_by},
        )
        return tracing

    def server_interceptors(self) -> Sequence[grpc.aio.ServerInterceptor]:
        """To come first: the span then covers the whole call, its logs and status."""
        if self._provider is None:
            return []
        from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

        untraced = filters.any_of(*(filters.service_name(name) for name in UNTRACED_SERVICES))
        interceptor: Any = aio_server_interceptor(  # type: ignore[no-untyped-call]
            tracer_provider=self._provider, filter_=filters.negate(untraced)
        )
        return [interceptor]

    def client_interceptors(self) -> Sequence[Any]:
        if self._provider is None:
            return []
        from opentelemetry.instrumentation.grpc import aio_client_interceptors

        interceptors: list[Any] = aio_client_interceptors(  # type: ignore[no-untyped-call]
            tracer_provider=self._provider
        )
        return interceptors

    async def shutdown(self) -> None:
        """Exports the spans still batched (within the exporter's timeout, in a thread: the
        exporter blocks)."""
        if self._provider is None:
            return
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

        for handler in logging.getLogger().handlers:
            handler.removeFilter(self._log_filter)
        AsyncPGInstrumentor().uninstrument()  # type: ignore[no-untyped-call]
        await asyncio.to_thread(self._provider.shutdown)


async def run_traced(
    settings: TracingSettings | None, service: str, body: Callable[[Tracing], Awaitable[None]]
) -> None:
    """`body` with the service's tracing started, and shut down (its spans flushed) after."""
    tracing = Tracing.start(settings, service)
    try:
        await body(tracing)
    finally:
        await tracing.shutdown()
