"""The invariants of the system, checked on the database both services use.

Each check returns human-readable violations (empty when the invariant holds), so a test can
report every broken one at once. The tests that use them (replicas, chaos, fuzz) run both
schemas on one database.
"""

import asyncio
import itertools
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from decimal import Decimal

import asyncpg

from shared.assets import DEFAULT_ASSETS, Asset
from shared.db import Connection
from tests import derived
from tests.invariants_api import Api, api_disagreements

LIVE = ("PENDING", "PROCESSING")
# Which statuses may follow an acknowledged one: an acknowledged update is never undone.
_AT_OR_AFTER = {
    "PENDING": {"PENDING", "PROCESSING", "COMPLETED", "CANCELLED"},
    "PROCESSING": {"PROCESSING", "COMPLETED", "CANCELLED"},
    "COMPLETED": {"COMPLETED"},
    "CANCELLED": {"CANCELLED"},
}


async def no_address_held_by_two_live_orders(conn: Connection) -> list[str]:
    """1: an address is shown to one live order at most, and the pool agrees who holds it."""
    violations = [
        f"address {r['wallet_address']} shown to {r['n']} live orders"
        for r in await conn.fetch(
            """SELECT wallet_address, count(*) AS n FROM orders.orders
               WHERE status = ANY($1) AND wallet_address IS NOT NULL
               GROUP BY wallet_address HAVING count(*) > 1""",
            list(LIVE),
        )
    ]
    violations += [
        f"live order {r['id']} shows {r['wallet_address']} but the pool gives it to "
        f"{r['holder'] or 'nobody'}"
        for r in await conn.fetch(
            """SELECT o.id, o.wallet_address, w.order_id AS holder
               FROM orders.orders o
               LEFT JOIN wallet_pool.wallets w ON w.address = o.wallet_address
               WHERE o.status = ANY($1) AND o.wallet_address IS NOT NULL
                 AND w.order_id IS DISTINCT FROM o.id""",
            list(LIVE),
        )
    ]
    return violations


async def no_final_order_holds_anything(conn: Connection) -> list[str]:
    """2: once releases have drained, no final order holds a wallet or a queue place, and
    no order the pool released does."""
    held = await conn.fetch(
        """SELECT o.id, o.status, w.address FROM orders.orders o
           JOIN wallet_pool.wallets w ON w.order_id = o.id
           WHERE o.status <> ALL($1)""",
        list(LIVE),
    )
    queued = await conn.fetch(
        """SELECT o.id, o.status FROM orders.orders o
           JOIN wallet_pool.queue q ON q.order_id = o.id
           WHERE o.status <> ALL($1)""",
        list(LIVE),
    )
    # The pool retires an order when it releases it; a retired order holds nothing either.
    retired = await conn.fetch(
        """SELECT r.order_id, w.address, q.network FROM wallet_pool.released_orders r
           LEFT JOIN wallet_pool.wallets w ON w.order_id = r.order_id
           LEFT JOIN wallet_pool.queue q ON q.order_id = r.order_id
           WHERE w.address IS NOT NULL OR q.network IS NOT NULL"""
    )
    return (
        [f"{r['status']} order {r['id']} still holds {r['address']}" for r in held]
        + [f"{r['status']} order {r['id']} still waits in the queue" for r in queued]
        + [
            f"order {r['order_id']}, released by the pool, still holds "
            f"{r['address'] or 'a place in the ' + r['network'] + ' queue'}"
            for r in retired
        ]
    )


