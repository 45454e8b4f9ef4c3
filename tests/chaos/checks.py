"""The checks at the end besides the invariants."""

import dataclasses
import itertools
import json

from shared.db import Connection
from tests import derived

# What a chaos run must have seen for invariants 7 and 8 to have judged something.
MINIMUM_COUNTS = {"deposits": 10, "orders paid": 3, "late deposits": 1, "guarded reuses": 1}


async def no_work_done_twice(conn: Connection) -> list[str]:
    """A wallet given to an order, a creation, a status change or an expiry done twice."""
    violations = [
        f"order {r['order_id']} was assigned a wallet {r['n']} times"
        for r in await conn.fetch(
            """SELECT order_id, count(*) AS n FROM wallet_pool.assignments
               GROUP BY order_id HAVING count(*) > 1"""
        )
    ]
    violations += [
        f"order {r['order_id']} has {r['created']} creation rows and history "
        f"{r['statuses']} by {r['actors']}"
        for r in await conn.fetch(
            """SELECT order_id, count(*) FILTER (WHERE from_status IS NULL) AS created,
                      array_agg(to_status ORDER BY id) AS statuses,
                      array_agg(actor ORDER BY id) AS actors
               FROM orders.status_history GROUP BY order_id
               HAVING count(*) FILTER (WHERE from_status IS NULL) <> 1
                   OR count(*) <> count(DISTINCT to_status)"""
        )
    ]
    violations += [
        f"order {r['order_id']} was expired {r['n']} times"
        for r in await conn.fetch(
            """SELECT order_id, count(*) AS n FROM orders.status_history
               WHERE actor = 'system' AND reason = 'expired'
               GROUP BY order_id HAVING count(*) > 1"""
        )
    ]
    return violations


async def final_state(conn: Connection) -> str:
    statuses = {
        r["status"]: r["n"]
        for r in await conn.fetch("SELECT status, count(*) AS n FROM orders.orders GROUP BY status")
    }
    expired = await conn.fetchval(
        """SELECT count(*) FROM orders.status_history
           WHERE actor = 'system' AND reason = 'expired'"""
    )
    queued = await conn.fetchval("SELECT count(*) FROM wallet_pool.queue")
    assignments = await conn.fetchval("SELECT count(*) FROM wallet_pool.assignments")
    retried = await conn.fetchrow(
        """SELECT count(*) FILTER (WHERE attempts > 1) AS n, coalesce(max(attempts), 0) AS most
           FROM orders.pending_releases"""
    )
    assert retried is not None
    orders = ", ".join(f"{status} {n}" for status, n in sorted(statuses.items()))
    return (
        f"orders {orders} ({expired} expired); {queued} waiting in the queue; "
        f"{assignments} wallet assignments; {retried['n']} releases needed more than one "
        f"attempt (at most {retried['most']})"
    )


def log_problems(text: str) -> list[str]:
    """Lines that are bugs whatever the chaos did: errors, unhandled exceptions, a loop
    step failing for another reason than an outage, a traceback outside JSON."""
    found = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            if line.strip() and not line.startswith((" ", "\t")):
                found.append(line)  # a traceback or a crash outside the JSON logger
            continue
        if entry.get("level") in ("error", "critical") or entry.get("event") in (
            "unhandled error",
            "loop step failed",
        ):
            found.append(line)
    return found


@dataclasses.dataclass(frozen=True)
class MoneyCounts:
    deposits: int
    orders_paid: int
    late_deposits: int
    guarded_reuses: int

    def shortfalls(self) -> list[str]:
        seen = {name.replace("_", " "): n for name, n in dataclasses.asdict(self).items()}
        return [
            f"only {seen[name]} {name} in the run (at least {least} expected): the invariants "
            "of deposits and reuse had too little to judge"
            for name, least in MINIMUM_COUNTS.items()
            if seen[name] < least
        ]


async def money_counts(conn: Connection) -> MoneyCounts:
    history = await derived.read_history(conn)
    _, guard = await derived.read_watermarks(conn)
    attributed = [
        derived.attribute(d, history.get(d.address, [])) for d in await derived.read_deposits(conn)
    ]
    reuses = sum(
        1
        for holdings in history.values()
        for prev, _ in itertools.pairwise(holdings)
        if guard.get(prev.network) is not None and prev.release_height is not None
    )
    return MoneyCounts(
        deposits=len(attributed),
        orders_paid=len({a.order_id for a in attributed if a.order_id and not a.late_since}),
        late_deposits=sum(1 for a in attributed if a.late_since is not None),
        guarded_reuses=reuses,
    )
