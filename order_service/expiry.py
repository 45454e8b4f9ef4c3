"""Expiry: PENDING orders whose payment window is over with nothing received are cancelled
by the system, and what they hold is released."""

import asyncio
import logging
from dataclasses import dataclass

from order_service import domain
from order_service.deposit_sync import DepositSync
from order_service.domain import OrderStatus
from order_service.feed import OrderFeed
from order_service.lifecycle import OrderLifecycle
from order_service.releases import ReleaseDelivery
from order_service.store import OrderStore

log = logging.getLogger(__name__)

_EXPIRY_BATCH = 50


@dataclass(eq=False)
class OrderExpiry:
    _store: OrderStore
    _feed: OrderFeed
    _lifecycle: OrderLifecycle
    _releases: ReleaseDelivery
    _deposits: DepositSync
    _order_ttl_seconds: float

    async def expire_stale_orders(self) -> bool:
        """Expiry-loop step: cancel PENDING orders whose payment window (the TTL from when
        they were shown their address) is over with nothing received, as the system, and
        release what they hold. An order with a counted deposit, confirming or confirmed,
        or underpaid, is never expired: it stays PENDING with its payment status for the
        operator. True if a full batch (more may be waiting)."""
        if not self._order_ttl_seconds:
            return False
        async with self._store.statement() as orders:
            due = await orders.expiry_due(self._order_ttl_seconds)
        if not due:
            return False
        # A payment the pool recorded but this service has not copied yet keeps its order:
        # copy what there is first (not under the orders' locks, which the copy takes).
        while await self._deposits.sync():
            pass
        async with self._store.transaction() as orders:
            stale = await orders.claim_expired(self._order_ttl_seconds, _EXPIRY_BATCH)
            changed = [
                await self._lifecycle.record_change(
                    orders,
                    order.id,
                    order.status,
                    OrderStatus.CANCELLED,
                    domain.EXPIRED_REASON,
                    domain.SYSTEM_ACTOR,
                )
                for order in stale
            ]
        # The orders are locked, so each change is made.
        expired = [order for order in changed if order is not None]
        self._feed.changed(*(order.id for order in expired))
        for order in expired:
            log.info("order expired", extra={"order_id": str(order.id)})
        await asyncio.gather(
            *(
                self._releases.deliver(domain.PendingRelease.of(order), "expiry")
                for order in expired
            )
        )
        return len(stale) == _EXPIRY_BATCH