async def every_live_order_is_served_once(conn: Connection) -> list[str]:
    """3: a live order holds exactly one wallet of its network or has one place in its
    network's queue, and the pool has not retired it (a retired order gets no wallet); and
    the pool serves no order the order service does not know."""
    rows = await conn.fetch(
        """SELECT o.id, o.network,
                  (SELECT count(*) FROM wallet_pool.wallets w
                   WHERE w.order_id = o.id AND w.network = o.network) AS wallets,
                  (SELECT count(*) FROM wallet_pool.queue q
                   WHERE q.order_id = o.id AND q.network = o.network) AS places
           FROM orders.orders o
           WHERE o.status = ANY($1)""",
        list(LIVE),
    )
    violations = [
        f"live {r['network']} order {r['id']} has {r['wallets']} wallets and "
        f"{r['places']} queue places"
        for r in rows
        if r["wallets"] + r["places"] != 1
    ]
    violations += [
        f"live order {r['id']} was released by the pool: it will never get a wallet"
        for r in await conn.fetch(
            """SELECT o.id FROM orders.orders o
               JOIN wallet_pool.released_orders r ON r.order_id = o.id
               WHERE o.status = ANY($1)""",
            list(LIVE),
        )
    ]
    violations += [
        f"the pool serves order {r['order_id']}, unknown to the order service"
        for r in await conn.fetch(
            """SELECT order_id FROM wallet_pool.wallets WHERE order_id IS NOT NULL
               UNION ALL SELECT order_id FROM wallet_pool.queue
               EXCEPT SELECT id FROM orders.orders"""
        )
    ]
    return violations


async def wallet_states_add_up(conn: Connection) -> list[str]:
    """4: every wallet is in exactly one of the states the pool reports (available, held,
    disabled, or cooling: the cooldown or the watermark guard holds it). The states are
    derived here from the raw columns and the address history (tests/derived.py), one per
    wallet by construction; what can fail is the facts they come from disagreeing (a holder
    without an open holding, or the reverse, an order holding two wallets) and, with the API
    (tests/invariants_api.py), GetPoolStats' counts and ListWallets' states disagreeing with
    them."""
    return derived.history_problems(await derived.read_facts(conn))


async def queue_blocks_add_up(conn: Connection) -> list[str]:
    """Not one of the numbered ones: the per-block waiting counts that queue places are read from
    match the queue itself."""
    return [
        f"{r['network']} block {r['block']}: {r['counted']} waiting counted, {r['actual']} wait"
        for r in await conn.fetch(
            """SELECT network, block, coalesce(b.waiting, 0) AS counted,
                      coalesce(q.actual, 0) AS actual
               FROM wallet_pool.queue_blocks b
               FULL JOIN (SELECT network, seq >> 10 AS block, count(*) AS actual
                          FROM wallet_pool.queue GROUP BY 1, 2) q USING (network, block)
               WHERE coalesce(b.waiting, 0) <> coalesce(q.actual, 0)"""
        )
    ]


async def event_log_has_no_gap(conn: Connection) -> list[str]:
    """Not one of the numbered ones: the event log's numbered events are every sequence
    after the expired head up to the last one, once each (a consumer that follows the log by
    sequence would wait forever at a gap, or skip an event numbered past the end)."""
    log = await conn.fetchrow("SELECT last_sequence, deleted_through FROM orders.event_log")
    assert log is not None
    numbered = [
        r["sequence"]
        for r in await conn.fetch(
            "SELECT sequence FROM orders.order_events WHERE sequence IS NOT NULL ORDER BY 1"
        )
    ]
    expected = list(range(log["deleted_through"] + 1, log["last_sequence"] + 1))
    if numbered == expected:
        return []
    missing = sorted(set(expected) - set(numbered))
    extra = sorted(set(numbered) - set(expected))
    return [
        f"the event log ends at {log['last_sequence']}: sequences missing {missing[:5]}, "
        f"beyond it or repeated {extra[:5]} ({len(numbered)} numbered, {len(expected)} expected)"
    ]


