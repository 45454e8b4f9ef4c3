"""Pool use cases over the wallet and queue repositories: each one transaction, or a single
statement that is atomic on its own."""

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import asyncpg

from shared.assets import Asset, AssetTable, parse_assets
from shared.db import accepts_writes, close_pool, connection
from shared.embedded_db import EmbeddedPostgres
from shared.networks import parse_network
from shared.pagination import decode_page_token, encode_page_token, foreign_page_token, page_size
from wallet_pool_service import deposits, domain
from wallet_pool_service.feed import HandOffFeed
from wallet_pool_service.metrics import (
    DEPOSITS_RECORDED,
    DEPOSITS_REVERTED,
    FINALITY_VIOLATIONS,
)
from wallet_pool_service.repository import (
    PostgresQueueAdapter,
    PostgresWalletAdapter,
)

log = logging.getLogger(__name__)


class WalletPoolManager:
    """Allocation, release, hand-off to the queue, stats and pool administration."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        networks: tuple[str, ...],
        embedded: EmbeddedPostgres | None = None,
        low_water_mark: int = 0,
        cooldown_seconds: float = 0.0,
        listen_pool: asyncpg.Pool | None = None,
        assets: AssetTable | None = None,
    ) -> None:
        """`listen_pool`: where the hand-off listener takes its connection (the pool's own
        by default). `assets`: the networks' assets (the built-in ones by default)."""
        self._pool = pool
        self._listen_pool = listen_pool
        self.networks = networks
        self.assets = assets or parse_assets("", networks)
        self._embedded = embedded
        self.low_water_mark = low_water_mark
        self.cooldown_seconds = cooldown_seconds
        self.hand_offs = HandOffFeed(listen_pool or pool)
        self._cooldown_timers: set[asyncio.TimerHandle] = set()
        self._background: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def _transaction(
        self,
    ) -> AsyncIterator[tuple[PostgresWalletAdapter, PostgresQueueAdapter]]:
        async with connection(self._pool) as conn, conn.transaction():
            yield PostgresWalletAdapter(conn), PostgresQueueAdapter(conn)

    @contextlib.asynccontextmanager
    async def _statement(self) -> AsyncIterator[tuple[PostgresWalletAdapter, PostgresQueueAdapter]]:
        """For a use case of one statement, atomic on its own: no BEGIN/COMMIT round trips."""
        async with connection(self._pool) as conn:
            yield PostgresWalletAdapter(conn), PostgresQueueAdapter(conn)

    async def allocate_wallet(
        self, order_id: uuid.UUID, network: str, asset: str = ""
    ) -> domain.Allocation:
        """The order's wallet, or its place in the network's queue. Idempotent per order.
        `asset`: what the order expects ('' the coin), remembered from the first call."""
        network = parse_network(network, self.networks)
        code = self.assets.order_asset(network, asset).code
        async with self._statement() as (wallets, _):
            attempt = await wallets.allocate(order_id, network, code)
        return domain.allocation_after(attempt, network)

    async def release_wallet(
        self, order_id: uuid.UUID, address: str = "", final_time: datetime | None = None
    ) -> domain.Release:
        """Free the wallet held by `order_id` (guarded by holder), or take it out of the queue.
        A release naming an `address` the order does not hold (for a waiting order: any
        address) changes nothing and raises ReleaseMismatch.

        The freed wallet goes to the head of its network's queue in the same transaction, or,
        with a cooldown, when the cooldown ends (the sweep is the safety net for a process
        gone meanwhile). The order is remembered as released: it is never given a
        wallet again.
        """
        address = domain.check_address_field(address, required=False)
        async with self._statement() as (wallets, _):
            released = await wallets.mark_as_available(
                order_id, address, self.cooldown_seconds, final_time
            )
        outcome = domain.release_outcome(order_id, address, released)
        freed = released.freed
        if freed is not None:
            log.info(
                "wallet released",
                extra={"order_id": str(order_id), "address": freed.address},
            )
            if self.cooldown_seconds:
                self._hand_off_after_cooldown(freed.network)
            if released.handed is not None:
                _log_hand_off(*released.handed)
            if released.handed is None or released.handed[1] != freed.address:
                # The freed wallet is still free (nobody waited when the release looked, or
                # another went first); an order joining the queue meanwhile is seen by a
                # hand-off after the commit (see hand_off_waiting).
                await self._hand_off_one(freed.network)
        return outcome

    async def hand_off(self, network: str) -> int:
        """Give free wallets of `network` to its waiting orders, oldest first. Returns how many."""
        handed = 0
        while await self._hand_off_one(network):
            handed += 1
        return handed

    async def _hand_off_one(self, network: str) -> bool:
        """The least recently released free wallet of `network` to its oldest waiting order,
        if both exist."""
        async with self._statement() as (_, queue):
            result = await queue.hand_off_waiting(network)
        if result is not None:
            _log_hand_off(*result)
        return result is not None

    def _hand_off_after_cooldown(self, network: str) -> None:
        """Serve the queue as soon as the wallet's cooldown ends (the sweep is the safety net
        when this process is gone by then)."""

        async def hand_off() -> None:
            try:
                await self.hand_off(network)
            except Exception:
                log.warning("hand-off after cooldown failed; the sweep will retry", exc_info=True)

        def start() -> None:
            self._cooldown_timers.discard(timer)
            task = asyncio.create_task(hand_off())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

        # A little late rather than early: the database's clock decides when it ends.
        timer = asyncio.get_running_loop().call_later(self.cooldown_seconds + 0.01, start)
        self._cooldown_timers.add(timer)

    async def hand_off_everywhere(self) -> bool:
        """Safety net for hand-offs a crash interrupted; a background loop step."""
        async with self._statement() as (_, queue):
            networks = await queue.networks_ready_for_hand_off(self.networks)
        for network in networks:
            await self.hand_off(network)
        return False

    async def get_pool_stats(self, network: str = "") -> list[domain.NetworkStats]:
        if network:
            network = parse_network(network, self.networks)
        async with self._transaction() as (wallets, queue):
            wallet_counts = await wallets.counts(network)
            queue_counts = await queue.counts(network)
            watermarks = await wallets.watermarks(network)
        names = sorted({*wallet_counts, *queue_counts, *([network] if network else self.networks)})
        stats = []
        for name in names:
            counts = wallet_counts.get(name, domain.WalletCounts())
            watermark = watermarks.get(name, deposits.Watermark(name, None, None, None))
            stats.append(
                domain.NetworkStats(
                    network=name,
                    queued=queue_counts.get(name, 0),
                    low_water_mark=self.low_water_mark,
                    **dataclasses.asdict(counts),
                    reuse_confirmations=watermark.reuse_confirmations,
                    scanned_height=watermark.scanned_height,
                    watcher_report_time=watermark.report_time,
                    held_reason=watermark.held_reason(counts.held_by_watermark),
                )
            )
        return stats

    async def report_deposits(
        self,
        network: str,
        reported: list[deposits.ChainDeposit],
        scanned_height: int,
        chain_height: int = 0,
        retractions: Sequence[deposits.Retraction] = (),
        finalized_height: int = 0,
    ) -> deposits.ReportOutcome:
        """Record a watcher's report: each deposit once, attributed from the address history
        (a late one holds its wallet out of the pool), then the network's scanned height.
        Wallets the new height lets go are handed to waiting orders."""
        network = parse_network(network, self.networks)
        checked = deposits.check_report(network, reported, scanned_height)
        classified = [
            deposits.resolve(self.assets, network, d, f"deposits[{i}]")
            for i, d in enumerate(checked)
        ]
        chain = deposits.check_chain_height(chain_height, scanned_height)
        retracted = deposits.check_retractions(network, list(retractions), checked)
        finalized = deposits.check_finalized_height(finalized_height, scanned_height)
        async with self._statement() as (wallets, _):
            outcome = await wallets.report_deposits(
                network, classified, scanned_height, chain, retracted, finalized
            )
        DEPOSITS_REVERTED.labels(network).inc(outcome.reverted)
        if outcome.finality_violations:
            FINALITY_VIOLATIONS.labels(network).inc(outcome.finality_violations)
            # What the chain (or the watcher) did, not a fault of this service: the alert
            # is on the counter.
            log.warning(
                "confirmed deposits reverted below the finalized height",
                extra={"network": network, "count": outcome.finality_violations},
            )
        for (attribution, disposition), count in outcome.tally.items():
            DEPOSITS_RECORDED.labels(network, attribution, disposition.lower()).inc(count)
        held = outcome.tally.get(("late", deposits.Disposition.COUNTED), 0)
        if held:
            log.warning(
                "late deposits: their wallets are held out of the pool",
                extra={"network": network, "count": held},
            )
        await self.hand_off(network)
        return outcome

    def list_assets(self, network: str = "") -> list[Asset]:
        """The assets of one network (or all), by network and code."""
        if network:
            return self.assets.of_network(parse_network(network, self.networks))
        return list(self.assets.assets)

    async def list_deposit_changes(
        self, after_change: int, requested_size: int
    ) -> list[deposits.Deposit]:
        """Deposits as they are now, in the order of their last change after `after_change`
        (recorded, confirmations, reverted): how the order service follows them."""
        async with self._statement() as (wallets, _):
            return await wallets.deposit_changes(after_change, page_size(requested_size))

    async def list_deposits(self, after_id: int, requested_size: int) -> list[deposits.Deposit]:
        """Recorded deposits after `after_id`, in the order they were recorded."""
        async with self._statement() as (wallets, _):
            return await wallets.deposits_after(after_id, page_size(requested_size))

    async def list_late_deposits(
        self, network: str, requested_size: int, page_token: str
    ) -> tuple[list[deposits.Deposit], str]:
        if network:
            network = parse_network(network, self.networks)
        size = page_size(requested_size)
        async with self._statement() as (wallets, _):
            page = await wallets.late_deposits(network, _after_id(page_token), size + 1)
        if len(page) <= size:
            return page, ""
        return page[:size], encode_page_token({"id": page[size - 1].id})

    async def add_wallets(self, network: str, addresses: list[str]) -> domain.AddedWallets:
        """Add addresses to the pool; already known ones are reported, not added twice."""
        network = parse_network(network, self.networks)
        unique, repeats = domain.split_repeats(domain.check_addresses(network, addresses))
        async with self._transaction() as (wallets, _):
            added = await wallets.add(network, unique)
        added_set = set(added)
        duplicates = [a for a in unique if a not in added_set] + repeats
        if added:
            log.info("wallets added", extra={"network": network, "count": len(added)})
            await self.hand_off(network)
        return domain.AddedWallets(added=added, duplicates=duplicates)

    async def set_wallet_disabled(self, address: str, reason: str | None) -> domain.Wallet:
        """Disable (with a reason) or enable (None) a wallet. A disabled wallet is never
        allocated; one that is held keeps serving its order and leaves the pool on release.
        Enabling serves waiting orders at once."""
        address = domain.check_address_field(address)
        async with self._transaction() as (wallets, _):
            wallet = await wallets.set_disabled(address, reason)
        if wallet is None:
            raise domain.WalletNotFound(address)
        log.info(
            "wallet disabled" if reason is not None else "wallet enabled",
            extra={"address": address, "reason": reason},
        )
        if reason is None:
            await self.hand_off(wallet.network)
        return wallet

    async def list_wallets(
        self, network: str, state: domain.WalletState | None, requested_size: int, page_token: str
    ) -> tuple[list[domain.Wallet], str]:
        if network:
            network = parse_network(network, self.networks)
        size = page_size(requested_size)
        async with self._transaction() as (wallets, _):
            page = await wallets.page(network, state, _after_id(page_token), size + 1)
        if len(page) <= size:
            return [wallet for _, wallet in page], ""
        return [wallet for _, wallet in page[:size]], encode_page_token({"id": page[size - 1][0]})

    async def get_wallet_history(self, address: str) -> list[domain.Assignment]:
        address = domain.check_address_field(address)
        async with self._transaction() as (wallets, _):
            if await wallets.get(address) is None:
                raise domain.WalletNotFound(address)
            return await wallets.history(address)

    async def seed_demo_wallets(self, per_network: int) -> int:
        """Fill empty networks with demo addresses (development only)."""
        seeded = 0
        for network in self.networks:
            async with self._transaction() as (wallets, _):
                if await wallets.count(network):
                    continue
            result = await self.add_wallets(network, domain.demo_addresses(network, per_network))
            seeded += len(result.added)
        return seeded

    async def database_ready(self) -> bool:
        """The database answers and takes writes."""
        return await accepts_writes(self._pool)

    async def close(self) -> None:
        for timer in self._cooldown_timers:
            timer.cancel()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await close_pool(self._pool)
        if self._listen_pool is not None:
            await close_pool(self._listen_pool)
        if self._embedded is not None:
            self._embedded.close()


def _log_hand_off(order_id: uuid.UUID, address: str) -> None:
    log.info("wallet handed to queued order", extra={"order_id": str(order_id), "address": address})


def _after_id(page_token: str) -> int:
    """The id a page token of ours continues after (0 without one)."""
    after_id: object = decode_page_token(page_token).get("id") if page_token else 0
    # A bigint id: anything else was not issued here.
    if type(after_id) is not int or not 0 <= after_id < 2**63:
        raise foreign_page_token()
    return after_id
