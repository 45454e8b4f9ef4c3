"""Following the pool's deposits: each change (recorded, confirmations, reverted) copied onto
this service's orders with the payment status it makes, in one transaction.

Whether a deposit is late is the pool's verdict, copied (wallet_pool.deposit_is_late). The pool
can only judge a deposit by a holding's end it knows of: between an order becoming final and
its release reaching the pool, a deposit paid after the final time is on time there, until the
release makes it late (with a new change number). So a final order's payment is not evaluated
while its release is owed, nor after delivery until the change cursor has passed the number the
pool's release answered (orders.release_settling); then once, here, and it waits no
more. No final order's payment ever counts a deposit the pool calls late."""

import logging
import uuid
from dataclasses import dataclass

import asyncpg

from order_service.domain import Order, PoolDeposit
from order_service.feed import OrderFeed
from order_service.payment import evaluate
from order_service.repository import PostgresOrderRepository
from order_service.wallet_pool_client import WalletPoolError, WalletPoolGateway
from shared.db import connection

log = logging.getLogger(__name__)

_DEPOSIT_PAGE = 500
_SETTLE_BATCH = 100


class DepositSync:
    def __init__(self, pool: asyncpg.Pool, wallet_pool: WalletPoolGateway, feed: OrderFeed) -> None:
        self._pool = pool
        self._wallet_pool = wallet_pool
        self._feed = feed

    async def sync(self) -> bool:
        """Copy the deposits the pool attributed to orders of this service as they changed,
        from where the last step stopped, and evaluate the payments that waited for them.
        True if a full page or batch (more may follow)."""
        async with connection(self._pool) as conn:
            orders = PostgresOrderRepository(conn)
            after_id, after = await orders.deposit_cursor()
            settling = await orders.settling_orders(after, _SETTLE_BATCH)
        page = await self._fetch(after_id, after)
        if page is None and not settling:
            return False
        # The deposits and the payment status they change, in one transaction: no order
        # shows a deposit its payment status has not taken in.
        async with connection(self._pool) as conn, conn.transaction():
            orders = PostgresOrderRepository(conn)
            paid: list[uuid.UUID] = []
            if page is not None:
                paid = await orders.record_deposits(
                    page.deposits, page.through_id, page.through_change
                )
            # The change cursor as this transaction leaves it (its row lock held, if moved).
            cursor = (await orders.deposit_cursor())[1]
            settling = await orders.settling_orders(cursor, _SETTLE_BATCH)
            changed = [
                await evaluate_payment(orders, order_id, cursor)
                for order_id in dict.fromkeys([*paid, *settling])
            ]
            for order_id in settling:
                await orders.settle(order_id, cursor)
        if paid or settling:
            self._feed.changed(*(order.id for order in changed if order is not None))
            self._feed.run_sequencer()
            log.info("deposits recorded", extra={"orders": len(paid), "settled": len(settling)})
        return (page is not None and page.full) or len(settling) >= _SETTLE_BATCH

    async def _fetch(self, after_id: int, after: int) -> "_Page | None":
        """The pool's next page after the cursors; None when nothing is new (or the pool
        could not be asked)."""
        through_id: int | None = None
        try:
            deposits, last = await self._wallet_pool.deposit_changes(after, _DEPOSIT_PAGE)
            through_change: int | None = last
        except WalletPoolError as exc:
            if exc.code != "UNIMPLEMENTED":
                log.info("deposits not obtained", extra={"code": exc.code})
                return None
            # A pool of the previous release (a rolling update): new deposits by id only.
            try:
                deposits, last = await self._wallet_pool.deposits_after(after_id, _DEPOSIT_PAGE)
            except WalletPoolError as again:
                log.info("deposits not obtained", extra={"code": again.code})
                return None
            after, through_id, through_change = after_id, last, None
        if last == after:
            return None
        return _Page(deposits, through_id, through_change, last - after >= _DEPOSIT_PAGE)


@dataclass(frozen=True)
class _Page:
    deposits: list[PoolDeposit]
    # The cursor the page moves: the id cursor (a pool of the previous release) or the
    # change cursor.
    through_id: int | None
    through_change: int | None
    full: bool


async def evaluate_payment(
    orders: PostgresOrderRepository, order_id: uuid.UUID, cursor: int
) -> Order | None:
    """Recompute the order's payment from its deposits, under its lock, unless it must wait
    for its release's deposit changes (`cursor`: the last change read); the order if it
    changed (a change of status records its event)."""
    locked = await orders.lock_for_payment(order_id, cursor)
    if locked is None:
        return None
    order, waits = locked
    if waits:
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
