"""What the invariants expect, derived in Python from the raw facts the services record: the
wallets' columns, the address history (assignments), the watcher's progress and the deposits'
block times. Nothing here reads a view, a generated column or a function of the services, nor
restates their SQL: when a rule of theirs is wrong, the two routes disagree and an invariant
says so (tests/invariants.py, tests/invariants_api.py).
"""

import enum
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from shared.db import Connection


class State(enum.StrEnum):
    """The states the pool reports (GetPoolStats, ListWallets)."""

    AVAILABLE = "AVAILABLE"
    ALLOCATED = "ALLOCATED"
    DISABLED = "DISABLED"
    COOLING = "COOLING"


@dataclass(frozen=True)
class Holding:
    """One row of the address history: who held the address, from when to when, and the
    watermark facts its release was stamped with."""

    id: int
    address: str
    network: str
    order_id: uuid.UUID
    assigned_at: datetime
    released_at: datetime | None
    scanned_height: int | None
    release_height: int | None


@dataclass(frozen=True)
class WalletFacts:
    address: str
    network: str
    order_id: uuid.UUID | None
    allocated_at: datetime | None
    disabled: bool
    cooldown_until: datetime | None
    # The guard's confirmations stamped at the last release (None: released unguarded, or
    # never released).
    reuse_confirmations: int | None


@dataclass(frozen=True)
class WalletView:
    """A wallet's state as derived here; `held_by_watermark` for a cooling one the guard
    holds back (it may cool down too)."""

    address: str
    network: str
    state: State
    held_by_watermark: bool


@dataclass(frozen=True)
class Facts:
    """One consistent read of the raw facts (one snapshot), with the database's clock."""

    now: datetime
    wallets: list[WalletFacts]
    history: dict[str, list[Holding]]
    scanned: dict[str, int | None]
    guard: dict[str, int | None]


async def read_facts(conn: Connection) -> Facts:
    """The raw facts, read with plain SELECTs of stored columns (call it inside one
    repeatable-read transaction for a consistent view)."""
    now = await conn.fetchval("SELECT now()")
    wallets = [
        WalletFacts(
            r["address"],
            r["network"],
            r["order_id"],
            r["allocated_at"],
            r["disabled_at"] is not None,
            r["cooldown_until"],
            r["reuse_confirmations"],
        )
        for r in await conn.fetch(
            """SELECT address, network, order_id, allocated_at, disabled_at, cooldown_until,
                      reuse_confirmations
               FROM wallet_pool.wallets"""
        )
    ]
    return Facts(now, wallets, await read_history(conn), *await read_watermarks(conn))


async def read_history(conn: Connection) -> dict[str, list[Holding]]:
    """Every address's holders, oldest first (by when they got it)."""
    history: dict[str, list[Holding]] = defaultdict(list)
    for r in await conn.fetch(
        """SELECT id, address, network, order_id, assigned_at, released_at, scanned_height,
                  release_height
           FROM wallet_pool.assignments"""
    ):
        history[r["address"]].append(Holding(**dict(r)))
    for holdings in history.values():
        holdings.sort(key=lambda h: (h.assigned_at, h.id))
    return dict(history)


async def read_watermarks(
    conn: Connection,
) -> tuple[dict[str, int | None], dict[str, int | None]]:
    """Per network: the height its watcher scanned, and the guard's setting (None: off)."""
    rows = await conn.fetch(
        "SELECT network, scanned_height, reuse_confirmations FROM wallet_pool.chain_watermarks"
    )
    return (
        {r["network"]: r["scanned_height"] for r in rows},
        {r["network"]: r["reuse_confirmations"] for r in rows},
    )


def guard_holds(wallet: WalletFacts, last: Holding | None, scanned: int | None) -> bool:
    """Whether the watermark guard keeps a free wallet out: it was released under the guard,
    and the watcher has not reported since (the release's height is unknown) or has not
    scanned the release's height plus the confirmations."""
    if wallet.reuse_confirmations is None or last is None or last.released_at is None:
        return False
    if last.release_height is None or scanned is None:
        return True
    return scanned < last.release_height + wallet.reuse_confirmations


def wallet_view(wallet: WalletFacts, last: Holding | None, facts: Facts) -> WalletView:
    """A held wallet is ALLOCATED; a free one DISABLED when disabled, COOLING while its
    cooldown lasts or the guard holds it, else AVAILABLE."""
    held = False
    if wallet.order_id is not None:
        state = State.ALLOCATED
    elif wallet.disabled:
        state = State.DISABLED
    else:
        held = guard_holds(wallet, last, facts.scanned.get(wallet.network))
        cooling = wallet.cooldown_until is not None and wallet.cooldown_until > facts.now
        state = State.COOLING if cooling or held else State.AVAILABLE
    return WalletView(wallet.address, wallet.network, state, held)


