"""What the failover chaos (`failover`) saw: each failover as the clients lived it, the
answers by code, violations; rendered as the report `make chaos CHAOS_MODE=failover` prints."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.chaos.report import render_calls, render_end

# Both services serve again this long after the promotion at most (README, Operations).
RECOVERY_BOUND_SECONDS = 10.0


@dataclass
class Failover:
    """One failover as the clients saw it (times on the monotonic clock)."""

    number: int
    killed_at: float
    # service -> seconds from the kill until it said NOT_SERVING
    not_serving_after: dict[str, float] = field(default_factory=dict)
    promote_started: float = 0.0
    promoted_at: float = 0.0
    # seconds from the promotion until both services serve again (None: not within 60 s):
    # health SERVING and a write through each
    recovery_seconds: float | None = None
    # seconds from the promotion's start until the first write of the load was acknowledged
    first_write_seconds: float | None = None
    # status changes acknowledged before the kill, missing from the new primary
    missing_after_promotion: list[str] = field(default_factory=list)
    # writes in flight at the kill: acknowledged / failed / lost (acknowledged, not there)
    in_flight: Counter[str] = field(default_factory=Counter)
    # answers by code between the kill and the promotion's start, then until both serve again
    codes_before_promotion: Counter[str] = field(default_factory=Counter)
    codes_after_promotion: Counter[str] = field(default_factory=Counter)
    # sequences the feed's consumer had received, checked against the promoted primary's
    # table, and those naming another event there
    feed_checked: int = 0
    feed_mismatches: list[str] = field(default_factory=list)

    def render(self) -> str:
        not_serving = ", ".join(f"{n} {s:.1f} s" for n, s in sorted(self.not_serving_after.items()))
        recovery = "never" if self.recovery_seconds is None else f"{self.recovery_seconds:.2f} s"
        first = "none" if self.first_write_seconds is None else f"{self.first_write_seconds:.2f} s"
        before = ", ".join(f"{c} {n}" for c, n in self.codes_before_promotion.most_common())
        after = ", ".join(f"{c} {n}" for c, n in self.codes_after_promotion.most_common())
        flight = self.in_flight
        return (
            f"  failover {self.number}: NOT_SERVING after the kill: {not_serving or 'never'}; "
            f"first write acknowledged {first} after the promotion began, serving again "
            f"(health and a write through each) {recovery} after it; answers from the kill to the "
            f"promotion: {before or 'none'}, then until serving: {after or 'none'}; "
            f"writes in flight at the kill: acknowledged {flight['acknowledged']}, "
            f"failed {flight['failed']}, lost {flight['lost']}; acknowledged before the "
            f"kill and missing after it: {len(self.missing_after_promotion)}; feed sequences "
            f"checked on the promoted primary {self.feed_checked}, naming another event "
            f"{len(self.feed_mismatches)}"
        )


@dataclass
class FailoverReport:
    seed: int
    failovers: list[Failover] = field(default_factory=list)
    orders: int = 0
    calls: dict[str, Counter[str]] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    log_problems: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    # the feed's consumer: sequences received (each checked on the final primary), reconnects
    feed_received: int = 0
    feed_reconnects: int = 0
    log_dir: Path | None = None

    @property
    def recovery_seconds(self) -> list[float]:
        return [f.recovery_seconds for f in self.failovers if f.recovery_seconds is not None]

    @property
    def in_flight(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for failover in self.failovers:
            total.update(failover.in_flight)
        return total

    def render(self) -> str:
        recoveries = self.recovery_seconds
        flight = self.in_flight
        codes = sum(self.calls.values(), Counter[str]())
        lines = [
            f"failover chaos report (seed {self.seed}, {self.elapsed:.0f} s; "
            f"replay: CHAOS_SEED={self.seed})",
            f"  failovers: {len(self.failovers)}; orders created: {self.orders}",
            "  recovery after promotion: "
            + (
                f"min {min(recoveries):.2f} s, max {max(recoveries):.2f} s "
                f"(bound {RECOVERY_BOUND_SECONDS:.0f} s)"
                if recoveries
                else "none measured"
            ),
            f"  writes in flight at the kills: acknowledged {flight['acknowledged']}, "
            f"failed {flight['failed']}, lost {flight['lost']}",
            f"  feed: {self.feed_received} sequences received through {self.feed_reconnects} "
            "reconnects, each checked against the final primary's table",
            *(failover.render() for failover in self.failovers),
            "  operations (answers by code):",
            *render_calls(self.calls, 12),
            f"  INTERNAL or UNKNOWN answers: {codes['INTERNAL'] + codes['UNKNOWN']}",
            *render_end(self.violations, 30, self.log_problems, self.log_dir),
        ]
        return "\n".join(lines)
