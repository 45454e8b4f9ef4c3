"""Repository interfaces of the pool and their PostgreSQL adapters (SQL only).

Adapters are bound to one connection, so a use case runs them inside its own transaction.
"""

import functools
import uuid
from typing import Protocol

from shared.db import Connection
from shared.sql import load_queries
from wallet_pool_service.domain import (
    Assignment,
    HeldWallet,
    OrderPlace,
    Wallet,
    WalletCounts,
    WalletState,
)


@functools.cache
def queries() -> dict[str, str]:
    return load_queries("wallet_pool_service")


def begin_for_order(order_id: uuid.UUID) -> str:
    """The script that opens a transaction holding the order's lock (see queries.sql)."""
    # A UUID formats as hex and dashes only: nothing of a caller's reaches the SQL text.
    return queries()["begin_for_order"].format(order_id=uuid.UUID(str(order_id)))


class WalletRepository(Protocol):
    async def claim(self, network: str, order_id: uuid.UUID) -> str | None: ...
    async def mark_as_available(
        self, order_id: uuid.UUID, address: str, cooldown_seconds: float
    ) -> HeldWallet | None: ...
    async def add(self, network: str, addresses: list[str]) -> list[str]: ...
    async def count(self, network: str) -> int: ...
    async def counts(self, network: str) -> dict[str, WalletCounts]: ...
    async def get(self, address: str) -> Wallet | None: ...
    async def set_disabled(self, address: str, reason: str | None) -> Wallet | None: ...
    async def page(
        self, network: str, state: WalletState | None, after_id: int, limit: int
    ) -> list[tuple[int, Wallet]]: ...
    async def history(self, address: str) -> list[Assignment]: ...


class QueueRepository(Protocol):
    async def place(self, order_id: uuid.UUID) -> OrderPlace: ...
    async def retire(self, order_id: uuid.UUID) -> bool: ...
    async def enqueue(self, order_id: uuid.UUID, network: str) -> bool: ...
    async def hand_off_head(self, network: str) -> tuple[uuid.UUID, str] | None: ...
    async def networks_ready_for_hand_off(self, networks: tuple[str, ...]) -> list[str]: ...
    async def counts(self, network: str) -> dict[str, int]: ...


class PostgresWalletAdapter:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._q = queries()

    async def claim(self, network: str, order_id: uuid.UUID) -> str | None:
        address: str | None = await self._conn.fetchval(self._q["claim_wallet"], network, order_id)
        return address

    async def mark_as_available(
        self, order_id: uuid.UUID, address: str, cooldown_seconds: float
    ) -> HeldWallet | None:
        """Free the wallet `order_id` holds (only `address`, unless it is empty); it cools
        down for `cooldown_seconds` before it can be given out again."""
        row = await self._conn.fetchrow(
            self._q["mark_as_available"], order_id, address, cooldown_seconds
        )
        return HeldWallet(row["address"], row["network"]) if row else None

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
                r["total"], r["available"], r["allocated"], r["disabled"], r["cooling"]
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


class PostgresQueueAdapter:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._q = queries()

    async def place(self, order_id: uuid.UUID) -> OrderPlace:
        row = await self._conn.fetchrow(self._q["order_place"], order_id)
        assert row is not None, "order_place always returns one row"
        return OrderPlace(
            released=row["released"],
            held=HeldWallet(row["address"], row["wallet_network"]) if row["address"] else None,
            waiting=(row["queue_network"], row["position"]) if row["queue_network"] else None,
        )

    async def retire(self, order_id: uuid.UUID) -> bool:
        """Never to be given a wallet again; out of the queue (True if it was waiting)."""
        status: str = await self._conn.execute(self._q["retire_order"], order_id)
        return status == "DELETE 1"

    async def enqueue(self, order_id: uuid.UUID, network: str) -> bool:
        """False when the order holds a wallet by now (a hand-off got there first)."""
        status: str = await self._conn.execute(self._q["enqueue"], order_id, network)
        return status == "INSERT 0 1"

    async def hand_off_head(self, network: str) -> tuple[uuid.UUID, str] | None:
        row = await self._conn.fetchrow(self._q["hand_off_head"], network)
        return (row["order_id"], row["address"]) if row else None

    async def networks_ready_for_hand_off(self, networks: tuple[str, ...]) -> list[str]:
        rows = await self._conn.fetch(self._q["networks_ready_for_hand_off"], list(networks))
        return [row["network"] for row in rows]

    async def counts(self, network: str) -> dict[str, int]:
        rows = await self._conn.fetch(self._q["queue_counts"], network)
        return {r["network"]: r["queued"] for r in rows}
