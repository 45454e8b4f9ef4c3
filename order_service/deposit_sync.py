"""Following the pool's deposits: each change (recorded, confirmations, reverted) copied onto
this service's orders with the payment status it makes, in one transaction."""

import logging
import uuid

import asyncpg

from order_service.domain import Order
from order_service.feed import OrderFeed
from order_service.payment import evaluate
from order_service.repository import PostgresOrderRepository
from order_service.wallet_pool_client import WalletPoolError, WalletPoolGateway
from shared.db import connection

log = logging.getLogger(__name__)

_DEPOSIT_PAGE = 500


class DepositSync:
    def __init__(self, pool: asyncpg.Pool, wallet_pool: WalletPoolGateway, feed: OrderFeed) -> None:
        self._pool = pool
        self._wallet_pool = wallet_pool
        self._feed = feed

    async def sync(self) -> bool:
        """Copy the deposits the pool attributed to orders of this service as they changed,
        from where the last step stopped. True if a full page (more may follow)."""
        async with connection(self._pool) as conn:
            after_id, after = await PostgresOrderRepository(conn).deposit_cursor()
        through_id: int | None = None
        try:
            page, last = await self._wallet_pool.deposit_changes(after, _DEPOSIT_PAGE)
            through_change: int | None = last
        except WalletPoolError as exc:
            if exc.code != "UNIMPLEMENTED":
                log.info("deposits not obtained", extra={"code": exc.code})
                return False
            # A pool of the previous release (a rolling update): new deposits by id only.
            try:
                page, last = await self._wallet_pool.deposits_after(after_id, _DEPOSIT_PAGE)
            except WalletPoolError as again:
                log.info("deposits not obtained", extra={"code": again.code})
                return False
            after, through_id, through_change = after_id, last, None
        if last == after:
            return False
        # The deposits and the payment status they change, in one transaction: no order
        # shows a deposit its payment status has not taken in.
        async with connection(self._pool) as conn, conn.transaction():
            orders = PostgresOrderRepository(conn)
            paid = await orders.record_deposits(page, through_id, through_change)
            changed = [await evaluate_payment(orders, order_id) for order_id in paid]
        if paid:
            self._feed.changed(*(order.id for order in changed if order is not None))
            self._feed.run_sequencer()
            log.info("deposits recorded", extra={"orders": len(paid)})
        return last - after >= _DEPOSIT_PAGE


async def evaluate_payment(orders: PostgresOrderRepository, order_id: uuid.UUID) -> Order | None:
    """Recompute the order's payment from its deposits, under its lock; the order if it
    changed (a change of status records its event)."""
    order = await orders.lock(order_id)
    if order is None:
        return None
    deposits = await orders.deposits(order_id)
    payment = evaluate(order.amount, order.asset, deposits, order.tolerance)
    changed = await orders.set_payment(order_id, payment)
    if changed is not None and changed.payment_status is not order.payment_status:
        log.info(
            "payment status changed",
            extra={
                "order_id": str(order_id),
                "from": order.payment_status.value,
                "to": changed.payment_status.value,
            },
        )
    return changed
