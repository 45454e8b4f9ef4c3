"""Summaries of latency samples: nearest-rank percentiles, in milliseconds."""

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of values sorted ascending (0 for no values)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True)
class Latency:
    """Milliseconds."""

    count: int
    p50: float
    p90: float
    p99: float
    max: float
    mean: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> "Latency":
        values = sorted(seconds)
        if not values:
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0)
        return cls(
            count=len(values),
            p50=percentile(values, 0.50) * 1000,
            p90=percentile(values, 0.90) * 1000,
            p99=percentile(values, 0.99) * 1000,
            max=values[-1] * 1000,
            mean=sum(values) / len(values) * 1000,
        )

    def to_json(self) -> dict[str, Any]:
        return {key: round(value, 3) for key, value in asdict(self).items()}


def ceiling(rpc_floor: float, sql_floor: float) -> float:
    if rpc_floor <= 0 or sql_floor <= 0:
        return 0.0
    return 1 / (1 / rpc_floor + 1 / sql_floor)
