"""What the alert rules (deploy/prometheus/alerts.yml) and the Grafana dashboard
(deploy/grafana/exchange.json) ask Prometheus for: each PromQL expression, parsed by
promql-parser (a port of Prometheus' own parser), and the series and labels it selects."""

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import promql_parser
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.databases import ROOT

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "exchange.json"

# Labels that Prometheus attaches to every series it scrapes (the target's), which the
# services never export; `le` is in every histogram bucket.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "container", "service", "node"})

# Grafana's built-in interval variables, and a value for any other ($network, ...), which
# the dashboard only uses inside label matchers' regular expressions.
_GRAFANA_INTERVALS = re.compile(r"\$(?:__rate_interval|__interval|__range)\b|\$\{__\w+\}")
_GRAFANA_VARIABLE = re.compile(r"\$\{\w+(?::\w+)?\}|\$\w+")


@dataclass(frozen=True)
class Query:
    where: str  # "alert X" or "panel 'Y' target A", for messages
    expr: str  # PromQL, Grafana variables replaced


@dataclass(frozen=True)
class Selector:
    """One series selector: a metric name and the label names its matchers use."""

    metric: str
    labels: frozenset[str]


@dataclass(frozen=True)
class Grouping:
    """An aggregation `by (labels)` or `without (labels)`: each label names one that the
    series inside it carry (or a target label)."""

    labels: frozenset[str]
    metrics: frozenset[str]


def load_rules(path: Path = ALERTS) -> dict[str, Any]:
    rules: dict[str, Any] = yaml.safe_load(path.read_text())
    return rules


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def alert_queries(rules: dict[str, Any]) -> list[Query]:
    return [
        Query(f"alert {rule.get('alert') or rule.get('record')}", str(rule["expr"]))
        for group in rules["groups"]
        for rule in group["rules"]
    ]


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    panels: list[dict[str, Any]] = []
    for panel in dashboard.get("panels", []):
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    return panels


def grafana_to_promql(expr: str) -> str:
    return _GRAFANA_VARIABLE.sub(".*", _GRAFANA_INTERVALS.sub("5m", expr))


def dashboard_queries(dashboard: dict[str, Any]) -> list[Query]:
    queries = [
        Query(
            f"panel {panel['title']!r} target {target['refId']}", grafana_to_promql(target["expr"])
        )
        for panel in dashboard_panels(dashboard)
        for target in panel.get("targets", [])
    ]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        text = query["query"] if isinstance(query, dict) else query
        # label_values(metric, label) names a metric and one of its labels.
        found = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", text)
        assert found, f"variable {variable['name']}: unexpected query {text!r}"
        queries.append(Query(f"variable {variable['name']}", f"count by ({found[2]}) ({found[1]})"))
    return queries


def _metric_name(selector: promql_parser.VectorSelector) -> str:
    if selector.name:
        return selector.name
    for matcher in selector.matchers.matchers:
        if matcher.name == "__name__" and matcher.op == promql_parser.MatchOp.Equal:
            return matcher.value
    raise AssertionError(f"selector without a metric name: {selector}")


def parse(expr: str) -> tuple[list[Selector], list[Grouping]]:
    """The selectors and `by` groupings of an expression (raises on a syntax error)."""
    selectors: list[Selector] = []
    groupings: list[Grouping] = []

    def metrics_below(node: promql_parser.Expr) -> frozenset[str]:
        found: set[str] = set()

        def visit(child: promql_parser.Expr) -> bool:
            if isinstance(child, promql_parser.VectorSelector):
                found.add(_metric_name(child))
            return True

        promql_parser.walk(node, visit)
        return frozenset(found)

    def visit(node: promql_parser.Expr) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            labels = {m.name for m in node.matchers.matchers if m.name != "__name__"}
            selectors.append(Selector(_metric_name(node), frozenset(labels)))
        elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
            groupings.append(Grouping(frozenset(node.modifier.labels), metrics_below(node.expr)))
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return selectors, groupings


def exported(*texts: str) -> tuple[dict[str, set[str]], set[str]]:
    """Every sample name with the label names its samples carry, and the family names."""
    samples: dict[str, set[str]] = {}
    families: set[str] = set()
    for text in texts:
        for family in text_string_to_metric_families(text):
            families.add(family.name)
            for sample in family.samples:
                samples.setdefault(sample.name, set()).update(sample.labels)
    return samples, families


def sample_value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples `name` whose labels include `labels` (0 when there are none)."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def problems(queries: list[Query], samples: dict[str, set[str]]) -> list[str]:
    found: list[str] = []
    for query in queries:
        selectors, groupings = parse(query.expr)
        for selector in selectors:
            if selector.metric not in samples:
                near = sorted(name for name in samples if name.startswith(selector.metric))
                found.append(
                    f"{query.where}: no series {selector.metric}"
                    + (f" (did you mean one of {near}?)" if near else "")
                )
                continue
            unknown = selector.labels - samples[selector.metric] - TARGET_LABELS
            if unknown:
                found.append(f"{query.where}: {selector.metric} has no label {sorted(unknown)}")
        for grouping in groupings:
            carried = set(TARGET_LABELS).union(
                *(samples.get(metric, set()) for metric in grouping.metrics)
            )
            if grouping.labels - carried:
                found.append(
                    f"{query.where}: no series of {sorted(grouping.metrics)} has the label "
                    f"{sorted(grouping.labels - carried)}"
                )
    return found
