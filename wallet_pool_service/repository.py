"""The pool's repositories: PostgreSQL adapters of wallets and the queue (SQL only).

Adapters are bound to one connection, so a use case runs them inside its own transaction.
"""

import functools
import json
import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from shared.assets import Asset
from shared.db import Connection
from shared.sql import load_queries
from wallet_pool_service.deposits import (
    ClassifiedDeposit,
    Deposit,
    DepositConflict,
    DepositRecordedDifferently,
    Disposition,
    ReportOutcome,
    Retraction,
    ScannedHeightBackwards,
    Watermark,
)
from wallet_pool_service.domain import (
    Assignment,
    ClaimAttempt,
    HeldWallet,
    OrderPlace,
    ReleasedOrder,
    Wallet,
    WalletCounts,
    WalletState,
)


@functools.cache
def queries() -> dict[str, str]:
    return load_queries("wallet_pool_service")


def _place(row: asyncpg.Record) -> OrderPlace:
    return OrderPlace(
        released=row["released"],
        held=HeldWallet(row["address"], row["wallet_network"]) if row["address"] else None,
        waiting=(row["queue_network"], row["position"]) if row["queue_network"] else None,
    )


class PostgresWalletAdapter:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._q = queries()

    async def allocate(self, order_id: uuid.UUID, network: str, asset: str = "") -> ClaimAttempt:
        """Under the order's lock, in one round trip: what the order has, or when it has
        nothing, a wallet of `network` claimed for it, or else a place at the back of the
        network's queue; with the order's place after that. The order's `asset` ('' the
        coin) is remembered from its first call."""
        row = await self._conn.fetchrow(self._q["allocate_wallet"], order_id, network, asset)
        assert row is not None, "allocate_wallet always returns one row"
        claimed = row["address"] if row["claimed"] else None
        return ClaimAttempt(place=_place(row), claimed=claimed, enqueued=row["enqueued"])

    async def mark_as_available(
        self,
        order_id: uuid.UUID,
        address: str,
        cooldown_seconds: float,
        final_time: datetime | None = None,
    ) -> ReleasedOrder:
        """Retire `order_id` (it is never given a wallet again) and free the wallet it holds
        (only `address`, unless it is empty), which cools down for `cooldown_seconds` before
        it can be given out again; if an order waits in the network, it gets a free wallet
        in the same transaction. The order leaves its queue if it was waiting. A non-empty
        `address` the order does not hold changes nothing (see ReleasedOrder). The holding
        ends at `final_time` (when the order became final; None: now) for attribution."""
        row = await self._conn.fetchrow(
            self._q["release_wallet"], order_id, address, cooldown_seconds, final_time
        )
        assert row is not None, "release_wallet always returns one row"
        freed = HeldWallet(row["address"], row["network"]) if row["address"] else None
        handed = (row["handed_to"], row["handed_address"]) if row["handed_to"] else None
        return ReleasedOrder(
            freed,
            row["dequeued"],
            handed,
            row["kept_address"],
            row["kept_queue"],
            row["deposit_change"],
        )

    async def add(self, network: str, addresses: list[str]) -> list[str]:
        rows = await self._conn.fetch(self._q["insert_wallets"], network, addresses)
        return [row["address"] for row in rows]

    async def count(self, network: str) -> int:
        total: int = await self._conn.fetchval(self._q["count_wallets"], network)
        return total

    async def counts(self, network: str) -> dict[str, WalletCounts]:
        """Wallets by state per network; `network` empty means all."""
        rows = await self._conn.fetch(self._q["wallet_counts"], network)
        return {
            r["network"]: WalletCounts(
                r["total"],
                r["available"],
                r["allocated"],
                r["disabled"],
                r["cooling"],
                r["held_by_watermark"],
            )
            for r in rows
        }

    async def get(self, address: str) -> Wallet | None:
        row = await self._conn.fetchrow(self._q["get_wallet"], address)
        return Wallet.from_row(row) if row else None

    async def set_disabled(self, address: str, reason: str | None) -> Wallet | None:
        """Disable with `reason`, or enable with None."""
        row = await self._conn.fetchrow(self._q["set_disabled"], address, reason)
        return Wallet.from_row(row) if row else None

    async def page(
        self, network: str, state: WalletState | None, after_id: int, limit: int
    ) -> list[tuple[int, Wallet]]:
        rows = await self._conn.fetch(
            self._q["list_wallets"], network, state.value if state else "", after_id, limit
        )
        return [(row["id"], Wallet.from_row(row)) for row in rows]

    async def history(self, address: str) -> list[Assignment]:
        rows = await self._conn.fetch(self._q["wallet_history"], address)
        return [
            Assignment(r["order_id"], r["network"], r["assigned_at"], r["released_at"])
            for r in rows
        ]

    async def configure_reuse_guard(self, confirmations: dict[str, int | None]) -> None:
        """The guard's confirmations per network (None: off), as the database enforces it."""
        await self._conn.execute(
            self._q["configure_reuse_guard"], list(confirmations), list(confirmations.values())
        )

    async def configure_assets(self, assets: tuple[Asset, ...]) -> None:
        """At start-up: the assets in force; others stay (deposits refer to them), disabled."""
        await self._conn.execute(
            self._q["configure_assets"],
            [a.network for a in assets],
            [a.code for a in assets],
            [a.symbol for a in assets],
            [a.contract for a in assets],
            [a.decimals for a in assets],
            [a.min_deposit for a in assets],
            [a.confirmations for a in assets],
        )

    async def watermarks(self, network: str) -> dict[str, Watermark]:
        rows = await self._conn.fetch(self._q["watermarks"], network)
        return {
            r["network"]: Watermark(
                r["network"], r["reuse_confirmations"], r["scanned_height"], r["reported_at"]
            )
            for r in rows
        }

    async def report_deposits(
        self,
        network: str,
        deposits: list[ClassifiedDeposit],
        scanned_height: int,
        chain_height: int,
        retractions: Sequence[Retraction] = (),
        finalized_height: int = 0,
    ) -> ReportOutcome:
        """Record a watcher's report in one round trip (see the SQL function); refused as a
        whole when its height goes back or a deposit was recorded differently before."""
        chain = [d.chain for d in deposits]
        rows = await self._conn.fetch(
            self._q["report_deposits"],
            network,
            scanned_height,
            chain_height,
            [d.address for d in chain],
            [d.txid for d in chain],
            [d.kind.value for d in chain],
            [d.index for d in chain],
            [d.token_contract for d in chain],
            [d.asset for d in deposits],
            [d.disposition.value if d.disposition else None for d in deposits],
            [d.amount for d in chain],
            [d.block_height for d in chain],
            [d.block_time for d in chain],
            [d.confirmations for d in chain],
            [d.required_confirmations for d in deposits],
            [d.block_hash for d in chain],
            finalized_height,
            [r.txid for r in retractions],
            [r.kind.value for r in retractions],
            [r.index for r in retractions],
            [r.reason.value for r in retractions],
        )
        first = rows[0]
        if first["outcome"] == "backwards":
            raise ScannedHeightBackwards(network, scanned_height, first["scanned_height"])
        if first["outcome"] == "conflict":
            conflict = DepositConflict(
                first["position"] - 1,
                first["known_address"],
                first["known_amount"],
                first["known_contract"],
            )
            raise DepositRecordedDifferently(network, chain, conflict)
        tally = first["tally"]
        if isinstance(tally, str):
            tally = json.loads(tally)
        return ReportOutcome(
            recorded=first["recorded"],
            repeated=len(deposits) - first["recorded"],
            late=first["late"],
            unattributed=first["unattributed"],
            scanned_height=first["scanned_height"],
            dispositions={
                Disposition.COUNTED: first["counted"],
                Disposition.DUST: first["dust"],
                Disposition.UNKNOWN_ASSET: first["unknown_asset"],
                Disposition.WRONG_ASSET: first["wrong_asset"],
            },
            tally={
                (key.partition(":")[0], key.partition(":")[2]): count
                for key, count in tally.items()
            },
            updated=first["updated"],
            reverted=first["reverted"],
            finality_violations=first["finality_violations"],
        )

    async def deposit_changes(self, after_change: int, limit: int) -> list[Deposit]:
        rows = await self._conn.fetch(self._q["deposit_changes"], after_change, limit)
        return [Deposit.from_row(r) for r in rows]

    async def deposits_after(self, after_id: int, limit: int) -> list[Deposit]:
        rows = await self._conn.fetch(self._q["deposits_after"], after_id, limit)
        return [Deposit.from_row(r) for r in rows]

    async def late_deposits(self, network: str, after_id: int, limit: int) -> list[Deposit]:
        rows = await self._conn.fetch(self._q["late_deposits"], network, after_id, limit)
        return [Deposit.from_row(r) for r in rows]


class PostgresQueueAdapter:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._q = queries()

    async def hand_off_waiting(self, network: str) -> tuple[uuid.UUID, str] | None:
        """A free wallet of `network` to its oldest waiting order, after any order joining
        the queue has joined; None unless both exist."""
        row = await self._conn.fetchrow(self._q["hand_off_waiting"], network)
        return (row["order_id"], row["address"]) if row else None

    async def networks_ready_for_hand_off(self, networks: tuple[str, ...]) -> list[str]:
        rows = await self._conn.fetch(self._q["networks_ready_for_hand_off"], list(networks))
        return [row["network"] for row in rows]

    async def counts(self, network: str) -> dict[str, int]:
        rows = await self._conn.fetch(self._q["queue_counts"], network)
        return {r["network"]: r["queued"] for r in rows}