async def no_wallet_reused_over_a_deposit_or_before_its_watermark(conn: Connection) -> list[str]:
    """7: on a network with the guard on, no wallet went from one order to the next before the
    watcher had scanned the first one's release height plus the network's confirmations, nor
    while a deposit newer than that release was in a block the watcher had scanned (every
    deposit up to a scanned height is reported with it or before, so such a deposit held the
    wallet out). From the address history and the deposits, against the network's setting
    (not the confirmations a release stamped: a release that skipped the stamp is caught).
    Counted deposits only: dust, spam tokens and the wrong asset never hold a wallet out.
    Holds in runs where the setting does not change and no operator enables a wallet a late
    deposit held out."""
    history = await derived.read_history(conn)
    _, guard = await derived.read_watermarks(conn)
    deposits: dict[str, list[derived.DepositFacts]] = {}
    for d in await derived.read_deposits(conn):
        deposits.setdefault(d.address, []).append(d)
    violations = []
    for address, holdings in history.items():
        for prev, nxt in itertools.pairwise(holdings):
            confirmations = guard.get(prev.network)
            if confirmations is None:
                continue
            handed = f"{address} went from order {prev.order_id} to {nxt.order_id}"
            if prev.released_at is None:
                violations.append(f"{handed} while the first still held it")
                continue
            if prev.release_height is None:
                violations.append(f"{handed} before any report after the release")
            elif nxt.scanned_height is None or (
                nxt.scanned_height < prev.release_height + confirmations
            ):
                violations.append(
                    f"{handed} at scanned height {nxt.scanned_height}, before its watermark "
                    f"{prev.release_height + confirmations}"
                )
            seen = [
                d.txid
                for d in deposits.get(address, [])
                if d.network == prev.network
                and d.disposition == "COUNTED"
                and d.block_time >= prev.released_at
                and nxt.scanned_height is not None
                and d.block_height <= nxt.scanned_height
            ]
            if seen:
                violations.append(
                    f"{handed} although deposit {seen[0]}, newer than the release, was in a "
                    "scanned block"
                )
    return violations


async def deposits_are_recorded_once_and_attributed(
    conn: Connection, reported: Mapping[tuple[str, str, int], tuple[str, Decimal]]
) -> list[str]:
    """8: every deposit a watcher had acknowledged (key (network, txid, index) -> (address,
    amount)) is recorded once, as reported, and attributed as the address history says
    (tests/derived.py: its block time against the holding intervals, in Python). The order
    service shows each attributed deposit of its orders once, as recorded (late as the pool
    says: the pool is the one judge), with one DEPOSIT_RECEIVED event."""
    recorded = {d.key: d for d in await derived.read_deposits(conn)}
    violations = [
        f"deposit {key} was acknowledged but is not recorded"
        for key in sorted(set(reported) - set(recorded))
    ]
    for key, (address, amount) in reported.items():
        row = recorded.get(key)
        if row is not None and (row.address, row.amount) != (address, amount):
            violations.append(
                f"deposit {key} is recorded as {row.amount} to {row.address}, "
                f"reported as {amount} to {address}"
            )
    violations += derived.attribution_problems(recorded.values(), await derived.read_history(conn))
    return violations + await _deposits_shown_once(conn, list(recorded.values()))


async def _deposits_shown_once(conn: Connection, pool: list[derived.DepositFacts]) -> list[str]:
    known = {r["id"] for r in await conn.fetch("SELECT id FROM orders.orders")}
    copies: dict[int, list[tuple[object, ...]]] = {}
    for r in await conn.fetch(
        """SELECT pool_id, order_id, txid, output_index, amount, address, block_height,
                  block_time, late FROM orders.deposits"""
    ):
        copies.setdefault(r["pool_id"], []).append(tuple(r.values())[1:])
    events = Counter(
        r["deposit_id"]
        for r in await conn.fetch(
            "SELECT deposit_id FROM orders.order_events WHERE type = 'DEPOSIT_RECEIVED'"
        )
    )
    violations = []
    for d in pool:
        if d.order_id not in known:
            if d.id in copies:
                violations.append(f"deposit {d.id} of no known order is shown on an order")
            continue
        late = d.released_at is not None
        expected = [
            (d.order_id, d.txid, d.output_index, d.amount, d.address, d.block_height,
             d.block_time, late)
        ]  # fmt: skip
        shown = copies.get(d.id, [])
        if shown != expected or events[d.id] != 1:
            violations.append(
                f"deposit {d.id} of order {d.order_id} is shown as {shown} with {events[d.id]} "
                f"events, recorded as {expected}"
            )
    return violations


