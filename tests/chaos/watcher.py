"""The ETH chain watcher of the chaos run: a chain of its own that grows a block each tick,
with customers paying to pool addresses in some blocks (to held wallets mostly; now and then
to a released one, late), each block reported through ReportDeposits and the report retried
until acknowledged, through the kills. It remembers what was acknowledged, for the checks
at the end (tests/invariants.py, 7 and 8)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import UTC, datetime
from decimal import Decimal

import asyncpg
import grpc

from exchange.wallet_pool.v1 import wallet_pool_service_pb2 as wpb
from exchange.wallet_pool.v1 import wallet_pool_service_pb2_grpc as pool_grpc
from shared.timestamps import to_timestamp
from tests.chaos.report import TRANSIENT, ChaosReport
from tests.e2e.stack import WATCHER_TOKEN, bearer

# The guard of the chaos run: a released ETH wallet waits three blocks (ticks).
REUSE_CONFIRMATIONS = 3
_TICK_SECONDS = 0.25
_LATE_CHANCE = 0.03


class ChainWatcher:
    def __init__(
        self,
        pool: pool_grpc.WalletPoolServiceAsyncStub,
        database_url: str,
        report: ChaosReport,
        seed: int,
    ) -> None:
        self._pool = pool
        self._database_url = database_url
        self._report = report
        self._rng = random.Random(f"{seed}:watcher")
        self.height = 0
        # (network, txid, index) -> (address, amount) of every acknowledged deposit
        self.acknowledged: dict[tuple[str, str, int], tuple[str, Decimal]] = {}

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await asyncio.sleep(_TICK_SECONDS)
            self.height += 1
            payees = await self._payees()
            deposits = [self._deposit(address, index) for index, address in enumerate(payees)]
            await self._report_until_acknowledged(deposits)

    async def _payees(self) -> list[str]:
        """Who pays in this block: a held wallet most blocks, a released one rarely (a late
        payer). Read from the pool's table, as a chain shows payments to any address; none
        while the database is down."""
        late = self._rng.random() < _LATE_CHANCE
        query = (
            """SELECT address FROM wallet_pool.wallets
               WHERE order_id IS NULL AND released_at IS NOT NULL AND disabled_at IS NULL
               ORDER BY released_at DESC LIMIT 3"""
            if late
            else "SELECT address FROM wallet_pool.wallets WHERE order_id IS NOT NULL LIMIT 20"
        )
        try:
            conn = await asyncpg.connect(self._database_url, timeout=2)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return []
        try:
            rows = await conn.fetch(query)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            return []
        finally:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
        addresses = [r["address"] for r in rows]
        return self._rng.sample(addresses, min(len(addresses), 1 if late else 2))

    def _deposit(self, address: str, index: int) -> wpb.ChainDeposit:
        return wpb.ChainDeposit(
            address=address,
            txid=f"0x{self.height:016x}{self._rng.getrandbits(64):016x}",
            index=index,
            amount=f"{self._rng.randint(1, 999)}.{self._rng.randint(0, 99):02d}",
            block_height=self.height,
            block_time=to_timestamp(datetime.now(UTC)),
            confirmations=1,
        )

    async def _report_until_acknowledged(self, deposits: list[wpb.ChainDeposit]) -> None:
        request = wpb.ReportDepositsRequest(
            network="ETH", deposits=deposits, scanned_height=self.height
        )
        delay = 0.1
        while True:
            try:
                await self._pool.ReportDeposits(request, metadata=bearer(WATCHER_TOKEN), timeout=5)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                self._report.count("report_deposits", code)
                if code not in TRANSIENT:
                    self._report.violation(f"report_deposits answered {code.name}: {exc.details()}")
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            self._report.count("report_deposits", grpc.StatusCode.OK)
            for d in deposits:
                key = ("ETH", d.txid, d.index)
                self.acknowledged[key] = (d.address, Decimal(d.amount))
            return
