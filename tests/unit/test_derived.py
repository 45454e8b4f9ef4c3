"""The rules tests/derived.py applies to the raw facts: a wallet's state (the guard's hold is
COOLING) and a deposit's attribution from the address history, at their boundaries."""

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from tests.derived import (
    Attributed,
    DepositFacts,
    Facts,
    Holding,
    State,
    WalletFacts,
    attribute,
    counts_by_network,
    wallet_views,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
A, B = uuid.uuid4(), uuid.uuid4()


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def holding(
    order: uuid.UUID, start: float, end: float | None, release_height: int | None = None
) -> Holding:
    return Holding(
        id=int(start),
        address="0xa",
        network="ETH",
        order_id=order,
        assigned_at=at(start),
        released_at=None if end is None else at(end),
        scanned_height=None,
        release_height=release_height,
    )


def wallet(**changes: object) -> WalletFacts:
    fields: dict[str, object] = {
        "address": "0xa",
        "network": "ETH",
        "order_id": None,
        "allocated_at": None,
        "disabled": False,
        "cooldown_until": None,
        "reuse_confirmations": None,
    }
    return WalletFacts(**{**fields, **changes})  # type: ignore[arg-type]


def state_of(w: WalletFacts, history: list[Holding], scanned: int | None, now: float = 100) -> str:
    facts = Facts(at(now), [w], {"0xa": history}, {"ETH": scanned}, {"ETH": 3})
    [view] = wallet_views(facts).values()
    return view.state.value + (" held" if view.held_by_watermark else "")


def test_a_wallet_the_guard_holds_is_cooling_until_the_watcher_scans_past_its_release() -> None:
    released = wallet(reuse_confirmations=3)
    assert state_of(released, [holding(A, 0, 10)], 200) == "COOLING held"  # no report since
    assert state_of(released, [holding(A, 0, 10, 100)], 102) == "COOLING held"
    assert state_of(released, [holding(A, 0, 10, 100)], 103) == "AVAILABLE"
    assert state_of(released, [holding(A, 0, 10, 100)], None) == "COOLING held"
    assert state_of(wallet(), [holding(A, 0, 10)], None) == "AVAILABLE"  # released unguarded


def test_held_disabled_and_cooling_down_come_before_the_guard() -> None:
    guarded = [holding(A, 0, 10)]
    assert state_of(wallet(order_id=B, allocated_at=at(20)), guarded, None) == "ALLOCATED"
    assert state_of(wallet(disabled=True, reuse_confirmations=3), guarded, None) == "DISABLED"
    cooling = wallet(cooldown_until=at(101))
    assert state_of(cooling, guarded, None) == "COOLING"
    assert state_of(cooling, guarded, None, now=101) == "AVAILABLE"


def test_the_counts_per_network_add_the_guards_hold_to_cooling() -> None:
    facts = Facts(
        at(100),
        [wallet(reuse_confirmations=3), wallet(address="0xb")],
        {"0xa": [holding(A, 0, 10)]},
        {"ETH": 5},
        {"ETH": 3},
    )
    counts = counts_by_network(wallet_views(facts).values())["ETH"]
    assert counts == {"total": 2, State.COOLING: 1, State.AVAILABLE: 1, "held_by_watermark": 1}


def deposit(seconds: float, reported: float | None = None) -> DepositFacts:
    return DepositFacts(
        id=1,
        network="ETH",
        txid="0x1",
        output_index=0,
        address="0xa",
        amount=Decimal(1),
        block_height=1,
        block_time=at(seconds),
        reported_at=at(seconds if reported is None else reported),
        order_id=None,
        released_at=None,
    )


def test_a_deposit_belongs_to_the_holding_its_block_time_falls_in_released_bound_excluded() -> None:
    history = [holding(A, 0, 10), holding(B, 20, None)]
    assert attribute(deposit(-1), history) == Attributed(None)
    assert attribute(deposit(0), history) == Attributed(A)
    assert attribute(deposit(9.999), history) == Attributed(A)
    assert attribute(deposit(10), history) == Attributed(A, at(10))  # late from the release on
    assert attribute(deposit(19), history) == Attributed(A, at(10))
    assert attribute(deposit(20), history) == Attributed(B)
    assert attribute(deposit(99), history) == Attributed(B)


def test_a_deposit_recorded_before_the_holding_ended_stays_on_time() -> None:
    # Its block time ran ahead of the clock: paid while the order was live.
    assert attribute(deposit(12, reported=9), [holding(A, 0, 10)]) == Attributed(A)


def test_a_holding_that_ended_before_it_began_makes_later_deposits_late_to_that_order() -> None:
    # An order that expired while the pool handed it a wallet: its release carries its
    # final time, before the hand-off.
    history = [holding(A, 0, 10), holding(B, 20, 15)]
    assert attribute(deposit(25), history) == Attributed(B, at(15))
    assert attribute(deposit(17), history) == Attributed(A, at(10))
