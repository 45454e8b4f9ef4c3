"""Tracing end to end: both services as processes with tracing on, exporting over OTLP/gRPC to
a receiver in the test; one CreateOrder is one trace across both services and their SQL, and
its trace id is in both services' log lines. Off without OTEL_* variables; on without the
otel extra, a service refuses to start."""

import json
from pathlib import Path

from opentelemetry.proto.trace.v1 import trace_pb2

from tests.e2e.conftest import local_only
from tests.e2e.otlp import OtlpReceiver, ReceivedSpan
from tests.e2e.stack import LocalStack, service_env
from tests.e2e.test_release_flow import add_wallets, create, eth_address
from tests.e2e.test_startup import refused_start

CREATE_ORDER = "/exchange.order.v1.OrderService/CreateOrder"
ALLOCATE_WALLET = "/exchange.wallet_pool.v1.WalletPoolService/AllocateWallet"
SERVER = trace_pb2.Span.SPAN_KIND_SERVER
CLIENT = trace_pb2.Span.SPAN_KIND_CLIENT


def tracing_env(endpoint: str) -> dict[str, str]:
    # Batches go out every 100 ms instead of every 5 s.
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}


def trace_of(spans: list[ReceivedSpan], root: ReceivedSpan) -> list[ReceivedSpan]:
    return [span for span in spans if span.trace_id == root.trace_id]


def create_order_traces(spans: list[ReceivedSpan]) -> list[ReceivedSpan]:
    return [
        span
        for span in spans
        if span.service == "order_service" and span.name == CREATE_ORDER and span.kind == SERVER
    ]


def statement(span: ReceivedSpan) -> str:
    return str(span.attributes.get("db.statement", ""))


def log_entries(logs: str, event: str) -> list[dict[str, str]]:
    entries = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    return [entry for entry in entries if entry["event"] == event]


@local_only("the OTLP receiver listens on the host's loopback, out of the containers' reach")
async def test_one_create_order_is_one_trace_across_both_services_and_their_sql(
    e2e_database_url: str, tmp_path: Path
) -> None:
    receiver = OtlpReceiver()
    endpoint = await receiver.start()
    stack = await LocalStack.start(e2e_database_url, tmp_path, extra_env=tracing_env(endpoint))
    try:
        await add_wallets(stack, "ETH", [eth_address()])
        order = await create(stack)
        assert order.wallet_address

        def complete(spans: list[ReceivedSpan]) -> bool:
            # Each service's call span ends after (and is exported with or after) its SQL.
            roots = create_order_traces(spans)
            return bool(roots) and any(
                s.name == ALLOCATE_WALLET and s.kind == SERVER for s in trace_of(spans, roots[0])
            )

        spans = await receiver.wait_for(complete)
        [root] = create_order_traces(spans)
        trace = trace_of(spans, root)

        # One tree: the CreateOrder call is its root, every other span hangs below it.
        assert root.parent_span_id == ""
        ids = {span.span_id for span in trace}
        assert all(span.parent_span_id in ids for span in trace if span is not root)
        [call] = [s for s in trace if s.name == ALLOCATE_WALLET and s.kind == CLIENT]
        assert call.service == "order_service" and call.parent_span_id == root.span_id
        [served] = [s for s in trace if s.name == ALLOCATE_WALLET and s.kind == SERVER]
        assert served.service == "wallet_pool_service" and served.parent_span_id == call.span_id
        # Each service's SQL, the pool's taking of the wallet included, inside its own call.
        pool_sql = [s for s in trace if s.is_sql and s.service == "wallet_pool_service"]
        assert all(s.parent_span_id == served.span_id for s in pool_sql)
        assert any("allocate_wallet(" in statement(s) for s in pool_sql)
        order_sql = [s for s in trace if s.is_sql and s.service == "order_service"]
        assert order_sql and all(s.parent_span_id == root.span_id for s in order_sql)
        assert any("INSERT INTO orders.orders" in statement(s) for s in order_sql)
        # No other trace holds a piece of this call.
        assert all(s.trace_id == root.trace_id for s in spans if s.name == ALLOCATE_WALLET)
        # The background loops' and health checks' SQL (every 0.2 to 0.5 s here) is no trace
        # of its own.
        assert all(s.parent_span_id for s in spans if s.is_sql)

        # The log lines of the call, in both services, lead to the trace and its spans.
        [order_rpc] = [
            entry
            for entry in log_entries(stack.order_process.logs(), "rpc")
            if entry["method"] == CREATE_ORDER
        ]
        assert order_rpc["trace_id"] == root.trace_id and order_rpc["span_id"] == root.span_id
        [pool_rpc] = [
            entry
            for entry in log_entries(stack.pool_process.logs(), "rpc")
            if entry["method"] == ALLOCATE_WALLET
        ]
        assert pool_rpc["trace_id"] == root.trace_id and pool_rpc["span_id"] == served.span_id
    finally:
        await stack.close()
        await receiver.stop()


