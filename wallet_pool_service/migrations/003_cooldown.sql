-- A released wallet cools down before it is given out again, so that a late deposit from its
-- last customer cannot land on the next one. NULL: no cooldown pending.
ALTER TABLE wallet_pool.wallets ADD COLUMN cooldown_until timestamptz;
