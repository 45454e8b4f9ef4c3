"""What a chaos run saw, rendered as the report `make chaos` prints."""

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc

# Answers a client must expect while something is down; it retries or gives up.
TRANSIENT = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# Answers that are bugs whatever happens around them.
FORBIDDEN = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})


@dataclass
class FeedStats:
    events: int = 0
    reconnects: int = 0
    log_end: int = 0


@dataclass
class ChaosReport:
    seed: int
    seconds: float
    orders: int = 0
    # kind of call -> status code name -> how many answers
    calls: dict[str, Counter[str]] = field(default_factory=dict)
    kills: Counter[str] = field(default_factory=Counter)
    postgres_restarts: Counter[str] = field(default_factory=Counter)
    events: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    log_problems: list[str] = field(default_factory=list)
    elapsed: float = 0.0
    log_dir: Path | None = None
    # (phase, seconds it took)
    phases: list[tuple[str, float]] = field(default_factory=list)
    final_state: str = ""
    feed: FeedStats = field(default_factory=FeedStats)
    # The chain watcher: blocks reported, deposits acknowledged; and from the recorded facts,
    # the orders paid on time, late deposits, and guarded reuses of wallets.
    watcher_height: int = 0
    deposits: int = 0
    orders_paid: int = 0
    late_deposits: int = 0
    guarded_reuses: int = 0
    retracted: int = 0
    started: float = field(default_factory=time.monotonic)

    def now(self) -> str:
        return f"{time.monotonic() - self.started:7.2f}s"

    def event(self, text: str) -> None:
        self.events.append(f"{self.now()} {text}")

    def violation(self, text: str) -> None:
        recent = "; ".join(self.events[-2:]) or "no chaos yet"
        self.violations.append(f"[{self.now()}] {text} (recent chaos: {recent})")

    def count(self, kind: str, code: str) -> None:
        self.calls.setdefault(kind, Counter())[code] += 1

    def render(self) -> str:
        lines = [
            f"chaos report (seed {self.seed}, {self.seconds:.0f} s of chaos, "
            f"{self.elapsed:.0f} s in all; replay: CHAOS_SEED={self.seed})",
            f"  orders created and acknowledged: {self.orders}",
            "  phases: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.phases),
            "  operations (answers by code; watch_events: how each feed stream ended):",
        ]
        lines += render_calls(self.calls, 16)
        codes = sum(self.calls.values(), Counter[str]())
        kills = ", ".join(f"{name} {n}" for name, n in sorted(self.kills.items())) or "none"
        restarts = ", ".join(f"{how} {n}" for how, n in sorted(self.postgres_restarts.items()))
        lines += [
            f"  SIGKILLs: {kills}",
            f"  PostgreSQL restarts: {restarts or 'none'}",
            "  error codes seen: "
            + (", ".join(f"{c} {n}" for c, n in codes.most_common() if c != "OK") or "none"),
            f"  INTERNAL or UNKNOWN answers: {sum(codes[c.name] for c in FORBIDDEN)}",
            f"  event feed: {self.feed.events} events consumed, {self.feed.reconnects} "
            f"reconnects; the log ended at sequence {self.feed.log_end}",
            f"  chain watcher: {self.watcher_height} blocks scanned, {self.deposits} deposits "
            f"acknowledged, {self.retracted} retracted; {self.orders_paid} orders paid, "
            f"{self.late_deposits} late deposits, {self.guarded_reuses} wallets reused after the "
            "guard let them go",
            f"  at the end: {self.final_state or 'not reached'}",
        ]
        return "\n".join(lines + render_end(self.violations, 50, self.log_problems, self.log_dir))


def render_calls(calls: dict[str, Counter[str]], width: int) -> list[str]:
    return [
        f"    {kind:<{width}} {sum(by_code.values()):>6}  ("
        + ", ".join(f"{code} {n}" for code, n in by_code.most_common())
        + ")"
        for kind, by_code in sorted(calls.items())
    ]


def render_end(
    violations: list[str], most: int, log_problems: list[str], log_dir: Path | None
) -> list[str]:
    lines = [f"  violations: {len(violations)}", *(f"    - {v}" for v in violations[:most])]
    if len(violations) > most:
        lines.append(f"    ... and {len(violations) - most} more")
    lines.append(f"  error lines in the services' logs: {len(log_problems)}")
    lines += [f"    {summarize_log_line(line)}" for line in log_problems[:10]]
    return lines + ([f"  service logs: {log_dir}"] if log_dir else [])


def summarize_log_line(line: str) -> str:
    try:
        entry = json.loads(line)
    except ValueError:
        return line[:300]
    exception = str(entry.get("exception", "")).strip().splitlines()
    parts = [
        entry.get("time", ""),
        entry.get("service", ""),
        entry.get("event", ""),
        entry.get("method", "") or entry.get("loop", ""),
        exception[-1] if exception else "",
    ]
    return " | ".join(str(part) for part in parts if part)[:400]