@local_only("the OTLP receiver listens on the host's loopback, out of the containers' reach")
async def test_the_spans_still_batched_are_sent_when_a_service_stops(
    e2e_database_url: str, tmp_path: Path
) -> None:
    receiver = OtlpReceiver()
    endpoint = await receiver.start()
    # Batches would wait a minute: only the stop sends them.
    env = {**tracing_env(endpoint), "OTEL_BSP_SCHEDULE_DELAY": "60000"}
    stack = await LocalStack.start(e2e_database_url, tmp_path, extra_env=env)
    try:
        await add_wallets(stack, "ETH", [eth_address()])
        await create(stack)
        assert create_order_traces(receiver.spans) == []
        assert await stack.order_process.stop() == 0
        assert len(create_order_traces(receiver.spans)) == 1
    finally:
        await stack.close()
        await receiver.stop()


@local_only("the OTLP receiver listens on the host's loopback, out of the containers' reach")
async def test_without_otel_variables_nothing_is_traced(
    e2e_database_url: str, tmp_path: Path
) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "", "OTEL_TRACES_EXPORTER": ""}
    stack = await LocalStack.start(e2e_database_url, tmp_path, extra_env=env)
    try:
        await add_wallets(stack, "ETH", [eth_address()])
        await create(stack)
    finally:
        await stack.close()
    for logs in (stack.order_process.logs(), stack.pool_process.logs()):
        assert log_entries(logs, "rpc") and "trace_id" not in logs
        assert not log_entries(logs, "tracing")


@local_only("the OTLP receiver listens on the host's loopback, out of the containers' reach")
async def test_calls_the_sampler_leaves_out_leave_no_spans_and_no_trace_ids(
    e2e_database_url: str, tmp_path: Path
) -> None:
    receiver = OtlpReceiver()
    endpoint = await receiver.start()
    env = {**tracing_env(endpoint), "OTEL_TRACES_SAMPLER": "always_off"}
    stack = await LocalStack.start(e2e_database_url, tmp_path, extra_env=env)
    try:
        await add_wallets(stack, "ETH", [eth_address()])
        await create(stack)
    finally:
        await stack.close()
        await receiver.stop()
    assert receiver.spans == []
    for logs in (stack.order_process.logs(), stack.pool_process.logs()):
        assert log_entries(logs, "tracing") and log_entries(logs, "rpc")
        assert "trace_id" not in logs


@local_only("the OTLP receiver listens on the host's loopback, out of the containers' reach")
async def test_tracing_asked_for_without_the_otel_extra_refuses_to_start(
    e2e_database_url: str, tmp_path: Path
) -> None:
    # The process's Python finds no OpenTelemetry, as where the extra is not installed.
    hide = tmp_path / "without_otel"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text("import sys\nsys.modules['opentelemetry'] = None\n")
    env = service_env(e2e_database_url, extra=tracing_env("http://127.0.0.1:4317"))
    env["PYTHONPATH"] = str(hide)
    for module in ("order_service", "wallet_pool_service"):
        code, output = await refused_start(module, env, tmp_path / f"{module}.log")

        assert code == 2, output
        [line] = output.splitlines()
        assert line.startswith(
            f"{module}: configuration error: OTEL_EXPORTER_OTLP_ENDPOINT turns tracing on, but "
            "the OpenTelemetry packages are not installed (no module opentelemetry.sdk.trace"
        ), line
        assert "install the otel extra (pip install 'exchange-office[otel]')" in line