async def unshown_deposits(conn: Connection) -> int:
    """Attributed deposits of known orders the order service has not copied yet."""
    count: int = await conn.fetchval(
        """SELECT count(*) FROM wallet_pool.deposits d
           WHERE d.order_id IN (SELECT id FROM orders.orders)
             AND NOT EXISTS (SELECT 1 FROM orders.deposits o WHERE o.pool_id = d.id)"""
    )
    return count


async def unsynced_lateness(conn: Connection) -> int:
    """Copied deposits the pool has judged late since (a release received after them) whose
    copy is not late yet."""
    count: int = await conn.fetchval(
        """SELECT count(*) FROM wallet_pool.deposits d
           JOIN orders.deposits o ON o.pool_id = d.id
           WHERE o.late IS DISTINCT FROM (d.released_at IS NOT NULL)"""
    )
    return count


async def unsynced_deposit_changes(conn: Connection) -> int:
    """Copied deposits whose status or confirmations the order service has not yet
    taken from the pool (it takes them with the payment status they make, in one
    transaction), and final orders whose payment still waits for their release's deposit
    changes: once none is left, each order's payment has settled. A disposition never changes
    once recorded: a copy that differs is a violation (checked after), not a change in
    flight."""
    count: int = await conn.fetchval(
        """SELECT (SELECT count(*) FROM wallet_pool.deposits d
                   JOIN orders.deposits o ON o.pool_id = d.id
                   WHERE (o.status, o.confirmations) IS DISTINCT FROM (d.status, d.confirmations))
                + (SELECT count(*) FROM orders.release_settling)"""
    )
    return count


async def acknowledged_updates_are_recorded(
    conn: Connection, acknowledged: Mapping[uuid.UUID, str]
) -> list[str]:
    """5: every status the service acknowledged is in the database (or a later one), with
    its history row, and a final one with the release it owes (delivered or not).
    `acknowledged`: order id -> the last status acknowledged for it."""
    rows = await conn.fetch(
        """SELECT o.id, o.status,
                  array(SELECT to_status FROM orders.status_history h
                        WHERE h.order_id = o.id) AS history,
                  EXISTS (SELECT 1 FROM orders.pending_releases p
                          WHERE p.order_id = o.id) AS owes_release
           FROM orders.orders o WHERE o.id = ANY($1)""",
        list(acknowledged),
    )
    found = {r["id"]: r for r in rows}
    violations = []
    for order_id, status in acknowledged.items():
        row = found.get(order_id)
        if row is None:
            violations.append(f"acknowledged order {order_id} is not in the database")
            continue
        if row["status"] not in _AT_OR_AFTER[status]:
            violations.append(f"order {order_id} acknowledged {status}, stored {row['status']}")
        if status not in row["history"]:
            violations.append(f"order {order_id} acknowledged {status} without a history row")
        if status in ("COMPLETED", "CANCELLED") and not row["owes_release"]:
            violations.append(f"order {order_id} acknowledged {status} without its release")
        if len(row["history"]) != len(set(row["history"])):
            violations.append(f"order {order_id} has duplicate history rows: {row['history']}")
    return violations


async def undelivered_releases(conn: Connection) -> int:
    """Orders owing a release: by wallet_release (the record), or by the delivery time the
    previous release reads (kept by a compatibility trigger), which must agree."""
    count: int = await conn.fetchval(
        """SELECT count(*) FROM orders.orders o
           WHERE o.wallet_release = 'PENDING'
              OR EXISTS (SELECT 1 FROM orders.pending_releases p
                         WHERE p.order_id = o.id AND p.release_time IS NULL)"""
    )
    return count


async def releases_drain(conn: Connection, within_seconds: float) -> list[str]:
    """6: pending releases drain to zero within a bounded time."""
    deadline = time.monotonic() + within_seconds
    while (left := await undelivered_releases(conn)) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return [f"{left} releases still pending after {within_seconds} s"] if left else []


