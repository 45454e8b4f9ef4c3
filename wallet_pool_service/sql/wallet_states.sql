-- Wallets with what holds them back: the cooldown (cooling_down) or the watermark
-- (held_by_watermark: its reuse height not reached, or the watcher never reported).
-- The wallet's columns are named one by one (as `w.*` was expanded when migration 009
-- created the view): a column added to wallets later is added at the end, where
-- CREATE OR REPLACE VIEW accepts it.
CREATE OR REPLACE VIEW wallet_pool.wallet_states AS
SELECT w.id, w.network, w.address, w.order_id, w.allocated_at, w.released_at, w.created_at,
       w.disabled_at, w.disabled_reason, w.cooldown_until, w.release_height,
       w.reuse_confirmations, w.reuse_height,
       coalesce(w.cooldown_until > now(), false) AS cooling_down,
       coalesce(w.reuse_height > m.scanned_height, w.reuse_height IS NOT NULL)
           AS held_by_watermark,
       m.scanned_height
FROM wallet_pool.wallets w
LEFT JOIN wallet_pool.chain_watermarks m ON m.network = w.network;
