"""Handing the wallets of finished orders back to the pool: at once after the change, then
by the retry loop with backoff until the pool accepts."""

import asyncio
import logging
from dataclasses import dataclass

from order_service import domain
from order_service.feed import OrderFeed
from order_service.metrics import RELEASE_ATTEMPTS
from order_service.store import OrderStore, after_commit
from order_service.wallet_pool_client import WalletPoolError, WalletPoolGateway

log = logging.getLogger(__name__)

_RETRY_BATCH = 50


@dataclass(frozen=True)
class ReleasePolicy:
    # How long an attempt in progress keeps other attempts (loop, replicas) off its record.
    lease_seconds: float = 10.0
    backoff_base_seconds: float = 0.5
    backoff_cap_seconds: float = 10.0


@dataclass(eq=False)
class ReleaseDelivery:
    _store: OrderStore
    _wallet_pool: WalletPoolGateway
    _feed: OrderFeed
    policy: ReleasePolicy

    async def deliver(self, release: domain.PendingRelease, path: str) -> bool:
        """One attempt to hand a release to the pool; records the outcome."""
        try:
            deposit_change = await self._wallet_pool.release(
                release.order_id, release.address, release.final_time
            )
        except WalletPoolError as exc:
            RELEASE_ATTEMPTS.labels(path, "failed").inc()
            attempts = release.attempts + 1
            delay = domain.retry_delay(
                attempts, self.policy.backoff_base_seconds, self.policy.backoff_cap_seconds
            )
            # A refusal is a disagreement with the pool that retrying alone will not mend.
            log.log(
                logging.ERROR if exc.refused else logging.WARNING,
                "wallet release failed; will retry",
                extra={
                    "order_id": str(release.order_id),
                    "address": release.address,
                    "code": exc.code,
                    "attempt": attempts,
                    "retry_in_seconds": round(delay, 2),
                },
            )
            async with (
                after_commit("release attempt", release.order_id),
                self._store.statement() as orders,
            ):
                await orders.postpone_release(release.order_id, delay, str(exc)[:500])
            return False
        RELEASE_ATTEMPTS.labels(path, "released").inc()
        async with (
            after_commit("delivered release", release.order_id),
            self._store.statement() as orders,
        ):
            await orders.mark_release_done(release.order_id, deposit_change)
        self._feed.changed(release.order_id)
        log.info(
            "wallet released",
            extra={"order_id": str(release.order_id), "address": release.address},
        )
        return True

    async def deliver_due(self) -> bool:
        """Retry-loop step: deliver releases whose next attempt is due. True if a full batch."""
        async with self._store.statement() as orders:
            due = await orders.claim_due_releases(_RETRY_BATCH, self.policy.lease_seconds)
        await asyncio.gather(*(self.deliver(release, "retry") for release in due))
        return len(due) == _RETRY_BATCH

    async def count_pending(self) -> int:
        async with self._store.statement() as orders:
            return await orders.count_pending_releases()