async def settled_allocations(conn: Connection) -> int:
    """Live orders whose copy of the pool's answer is not yet what the pool holds for them,
    or that the pool has not served yet (the allocation sync has not caught up)."""
    count: int = await conn.fetchval(
        """SELECT count(*) FROM orders.orders o
           LEFT JOIN wallet_pool.wallets w ON w.order_id = o.id
           WHERE o.status = ANY($1)
             AND (o.wallet_address IS DISTINCT FROM w.address
                  OR (w.address IS NULL AND NOT EXISTS (
                      SELECT 1 FROM wallet_pool.queue q WHERE q.order_id = o.id)))""",
        list(LIVE),
    )
    return count


async def check_all(
    pool: asyncpg.Pool,
    acknowledged: Mapping[uuid.UUID, str] | None = None,
    *,
    settle_seconds: float = 20.0,
    deposits: Mapping[tuple[str, str, int], tuple[str, Decimal]] | None = None,
    api: Api | None = None,
    payments: bool = False,
) -> list[str]:
    """Waits (bounded) for releases to drain, allocations to settle and deposits to reach the
    order service, then checks them all (`deposits`: those a watcher had acknowledged).
    Invariant 1 is also checked before waiting: it must hold at every moment. With `api`,
    what the services answer is compared with the facts too (tests/invariants_api.py). With
    `payments`, issue 20's too (dispositions, payment status), after the deposits' changes
    have reached the order service; opt-in: a stack with assets of its own, or an order
    service of the previous release (no payment status), would fail them for that."""
    async with pool.acquire() as conn:
        violations = await no_address_held_by_two_live_orders(conn)
        violations += await releases_drain(conn, settle_seconds)
        deadline = time.monotonic() + settle_seconds
        while (
            await settled_allocations(conn)
            or await unshown_deposits(conn)
            or await unsynced_lateness(conn)
            or (payments and await unsynced_deposit_changes(conn))
        ) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            violations += await no_address_held_by_two_live_orders(conn)
            violations += await no_final_order_holds_anything(conn)
            violations += await every_live_order_is_served_once(conn)
            violations += await wallet_states_add_up(conn)
            violations += await queue_blocks_add_up(conn)
            violations += await event_log_has_no_gap(conn)
            violations += await acknowledged_updates_are_recorded(conn, acknowledged or {})
            violations += await no_wallet_reused_over_a_deposit_or_before_its_watermark(conn)
            violations += await deposits_are_recorded_once_and_attributed(conn, deposits or {})
            if payments:
                violations += await (
                    deposits_have_one_disposition_and_only_counted_ones_hold_or_count(conn)
                )
                violations += await payment_status_is_the_function_of_the_recorded_deposits(conn)
    if api is not None:
        violations += [f"API: {v}" for v in await api_disagreements(pool, api)]
    return violations


