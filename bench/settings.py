"""What a run measures and for how long, from BENCH_* environment variables."""

import os
from dataclasses import dataclass

from shared import config
from shared.config import ConfigError

# The bench's knobs are bounded by what a run can take, not by what a service may be given.
_BENCH_MAXIMUM = 10_000_000


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    return config.env_int(name, default, minimum=minimum, maximum=_BENCH_MAXIMUM)


def env_float(name: str, default: float, *, minimum: float = 0.0) -> float:
    return config.env_float(name, default, minimum=minimum, maximum=float(_BENCH_MAXIMUM))


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


def _env_names(name: str) -> tuple[str, ...]:
    raw = os.environ.get(name, "").strip()
    return tuple(item.strip() for item in raw.split(",") if item.strip())


SCENARIOS = (
    "claim",
    "lifecycle",
    "handoff",
    "growth",
    "memory",
    "watch",
    "tracing",
    "deposits",
    "confirmation",
)


@dataclass(frozen=True)
class BenchSettings:
    quick: bool
    scenarios: tuple[str, ...]
    warmup_seconds: float
    duration_seconds: float
    claim_concurrency: tuple[int, ...]
    lifecycle_concurrency: int
    claim_pool_size: int
    client_processes: int
    handoff_rounds: int
    handoff_queue_length: int
    handoff_pause_seconds: float
    poll_seconds: float
    growth_sizes: tuple[int, ...]
    growth_queue: int
    lifecycles_small: int
    lifecycles_large: int
    watchers: int
    watch_connections: int
    watch_pairs: int
    tracing_rounds: int
    deposit_pairs: int
    confirmation_rounds: int

    @classmethod
    def from_env(cls) -> "BenchSettings":
        quick = os.environ.get("BENCH_QUICK", "").strip() not in ("", "0")
        scenarios = _env_names("BENCH_SCENARIOS") or SCENARIOS
        unknown = set(scenarios) - set(SCENARIOS)
        if unknown:
            raise ConfigError(f"BENCH_SCENARIOS: unknown {sorted(unknown)}; known {SCENARIOS}")
        sizes = _env_ints(
            "BENCH_GROWTH_SIZES", (1_000, 20_000, 100_000) if quick else (1_000, 100_000, 1_000_000)
        )
        settings = cls(
            quick=quick,
            scenarios=scenarios,
            warmup_seconds=env_float("BENCH_WARMUP_SECONDS", 1.0 if quick else 3.0),
            duration_seconds=env_float(
                "BENCH_DURATION_SECONDS", 3.0 if quick else 10.0, minimum=0.5
            ),
            claim_concurrency=_env_ints("BENCH_CONCURRENCY", (1, 8, 32, 64)),
            lifecycle_concurrency=env_int("BENCH_LIFECYCLE_CONCURRENCY", 32, minimum=1),
            claim_pool_size=env_int("BENCH_POOL_SIZE", 10_000, minimum=100),
            client_processes=env_int("BENCH_CLIENT_PROCESSES", 2, minimum=1),
            handoff_rounds=env_int("BENCH_HANDOFF_ROUNDS", 30 if quick else 150, minimum=1),
            handoff_queue_length=env_int("BENCH_HANDOFF_QUEUE", 10, minimum=1),
            handoff_pause_seconds=env_float("BENCH_HANDOFF_PAUSE_SECONDS", 0.5),
            poll_seconds=env_float("BENCH_POLL_SECONDS", 0.001),
            growth_sizes=sizes,
            growth_queue=env_int("BENCH_GROWTH_QUEUE", 20_000 if quick else 100_000, minimum=1),
            lifecycles_small=env_int(
                "BENCH_LIFECYCLES_SMALL", 1_000 if quick else 10_000, minimum=1
            ),
            lifecycles_large=env_int(
                "BENCH_LIFECYCLES_LARGE", 3_000 if quick else 100_000, minimum=1
            ),
            watchers=env_int("BENCH_WATCHERS", 1_000, minimum=1),
            watch_connections=env_int("BENCH_WATCH_CONNECTIONS", 1_000, minimum=1),
            watch_pairs=env_int("BENCH_WATCH_PAIRS", 1 if quick else 3, minimum=1),
            tracing_rounds=env_int("BENCH_TRACING_ROUNDS", 1 if quick else 3, minimum=1),
            deposit_pairs=env_int("BENCH_DEPOSIT_PAIRS", 1 if quick else 3, minimum=1),
            confirmation_rounds=env_int("BENCH_CONFIRMATION_ROUNDS", 2 if quick else 3, minimum=1),
        )
        if settings.lifecycles_large <= settings.lifecycles_small:
            raise ConfigError("BENCH_LIFECYCLES_LARGE must be more than BENCH_LIFECYCLES_SMALL")
        if sorted(settings.growth_sizes) != list(settings.growth_sizes):
            raise ConfigError("BENCH_GROWTH_SIZES must be in increasing order")
        return settings
