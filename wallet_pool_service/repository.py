"""The pool's repositories: PostgreSQL adapters of wallets and the queue (SQL only).

Adapters are bound to one connection, so a use case runs them inside its own transaction.
"""

import json
import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg

from shared.assets import Asset
from shared.rows import from_row
from shared.sql import SqlAdapter, columns, load_queries
from wallet_pool_service.deposits import (
    ChainDeposit,
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


def queries() -> dict[str, str]:
    return load_queries("wallet_pool_service")


# The fields `report_deposits` takes of each deposit, of its chain part and of each
# retraction, in its parameters' order.
_REPORTED_COLUMNS = ("address", "txid", "kind", "index", "token_contract")
_CHAIN_POSITION_COLUMNS = ("amount", "block_height", "block_time", "confirmations")
_RETRACTION_COLUMNS = ("txid", "kind", "index", "reason")
_ASSET_COLUMNS = (
    "network",
    "code",
    "symbol",
    "contract",
    "decimals",
    "min_deposit",
    "confirmations",
)


def _place(row: asyncpg.Record) -> OrderPlace:
    return OrderPlace(
        released=row["released"],
        held=HeldWallet(row["address"], row["wallet_network"]) if row["address"] else None,
        waiting=(row["queue_network"], row["position"]) if row["queue_network"] else None,
    )


class PostgresWalletAdapter(SqlAdapter):
    QUERIES = "wallet_pool_service"

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
        return await self._rows("insert_wallets", lambda row: row["address"], network, addresses)

    async def count(self, network: str) -> int:
        return await self._value(int, "count_wallets", network)

    async def counts(self, network: str) -> dict[str, WalletCounts]:
        """Wallets by state per network; `network` empty means all."""
        rows = await self._rows(
            "wallet_counts", lambda row: (row["network"], from_row(WalletCounts, row)), network
        )
        return dict(rows)

    async def get(self, address: str) -> Wallet | None:
        return await self._row("get_wallet", Wallet.from_row, address)

    async def set_disabled(self, address: str, reason: str | None) -> Wallet | None:
        """Disable with `reason`, or enable with None."""
        return await self._row("set_disabled", Wallet.from_row, address, reason)

    async def page(
        self, network: str, state: WalletState | None, after_id: int, limit: int
    ) -> list[tuple[int, Wallet]]:
        return await self._rows(
            "list_wallets",
            lambda row: (row["id"], Wallet.from_row(row)),
            network,
            state.value if state else "",
            after_id,
            limit,
        )

    async def history(self, address: str) -> list[Assignment]:
        return await self._rows("wallet_history", Assignment.from_row, address)

    async def configure_reuse_guard(self, confirmations: dict[str, int | None]) -> None:
        """The guard's confirmations per network (None: off), as the database enforces it."""
        await self._execute(
            "configure_reuse_guard", list(confirmations), list(confirmations.values())
        )

    async def configure_assets(self, assets: tuple[Asset, ...]) -> None:
        """At start-up: the assets in force; others stay (deposits refer to them), disabled."""
        await self._execute("configure_assets", *columns(assets, *_ASSET_COLUMNS))

    async def watermarks(self, network: str) -> dict[str, Watermark]:
        rows = await self._rows("watermarks", Watermark.from_row, network)
        return {watermark.network: watermark for watermark in rows}

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
            *columns(chain, *_REPORTED_COLUMNS),
            *columns(deposits, "asset", "disposition"),
            *columns(chain, *_CHAIN_POSITION_COLUMNS),
            *columns(deposits, "required_confirmations"),
            *columns(chain, "block_hash"),
            finalized_height,
            *columns(retractions, *_RETRACTION_COLUMNS),
        )
        return _report_outcome(network, scanned_height, chain, rows[0])

    async def deposit_changes(self, after_change: int, limit: int) -> list[Deposit]:
        return await self._rows("deposit_changes", Deposit.from_row, after_change, limit)

    async def deposits_after(self, after_id: int, limit: int) -> list[Deposit]:
        return await self._rows("deposits_after", Deposit.from_row, after_id, limit)

    async def late_deposits(self, network: str, after_id: int, limit: int) -> list[Deposit]:
        return await self._rows("late_deposits", Deposit.from_row, network, after_id, limit)


def _report_outcome(
    network: str, scanned_height: int, chain: list[ChainDeposit], first: asyncpg.Record
) -> ReportOutcome:
    """What `report_deposits` answered: its outcome, or the refusal of the whole report."""
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
        repeated=len(chain) - first["recorded"],
        late=first["late"],
        unattributed=first["unattributed"],
        scanned_height=first["scanned_height"],
        # A count per disposition, in the column of its name.
        dispositions={d: first[d.lower()] for d in Disposition},
        tally={
            (key.partition(":")[0], key.partition(":")[2]): count for key, count in tally.items()
        },
        updated=first["updated"],
        reverted=first["reverted"],
        finality_violations=first["finality_violations"],
    )


class PostgresQueueAdapter(SqlAdapter):
    QUERIES = "wallet_pool_service"

    async def hand_off_waiting(self, network: str) -> tuple[uuid.UUID, str] | None:
        """A free wallet of `network` to its oldest waiting order, after any order joining
        the queue has joined; None unless both exist."""
        return await self._row(
            "hand_off_waiting", lambda row: (row["order_id"], row["address"]), network
        )

    async def networks_ready_for_hand_off(self, networks: tuple[str, ...]) -> list[str]:
        return await self._rows(
            "networks_ready_for_hand_off", lambda row: row["network"], list(networks)
        )

    async def counts(self, network: str) -> dict[str, int]:
        rows = await self._rows(
            "queue_counts", lambda row: (row["network"], row["queued"]), network
        )
        return dict(rows)