async def deposits_have_one_disposition_and_only_counted_ones_hold_or_count(
    conn: Connection, assets: Iterable[Asset] = DEFAULT_ASSETS
) -> list[str]:
    """Issue 20, A1/B5 (self-contained, to merge beside the checks above): every deposit has
    exactly one disposition, the one its asset, amount and holder give (recomputed here from
    the assets and the orders' expected assets, not by the pool's code); no dust, spam-token
    or wrong-asset deposit disabled a wallet; the order service's copy says the same.
    `assets`: the pool's assets (default: the built-in ones)."""
    by_contract = {(a.network, a.contract or ""): a for a in assets}
    rows = await conn.fetch(
        """SELECT d.id, d.network, d.txid, d.kind, d.output_index, d.token_contract,
                  d.asset, d.disposition, d.amount, d.order_id,
                  coalesce((SELECT o.asset FROM wallet_pool.order_assets o
                            WHERE o.order_id = d.order_id), '') AS expected
           FROM wallet_pool.deposits d"""
    )
    violations = []
    for r in rows:
        known = by_contract.get((r["network"], r["token_contract"] or ""))
        if known is None:
            should = "UNKNOWN_ASSET"
        elif r["amount"] < known.min_deposit:
            should = "DUST"
        elif r["order_id"] is not None and r["expected"] != known.code:
            should = "WRONG_ASSET"
        else:
            should = "COUNTED"
        asset = known.code if known is not None else None
        if (r["disposition"], r["asset"]) != (should, asset):
            violations.append(
                f"deposit {r['id']} ({r['network']} {r['txid']}:{r['kind']}:"
                f"{r['output_index']}) is {r['disposition']} of asset {r['asset']!r}; "
                f"its asset, amount and holder make it {should} of {asset!r}"
            )
    held = await conn.fetch(
        """SELECT w.address, d.id, d.disposition
           FROM wallet_pool.wallets w
           JOIN wallet_pool.deposits d ON d.address = w.address
            AND w.disabled_reason LIKE '%late deposit ' || d.txid || ':' || d.output_index
                                       || ' of %'
           WHERE w.disabled_at IS NOT NULL AND d.disposition <> 'COUNTED'"""
    )
    violations += [
        f"wallet {r['address']} was disabled by deposit {r['id']}, which is {r['disposition']}"
        for r in held
    ]
    copies = await conn.fetch(
        """SELECT d.id, d.disposition, o.disposition AS shown
           FROM wallet_pool.deposits d JOIN orders.deposits o ON o.pool_id = d.id
           WHERE o.disposition <> d.disposition"""
    )
    violations += [
        f"deposit {r['id']} is {r['disposition']} in the pool but {r['shown']} on its order"
        for r in copies
    ]
    return violations


async def payment_status_is_the_function_of_the_recorded_deposits(conn: Connection) -> list[str]:
    """Issue 20, C1/C4/B3 (self-contained): each order's payment status and amounts are what
    its counted, on-time, confirmed (never reverted) deposits of its asset give against its
    amount and its tolerance snapshot (the rule written again here, not imported), and its
    events announce each change once: never a change to the status it had."""
    rows = await conn.fetch(
        """SELECT o.id, o.amount, o.payment_status, o.received_confirmed, o.received_pending,
                  o.tolerance_under_pct, o.tolerance_under_abs, o.tolerance_over_pct,
                  o.tolerance_over_abs,
                  coalesce(sum(d.amount) FILTER (WHERE d.status = 'CONFIRMED'), 0)
                      AS confirmed,
                  coalesce(sum(d.amount) FILTER (WHERE d.status = 'CONFIRMING'), 0) AS pending
           FROM orders.orders o
           LEFT JOIN orders.deposits d
             ON d.order_id = o.id AND d.disposition = 'COUNTED' AND NOT d.late
            AND d.asset IS NOT DISTINCT FROM o.asset
           GROUP BY o.id"""
    )
    violations = []
    for r in rows:
        expected, confirmed = r["amount"], r["confirmed"]
        under = max(r["tolerance_under_pct"] * expected / 100, r["tolerance_under_abs"])
        over = max(r["tolerance_over_pct"] * expected / 100, r["tolerance_over_abs"])
        if confirmed - expected > over:
            status = "OVERPAID"
        elif confirmed > 0 and expected - confirmed <= under:
            status = "PAID"
        elif confirmed > 0:
            status = "PARTIAL"
        else:
            status = "UNPAID"
        stored = (r["payment_status"], r["received_confirmed"], r["received_pending"])
        if stored != (status, confirmed, r["pending"]):
            violations.append(
                f"order {r['id']} shows payment {stored}; its deposits give "
                f"{(status, confirmed, r['pending'])}"
            )
    repeated = await conn.fetch(
        """SELECT order_id, sequence, payment_status FROM orders.order_events
           WHERE type = 'PAYMENT_STATUS_CHANGED'
             AND payment_status IS NOT DISTINCT FROM from_payment_status"""
    )
    violations += [
        f"order {r['order_id']}: event {r['sequence']} announces {r['payment_status']} again"
        for r in repeated
    ]
    return violations
