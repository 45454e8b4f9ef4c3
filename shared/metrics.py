"""Prometheus metrics shared by both services, and the HTTP endpoint that exposes them.

Metric objects live in the default registry, as prometheus_client expects."""

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

# The names and labels of grpc-ecosystem/go-grpc-prometheus (and py-grpc-prometheus), which
# the standard gRPC dashboards query: grpc_type is unary, client_stream, server_stream or
# bidi_stream; started minus handled is the calls (and streams) in flight.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
RPC_STARTED = Counter(
    "grpc_server_started_total",
    "RPCs started on the server, by type and method.",
    ["grpc_type", "grpc_service", "grpc_method"],
)
RPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by type, method and status code.",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
)
RPC_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time to handle an RPC on the server (a stream: how long it was open), by type and method.",
    ["grpc_type", "grpc_service", "grpc_method"],
    buckets=_LATENCY_BUCKETS,
)
CLIENT_STARTED = Counter(
    "grpc_client_started_total",
    "RPCs started by this service as a client (the order service towards the pool), by type "
    "and method.",
    ["grpc_type", "grpc_service", "grpc_method"],
)
CLIENT_HANDLED = Counter(
    "grpc_client_handled_total",
    "RPCs this service made as a client that completed, by type, method and status code "
    "(one per call: the channel's transparent retries are inside it).",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
)
CLIENT_SECONDS = Histogram(
    "grpc_client_handling_seconds",
    "Time from the start of an RPC made as a client until its status (a stream: how long it "
    "was open), by type and method.",
    ["grpc_type", "grpc_service", "grpc_method"],
    buckets=_LATENCY_BUCKETS,
)
HEALTH_SERVING = Gauge(
    "grpc_health_serving",
    "1 while the service's gRPC health says SERVING (its database answers); 0 while it says "
    "NOT_SERVING, and from the start of a graceful stop.",
    ["grpc_service"],
)
HEALTH_CHANGES = Counter(
    "grpc_health_changes_total",
    "Changes of the service's health between SERVING and NOT_SERVING that followed its "
    "database (a graceful stop is not counted), for alerts on flapping between scrapes.",
    ["grpc_service"],
)


def serve_metrics(address: str) -> int:
    """Expose /metrics on `address` (host:port; port 0 picks one). Returns the port."""
    host, _, port = address.rpartition(":")
    server, _ = start_http_server(int(port), addr=host or "0.0.0.0")
    bound = int(server.server_port)
    log.info("metrics", extra={"address": f"{host}:{bound}", "port": bound})
    return bound
