-- Whether a release is owed is stored once: orders.wallet_release = 'PENDING'. The
-- pending_releases rows are only the delivery schedule (attempts, next attempt, last error);
-- their release_time is kept for the previous release by a compatibility trigger
-- (sql/releases.sql) and read by nothing of this release.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

-- Final orders whose payment waits for their delivered release's deposit changes: the pool's
-- deposit change number after it took the release (ReleaseWalletResponse.deposit_change; 0: a
-- pool that does not say). The order's payment is evaluated once the deposit cursor has passed
-- it, and the row goes. A table of its own (few rows, no lock on a table the previous release
-- uses during the rollout, no new column in its SELECT * of orders).
CREATE TABLE orders.release_settling (
    order_id uuid PRIMARY KEY,
    deposit_change bigint NOT NULL
);

-- The releases owed (few), for the retry loop and the gauge.
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX orders_release_owed_idx ON orders.orders (id) WHERE wallet_release = 'PENDING';
