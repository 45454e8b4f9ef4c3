"""deploy/prometheus/alerts.yml and deploy/grafana/exchange.json are well formed: every
expression parses as PromQL (promql-parser), each rule has what Prometheus and Alertmanager
need, and the dashboard's panels are complete. promtool (Prometheus' own checker, not on
PyPI or npm) also checks the rules and runs their unit tests (alerts.test.yml) where it is
installed (Debian: the `prometheus` package); without it that test is skipped.

Whether the metrics they name are the ones the services export is
tests/e2e/test_monitoring_metrics.py."""

import os
import re
import shutil
import subprocess
from typing import Any

import promql_parser
import pytest
import yaml

from tests.databases import ROOT
from tests.monitoring import (
    ALERT_TESTS,
    ALERTS,
    Query,
    alert_queries,
    dashboard_panels,
    dashboard_queries,
    load_dashboard,
    load_rules,
    parse,
    problems,
)

SEVERITIES = {"critical", "warning"}
# Template fields Prometheus knows in annotations.
TEMPLATE = re.compile(r"\{\{\s*(.*?)\s*\}\}")


def test_every_alert_expression_is_promql() -> None:
    for query in alert_queries(load_rules()):
        try:
            selectors, _ = parse(query.expr)
        except ValueError as exc:
            pytest.fail(f"{query.where}: {exc}")
        assert selectors, f"{query.where} selects no series"


def test_every_rule_has_a_name_severity_summary_and_description() -> None:
    rules = load_rules()
    assert set(rules) == {"groups"}
    group_names = [group["name"] for group in rules["groups"]]
    assert len(group_names) == len(set(group_names))
    alerts: list[str] = []
    for group in rules["groups"]:
        assert set(group) <= {"name", "interval", "rules"}, group["name"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            name = rule["alert"]
            alerts.append(name)
            assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", name), name
            if "for" in rule:
                promql_parser.parse_duration(rule["for"])
            assert rule["labels"]["severity"] in SEVERITIES, name
            annotations: dict[str, Any] = rule["annotations"]
            assert set(annotations) == {"summary", "description"}, name
            for text in annotations.values():
                for field in TEMPLATE.findall(text):
                    assert re.fullmatch(r"\$(labels\.\w+|value)( \| \w+)?", field), (name, field)
    assert len(alerts) == len(set(alerts)), "alert names are unique"


def test_the_alerts_cover_what_operations_watch() -> None:
    names = {query.where.removeprefix("alert ") for query in alert_queries(load_rules())}
    assert {
        "WalletPoolBelowLowWaterMark",
        "WalletPoolQueueGrowing",
        "OrderPendingReleasesNotDraining",
        "ExchangeErrorRateHigh",
        "ExchangeHealthFlapping",
    } <= names


def test_every_dashboard_query_is_promql_and_every_panel_is_complete() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    panels = dashboard_panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"] and panel["description"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"\$\{?(\w+)", target["expr"])) - {"__rate_interval"}
            assert used <= variables, (panel["title"], used)
    for query in dashboard_queries(dashboard):
        try:
            selectors, _ = parse(query.expr)
        except ValueError as exc:
            pytest.fail(f"{query.where}: {exc}")
        assert selectors, f"{query.where} selects no series"


def promtool() -> str | None:
    """PROMTOOL, the one `make setup` puts into .venv/bin, or one on PATH."""
    installed = ROOT / ".venv" / "bin" / "promtool"
    found = os.environ.get("PROMTOOL") or (str(installed) if installed.exists() else None)
    return found or shutil.which("promtool")


@pytest.mark.skipif(
    promtool() is None,
    reason="promtool is not installed (make setup takes it from Debian's prometheus package; "
    "or set PROMTOOL)",
)
def test_promtool_checks_the_rules_and_their_unit_tests_pass() -> None:
    tool = promtool()
    assert tool is not None
    for arguments in (["check", "rules", ALERTS.name], ["test", "rules", ALERT_TESTS.name]):
        result = subprocess.run(
            [tool, *arguments],
            cwd=ALERTS.parent,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_rule_unit_tests_test_alerts_that_exist() -> None:
    names = {query.where.removeprefix("alert ") for query in alert_queries(load_rules())}
    cases = yaml.safe_load(ALERT_TESTS.read_text())
    assert cases["rule_files"] == [ALERTS.name]
    tested = {check["alertname"] for case in cases["tests"] for check in case["alert_rule_test"]}
    assert tested <= names


def test_every_alert_has_a_rule_test_that_sees_it_fire() -> None:
    """An alert no rule test sees firing could be dead: a wrong metric, label or threshold."""
    names = {query.where.removeprefix("alert ") for query in alert_queries(load_rules())}
    fires = {
        check["alertname"]
        for case in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for check in case["alert_rule_test"]
        if check.get("exp_alerts")
    }
    assert sorted(names - fires) == [], "alerts no rule test sees firing"


def test_the_comparison_catches_a_family_name_a_wrong_label_and_a_wrong_grouping() -> None:
    samples = {
        "grpc_server_handling_seconds_bucket": {"grpc_service", "grpc_method", "le"},
        "order_release_attempts_total": {"path", "outcome"},
    }
    queries = [
        Query("histogram", "rate(grpc_server_handling_seconds[5m])"),
        Query("label", 'order_release_attempts_total{result="failed"}'),
        Query("grouping", "sum by (code) (order_release_attempts_total)"),
        Query("fine", 'sum by (le, job) (grpc_server_handling_seconds_bucket{grpc_method="X"})'),
    ]
    found = problems(queries, samples)
    assert [line.split(":")[0] for line in found] == ["histogram", "label", "grouping"]
    assert "grpc_server_handling_seconds_bucket" in found[0]
