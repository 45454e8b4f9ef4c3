"""Which OTEL_* variables turn tracing on (shared.tracing.tracing_settings)."""

import pytest

from shared.config import ConfigError
from shared.tracing import TracingSettings, tracing_settings


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_SERVICE_NAME": "orders", "OTEL_RESOURCE_ATTRIBUTES": "a=b"},
        {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"},
        {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "  "},
    ],
)
def test_tracing_is_off_unless_an_exporter_or_an_endpoint_is_named(
    environ: dict[str, str],
) -> None:
    assert tracing_settings(environ) is None


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"},
            TracingSettings(("otlp",), "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"},
            TracingSettings(("otlp",), "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        ),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, TracingSettings(("otlp",), "OTEL_TRACES_EXPORTER=otlp")),
        (
            {"OTEL_TRACES_EXPORTER": "OTLP, console", "OTEL_SDK_DISABLED": "false"},
            TracingSettings(("otlp", "console"), "OTEL_TRACES_EXPORTER=otlp, console"),
        ),
        (
            {"OTEL_TRACES_EXPORTER": "console", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            TracingSettings(("console",), "OTEL_TRACES_EXPORTER=console"),
        ),
    ],
)
def test_an_exporter_or_an_otlp_endpoint_turns_tracing_on(
    environ: dict[str, str], expected: TracingSettings
) -> None:
    assert tracing_settings(environ) == expected


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER must be otlp, console or none"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http"},
            "OTEL_EXPORTER_OTLP_PROTOCOL must be grpc",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL must be grpc",
        ),
    ],
)
def test_what_the_services_cannot_export_is_a_configuration_error(
    environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        tracing_settings(environ)
