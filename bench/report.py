"""The results: one table row per figure (beside its baseline from the same run), the JSON
file and the chart."""

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


COLUMNS = (
    "scenario",
    "conc",
    "measured",
    "ops/s",
    "p50 ms",
    "p99 ms",
    "baseline(s), same run",
    "ratio",
    "target",
    "met?",
)


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _met(row: Row) -> str:
    if row.met is None:
        return "-" if not row.note else row.note
    verdict = "yes" if row.met else "NO"
    return f"{verdict} ({row.note})" if row.note else verdict


def cells(row: Row) -> list[str]:
    return [
        row.scenario,
        row.concurrency,
        row.measured or "-",
        _number(row.throughput, 0),
        _number(row.p50, 2),
        _number(row.p99, 2),
        row.baseline or "-",
        "-" if row.ratio is None else f"{row.ratio:.2f}",
        row.target or "-",
        _met(row),
    ]


def table(rows: Sequence[Row]) -> str:
    """A plain-text table (also valid as a Markdown table)."""
    body = [list(COLUMNS), *(cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in body) for i in range(len(COLUMNS))]

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(body[0]), rule, *(line(values) for values in body[1:])])


def write_json(path: Path, document: dict[str, Any], rows: Sequence[Row]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**document, "rows": [asdict(row) for row in rows]}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


@dataclass(frozen=True)
class Series:
    label: str
    x: Sequence[int]
    y: Sequence[float]
    style: str = "-o"


def draw_chart(
    path: Path,
    title: str,
    throughput: Sequence[Series],
    latency: Sequence[Series],
    points: Sequence[tuple[str, int, float, float, float]] = (),
) -> None:
    """Throughput (left) and latency (right, log scale) by concurrency. `points`: single
    measurements (label, concurrency, ops/s, p50 ms, p99 ms) drawn as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))
    for series in throughput:
        left.plot(series.x, series.y, series.style, label=series.label)
    for series in latency:
        right.plot(series.x, series.y, series.style, label=series.label)
    for label, concurrency, rate, p50, p99 in points:
        left.plot([concurrency], [rate], "D", label=label)
        right.plot([concurrency], [p50], "D", label=f"{label} p50")
        right.plot([concurrency], [p99], "^", label=f"{label} p99")
    for axis in (left, right):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrency (calls in flight)")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=7)
    ticks = sorted({x for series in throughput for x in series.x})
    for axis in (left, right):
        axis.set_xticks(ticks, [str(t) for t in ticks])
    left.set_ylabel("operations per second")
    left.set_ylim(bottom=0)
    left.set_title("throughput")
    right.set_yscale("log")
    right.set_ylabel("latency per operation, ms")
    right.set_title("latency")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
