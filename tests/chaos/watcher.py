"""The ETH chain watcher of the chaos run (README, Tests): a block each tick with payments to
pool addresses (late ones, tokens, a fake token, orphaned blocks now and then), reported
until acknowledged, through the kills; what was acknowledged, for the checks at the end. A
query of its own that fails (not an outage) fails the run: a watcher that silently paid
nobody would leave invariants 7 and 8 nothing to judge."""

from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import datetime
from decimal import Decimal

import asyncpg
import grpc

from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pool_grpc
from shared.db import is_database_outage
from shared.timestamps import to_timestamp
from tests.chaos.report import TRANSIENT, ChaosReport
from tests.e2e.stack import WATCHER_TOKEN, bearer

# The guard of the chaos run: a released ETH wallet waits three blocks (ticks).
REUSE_CONFIRMATIONS = 3
_TICK_SECONDS = 0.25
_LATE_CHANCE = 0.03
# ...and a late payer at least this often (blocks), so that every run has late deposits.
_LATE_EVERY = 5
_TOKEN_CHANCE = 0.3
_SPAM_CHANCE = 0.3  # of a late payer's deposits
_ORPHAN_CHANCE = 0.03
USDT = "0xdac17f958d2ee523a2206206994597c13d831ec7"
FAKE_USDT = "0x" + "5e" * 20


class ChainWatcher:
    def __init__(
        self,
        pool: pool_grpc.WalletPoolServiceAsyncStub,
        database_url: str,
        report: ChaosReport,
        seed: int,
        *,
        late_payers: bool = True,
        orphans: bool = True,
        tick_seconds: float = _TICK_SECONDS,
        payee_statuses: tuple[str, ...] = ("PENDING", "PROCESSING"),
    ) -> None:
        """`late_payers`: customers pay released wallets too; `orphans`: now and then a recent
        block is orphaned (its deposits retracted); `payee_statuses`: of the live orders paid
        (a PENDING order that received money outlives its payment window)."""
        self._pool = pool
        self._database_url = database_url
        self._report = report
        self._rng = random.Random(f"{seed}:watcher")
        self._late_payers = late_payers
        self._orphans = orphans
        self._payee_statuses = list(payee_statuses)
        self._tick_seconds = tick_seconds
        self.height = 0
        # (network, txid, index) -> (address, amount) of every acknowledged deposit
        self.acknowledged: dict[tuple[str, str, int], tuple[str, Decimal]] = {}
        # Per recent block, its acknowledged deposits (to orphan one now and then).
        self._recent: dict[int, list[wpb.ChainDeposit]] = {}
        self.retracted = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(self._tick_seconds)
            self.height += 1
            payees, late = await self._payees()
            deposits = [
                self._deposit(address, index, paid_at, late)
                for index, (address, paid_at) in enumerate(payees)
            ]
            await self._report_until_acknowledged(deposits, self._orphaned())

    def _orphaned(self) -> list[wpb.Retraction]:
        for old in [h for h in self._recent if h < self.height - 5]:
            del self._recent[old]
        if not (self._orphans and self._recent) or self._rng.random() >= _ORPHAN_CHANCE:
            return []
        block = self._rng.choice(sorted(self._recent))
        return [
            wpb.Retraction(
                txid=d.txid, kind=d.kind, index=d.index, reason=wpb.RETRACTION_REASON_ORPHANED
            )
            for d in self._recent.pop(block)
        ]

    async def _payees(self) -> tuple[list[tuple[str, datetime]], bool]:
        """Who pays in this block: a held wallet, or rarely a released one (a late payer, paid
        now by the database's clock). A held wallet is paid at the later of its order's last
        change and its assignment: inside the holding, before any final time to come (an
        order whose final change began before this query, but had not locked it yet, takes
        that moment as its final time, and a payment stamped now would be late)."""
        late = self._late_payers and (
            self._rng.random() < _LATE_CHANCE or self.height % _LATE_EVERY == 0
        )
        query = (
            """SELECT address, now() AS at FROM wallet_pool.wallets
               WHERE order_id IS NULL AND released_at IS NOT NULL AND disabled_at IS NULL
               ORDER BY released_at DESC LIMIT 3"""
            if late
            # SKIP LOCKED: an order whose status is changing right now is not paid in this
            # block; its final time, taken when its transaction began, could precede this
            # block's time, and the payment would be late (never waiting: no deadlock).
            else """SELECT w.address, greatest(o.update_time, a.assigned_at) AS at
                    FROM wallet_pool.wallets w
                    JOIN orders.orders o ON o.id = w.order_id
                    JOIN LATERAL (SELECT assigned_at FROM wallet_pool.assignments
                                  WHERE address = w.address ORDER BY id DESC LIMIT 1) a ON true
                    WHERE o.status = ANY($1::text[]) LIMIT 20 FOR SHARE OF o SKIP LOCKED"""
        )
        try:
            conn = await asyncpg.connect(self._database_url, timeout=2)
            try:
                rows = await (
                    conn.fetch(query) if late else conn.fetch(query, self._payee_statuses)
                )
            finally:
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)
        except Exception as exc:
            if not is_database_outage(exc):
                self._report.violation(f"the chain watcher's query failed: {exc!r}")
            return [], late
        payees = [(r["address"], r["at"]) for r in rows]
        return self._rng.sample(payees, min(len(payees), 1 if late else 2)), late

    def _deposit(self, address: str, index: int, paid_at: datetime, late: bool) -> wpb.ChainDeposit:
        token = self._rng.random() < _TOKEN_CHANCE
        spam = late and self._rng.random() < _SPAM_CHANCE
        contract = FAKE_USDT if spam else USDT if token else ""
        return wpb.ChainDeposit(
            address=address,
            txid=f"0x{self.height:016x}{self._rng.getrandbits(64):016x}",
            index=index,
            amount=f"{self._rng.randint(1, 999)}.{self._rng.randint(0, 99):02d}",
            block_height=self.height,
            block_time=to_timestamp(paid_at),
            confirmations=1,
            token_contract=contract,
            kind=wpb.DEPOSIT_KIND_TOKEN if contract else wpb.DEPOSIT_KIND_NATIVE,
        )

    async def _report_until_acknowledged(
        self, deposits: list[wpb.ChainDeposit], retracted: list[wpb.Retraction]
    ) -> None:
        request = wpb.ReportDepositsRequest(
            network="ETH", deposits=deposits, scanned_height=self.height, reverted=retracted
        )
        delay = 0.1
        while True:
            try:
                await self._pool.ReportDeposits(request, metadata=bearer(WATCHER_TOKEN), timeout=5)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                self._report.count("report_deposits", code.name)
                if code not in TRANSIENT:
                    self._report.violation(f"report_deposits answered {code.name}: {exc.details()}")
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            self._report.count("report_deposits", "OK")
            for d in deposits:
                key = ("ETH", d.txid, d.index)
                self.acknowledged[key] = (d.address, Decimal(d.amount))
            self._recent[self.height] = list(deposits)
            self.retracted += len(retracted)
            return
