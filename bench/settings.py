"""What a run measures and for how long, from BENCH_* environment variables."""

import os
from dataclasses import dataclass, field, fields
from typing import Any

from shared import config
from shared.config import ConfigError

# The bench's knobs are bounded by what a run can take, not by what a service may be given.
_BENCH_MAXIMUM = 10_000_000


SCENARIOS = (
    "claim", "lifecycle", "handoff", "growth", "memory", "watch", "tracing", "deposits",
    "confirmation",
)  # fmt: skip


def _env_ints(name: str, default: tuple[int, ...]) -> tuple[int, ...]:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        values = tuple(int(item) for item in raw.split(",") if item.strip())
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated whole numbers, got {raw!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{name} must list numbers of at least 1, got {raw!r}")
    return values


def _var(name: str, full: Any, quick: Any = None, minimum: float = 1) -> Any:
    quick = full if quick is None else quick
    return field(metadata={"name": name, "full": full, "quick": quick, "minimum": minimum})


@dataclass(frozen=True)
class BenchSettings:
    quick: bool
    scenarios: tuple[str, ...]
    warmup_seconds: float = _var("BENCH_WARMUP_SECONDS", 3.0, 1.0, minimum=0)
    duration_seconds: float = _var("BENCH_DURATION_SECONDS", 10.0, 3.0, minimum=0.5)
    claim_concurrency: tuple[int, ...] = _var("BENCH_CONCURRENCY", (1, 8, 32, 64))
    lifecycle_concurrency: int = _var("BENCH_LIFECYCLE_CONCURRENCY", 32)
    claim_pool_size: int = _var("BENCH_POOL_SIZE", 10_000, minimum=100)
    client_processes: int = _var("BENCH_CLIENT_PROCESSES", 2)
    handoff_rounds: int = _var("BENCH_HANDOFF_ROUNDS", 150, 30)
    handoff_queue_length: int = _var("BENCH_HANDOFF_QUEUE", 10)
    handoff_pause_seconds: float = _var("BENCH_HANDOFF_PAUSE_SECONDS", 0.5, minimum=0)
    poll_seconds: float = _var("BENCH_POLL_SECONDS", 0.001, minimum=0)
    growth_sizes: tuple[int, ...] = _var(
        "BENCH_GROWTH_SIZES", (1_000, 100_000, 1_000_000), (1_000, 20_000, 100_000)
    )
    growth_queue: int = _var("BENCH_GROWTH_QUEUE", 100_000, 20_000)
    lifecycles_small: int = _var("BENCH_LIFECYCLES_SMALL", 10_000, 1_000)
    lifecycles_large: int = _var("BENCH_LIFECYCLES_LARGE", 100_000, 3_000)
    watchers: int = _var("BENCH_WATCHERS", 1_000)
    watch_connections: int = _var("BENCH_WATCH_CONNECTIONS", 1_000)
    watch_pairs: int = _var("BENCH_WATCH_PAIRS", 3, 1)
    tracing_rounds: int = _var("BENCH_TRACING_ROUNDS", 3, 1)
    deposit_pairs: int = _var("BENCH_DEPOSIT_PAIRS", 3, 1)
    confirmation_rounds: int = _var("BENCH_CONFIRMATION_ROUNDS", 3, 2)

    @classmethod
    def from_env(cls) -> "BenchSettings":
        quick = os.environ.get("BENCH_QUICK", "").strip() not in ("", "0")
        raw = os.environ.get("BENCH_SCENARIOS", "").split(",")
        scenarios = tuple(item.strip() for item in raw if item.strip()) or SCENARIOS
        unknown = set(scenarios) - set(SCENARIOS)
        if unknown:
            raise ConfigError(f"BENCH_SCENARIOS: unknown {sorted(unknown)}; known {SCENARIOS}")
        values: dict[str, Any] = {}
        for setting in fields(cls)[2:]:
            name, minimum = setting.metadata["name"], setting.metadata["minimum"]
            default = setting.metadata["quick" if quick else "full"]
            if isinstance(default, tuple):
                values[setting.name] = _env_ints(name, default)
            elif isinstance(default, float):
                values[setting.name] = config.env_float(
                    name, default, minimum=minimum, maximum=_BENCH_MAXIMUM
                )
            else:
                values[setting.name] = config.env_int(
                    name, default, minimum=int(minimum), maximum=_BENCH_MAXIMUM
                )
        settings = cls(quick, scenarios, **values)
        if settings.lifecycles_large <= settings.lifecycles_small:
            raise ConfigError("BENCH_LIFECYCLES_LARGE must be more than BENCH_LIFECYCLES_SMALL")
        if sorted(settings.growth_sizes) != list(settings.growth_sizes):
            raise ConfigError("BENCH_GROWTH_SIZES must be in increasing order")
        return settings
