"""Following the pool's allocations: the wallet (or queue place) of each waiting order copied
onto it, from the pool's answers and its hand-off stream."""

import asyncio
import logging
import uuid
from dataclasses import dataclass

from order_service.domain import Order
from order_service.feed import OrderFeed
from order_service.store import OrderStore
from order_service.wallet_pool_client import WalletPoolError, WalletPoolGateway

log = logging.getLogger(__name__)

_SYNC_BATCH = 100


@dataclass(eq=False)
class AllocationSync:
    _store: OrderStore
    _wallet_pool: WalletPoolGateway
    _feed: OrderFeed
    # How long one asker keeps a waiting order to itself (longer than a call's deadline).
    lease_seconds: float

    async def sync_waiting_orders(self) -> bool:
        """Allocation-loop step: learn the wallets (or queue places) of waiting orders."""
        async with self._store.statement() as orders:
            waiting = await orders.claim_waiting(_SYNC_BATCH, self.lease_seconds)
        await asyncio.gather(*(self.sync_order(oid, net, asset) for oid, net, asset in waiting))
        return False

    async def sync_order(self, order_id: uuid.UUID, network: str, asset: str) -> Order | None:
        """Ask the pool (idempotently) what the order holds and copy it onto the order;
        returns the order if that changed it."""
        try:
            allocation = await self._wallet_pool.allocate(order_id, network, asset)
        except WalletPoolError as exc:
            level = logging.INFO if exc.refused else logging.WARNING
            log.log(
                level,
                "allocation not obtained",
                extra={"order_id": str(order_id), "code": exc.code},
            )
            return None
        if allocation.address is not None:
            return await self._assign(order_id, allocation.address)
        if allocation.queue_position is not None:
            async with self._store.statement() as orders:
                moved = await orders.set_queue_position(order_id, allocation.queue_position)
            if moved:
                self._feed.changed(order_id)
            return moved
        return None

    async def _assign(self, order_id: uuid.UUID, address: str) -> Order | None:
        """Copy the wallet the pool gave a waiting order onto it (once; None after)."""
        async with self._store.statement() as orders:
            assigned = await orders.set_wallet(order_id, address)
        if assigned:
            self._feed.changed(order_id)
            log.info("wallet assigned", extra={"order_id": str(order_id), "address": address})
        return assigned

    async def follow_hand_offs(self) -> bool:
        """Push-channel step: copy each hand-off onto its order as the pool reports it, until
        the stream ends. The allocation sync covers what a broken stream misses."""
        try:
            async for order_id, address in self._wallet_pool.watch_hand_offs():
                await self._assign(order_id, address)
        except WalletPoolError as exc:
            log.info("hand-off watch interrupted; reconnecting", extra={"code": exc.code})
        return False
