-- Whether a release is owed is stored once: orders.wallet_release = 'PENDING'. The
-- pending_releases rows are only the delivery schedule (attempts, next attempt, last error);
-- their release_time is kept for the previous release by a compatibility trigger
-- (sql/releases.sql) and read by nothing of this release.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

-- The releases owed (few), for the retry loop and the gauge.
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX orders_release_owed_idx ON orders.orders (id) WHERE wallet_release = 'PENDING';

-- The pool's deposit change number after it took the release (ReleaseWalletResponse
-- .deposit_change; 0: a pool that does not say): the order's payment is evaluated again once
-- the deposit cursor has passed it, and then it is cleared (NULL: nothing waits). On the
-- schedule, not on orders: the previous release reads orders with SELECT *, whose cached
-- plans a new column there would invalidate during the rollout.
ALTER TABLE orders.pending_releases ADD COLUMN deposit_change bigint;
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX pending_releases_settling_idx ON orders.pending_releases (deposit_change)
    WHERE deposit_change IS NOT NULL;
