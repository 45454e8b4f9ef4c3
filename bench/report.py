"""The results: the table, the JSON file and the chart."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Row:
    scenario: str
    concurrency: str = "-"
    measured: str = ""  # a figure that is not a rate or a latency (memory, connections)
    throughput: float | None = None  # operations per second
    p50: float | None = None  # milliseconds
    p99: float | None = None
    baseline: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""


COLUMNS = "scenario|conc|measured|ops/s|p50 ms|p99 ms|baseline(s), same run|ratio|target|met?"


def _number(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def cells(row: Row) -> list[str]:
    met = "-" if row.met is None else "yes" if row.met else "NO"
    if row.note:
        met = row.note if row.met is None else f"{met} ({row.note})"
    numbers = [_number(row.throughput, 0), _number(row.p50, 2), _number(row.p99, 2)]
    first = [row.scenario, row.concurrency, row.measured or "-", *numbers, row.baseline or "-"]
    return [*first, _number(row.ratio, 2), row.target or "-", met]


def table(rows: Sequence[Row]) -> str:
    body = [COLUMNS.split("|"), *(cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in body) for i in range(len(body[0]))]
    lines = ["| " + " | ".join(map(str.ljust, line, widths)) + " |" for line in body]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def write_json(path: Path, document: dict[str, Any], rows: Sequence[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**document, "rows": [asdict(row) for row in rows]}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def draw_chart(path: Path, title: str, claim: dict[str, Any], life: dict[str, Any] | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = claim["points"]
    x = [p["concurrency"] for p in points]
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))
    lines = ("achieved", "achieved (gRPC API)", "-o"), ("noop", "N: noop gRPC server", "--s")
    for key, label, style in (*lines, ("pgbench", "P: pgbench, same SQL", "--^")):
        left.plot(x, [p[key]["throughput"] for p in points], style, label=label)
        for pct, mark in (("p50", "o"), ("p99", "v")):
            block = [p[key]["latency_ms"] for p in points]
            y = [b.get("cycle", b)[pct] for b in block]
            right.plot(x, y, style[:-1] + mark, label=f"{key} {pct}")
    left.plot(x, [p["ceiling"] for p in points], ":k", label="C = 1/(1/N + 1/P)")
    left.plot(x, [0.7 * p["ceiling"] for p in points], ":r", label="target 0.7 x C")
    if life:
        done, latency = life["achieved"], life["achieved"]["latency_ms"]["lifecycle"]
        conc = life["concurrency"]
        left.plot([conc], [done["throughput"]], "D", label="lifecycle (3 calls)")
        right.plot([conc, conc], [latency["p50"], latency["p99"]], "D", label="lifecycle p50, p99")
    for axis, name in ((left, "throughput"), (right, "latency")):
        axis.set_xscale("log", base=2)
        axis.set_xticks(x, [str(c) for c in x])
        axis.set_xlabel("concurrency (calls in flight)")
        axis.set_title(name)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    left.set_ylabel("operations per second")
    left.set_ylim(bottom=0)
    right.set_yscale("log")
    right.set_ylabel("latency per operation, ms")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