def wallet_views(facts: Facts) -> dict[str, WalletView]:
    views = {}
    for wallet in facts.wallets:
        holdings = facts.history.get(wallet.address, [])
        views[wallet.address] = wallet_view(wallet, holdings[-1] if holdings else None, facts)
    return views


def counts_by_network(views: Iterable[WalletView]) -> dict[str, Counter[str]]:
    """Per network: total, one count per state, and held_by_watermark."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for view in views:
        counts[view.network]["total"] += 1
        counts[view.network][view.state.value] += 1
        counts[view.network]["held_by_watermark"] += view.held_by_watermark
    return dict(counts)


def history_problems(facts: Facts) -> list[str]:
    """The wallets' holder columns agree with the address history: a held wallet has one
    open holding, by its holder; a free one none; no order holds two wallets."""
    problems = []
    holders: Counter[uuid.UUID] = Counter()
    for wallet in facts.wallets:
        open_holders = [
            h.order_id for h in facts.history.get(wallet.address, []) if h.released_at is None
        ]
        expected = [wallet.order_id] if wallet.order_id is not None else []
        if open_holders != expected:
            problems.append(
                f"wallet {wallet.address} is held by {wallet.order_id or 'nobody'}, its history "
                f"has open holdings by {open_holders}"
            )
        if (wallet.order_id is None) != (wallet.allocated_at is None):
            problems.append(f"wallet {wallet.address} has a holder xor an allocation time")
        if wallet.order_id is not None:
            holders[wallet.order_id] += 1
    problems += [f"order {o} holds {n} wallets" for o, n in holders.items() if n > 1]
    return problems


# -- attribution ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DepositFacts:
    id: int
    network: str
    txid: str
    output_index: int
    address: str
    amount: Decimal
    block_height: int
    block_time: datetime
    reported_at: datetime
    # As the pool recorded it:
    order_id: uuid.UUID | None
    released_at: datetime | None
    # COUNTED, DUST, UNKNOWN_ASSET or WRONG_ASSET (only counted ones hold a wallet out).
    disposition: str = "COUNTED"

    @property
    def key(self) -> tuple[str, str, int]:
        return self.network, self.txid, self.output_index


@dataclass(frozen=True)
class Attributed:
    """Whom a deposit belongs to: the order (None: unattributed) and, for a late one, the
    end of that order's holding."""

    order_id: uuid.UUID | None
    late_since: datetime | None = None


async def read_deposits(conn: Connection) -> list[DepositFacts]:
    return [
        DepositFacts(**dict(r))
        for r in await conn.fetch(
            """SELECT id, network, txid, output_index, address, amount, block_height,
                      block_time, reported_at, order_id, released_at, disposition
               FROM wallet_pool.deposits"""
        )
    ]


def attribute(deposit: DepositFacts, holdings: list[Holding]) -> Attributed:
    """README's rule, from the address history: the order whose holding interval
    [assigned, released) the block time falls in; else the last order whose holding ended
    at or before it, late (unless the deposit was recorded before that holding ended: a
    block time ahead of the clock, paid while the order was live); else nobody."""
    at = deposit.block_time
    mine = [h for h in holdings if h.network == deposit.network]
    during = [
        h for h in mine if h.assigned_at <= at and (h.released_at is None or at < h.released_at)
    ]
    if during:
        return Attributed(during[-1].order_id)
    # The last holder before it (a holding can end before it began: an order that expired
    # while the pool handed it a wallet ends at its final time).
    ended = [h for h in mine if h.assigned_at <= at and h.released_at is not None]
    if not ended:
        return Attributed(None)
    last = ended[-1]
    assert last.released_at is not None
    if deposit.reported_at < last.released_at:
        return Attributed(last.order_id)
    return Attributed(last.order_id, last.released_at)


def attribution_problems(
    deposits: Iterable[DepositFacts], history: Mapping[str, list[Holding]]
) -> list[str]:
    problems = []
    for d in deposits:
        expected = attribute(d, history.get(d.address, []))
        recorded = Attributed(d.order_id, d.released_at)
        if recorded != expected:
            problems.append(
                f"deposit {d.key} at {d.block_time.isoformat()} is attributed to "
                f"{_attribution(recorded)}, the address history says {_attribution(expected)}"
            )
    return problems


def _attribution(a: Attributed) -> str:
    if a.order_id is None:
        return "nobody"
    return (
        f"{a.order_id} (late since {a.late_since.isoformat()})" if a.late_since else str(a.order_id)
    )
