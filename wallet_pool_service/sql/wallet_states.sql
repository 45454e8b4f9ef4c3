-- Wallets with what holds them back: the cooldown (cooling_down) or the watermark
-- (held_by_watermark: its reuse height not reached, or the watcher never reported), and the
-- state they make (WalletState in domain.py, whose Wallet.state a test holds to this one):
-- the one place a query reads a wallet's state from. (Claims and hand-offs test the same
-- conditions against the clock after their locks, in index order; a test holds them to it.)
-- The wallet's columns are named one by one (as `w.*` was expanded when migration 009
-- created the view): a column added to wallets later goes at the end, after state, where
-- CREATE OR REPLACE VIEW accepts it.
CREATE OR REPLACE VIEW wallet_pool.wallet_states AS
SELECT s.*,
       CASE WHEN s.order_id IS NOT NULL THEN 'ALLOCATED'
            WHEN s.disabled_at IS NOT NULL THEN 'DISABLED'
            WHEN s.cooling_down OR s.held_by_watermark THEN 'COOLING'
            ELSE 'AVAILABLE' END AS state
FROM (
    SELECT w.id, w.network, w.address, w.order_id, w.allocated_at, w.released_at,
           w.created_at, w.disabled_at, w.disabled_reason, w.cooldown_until, w.release_height,
           w.reuse_confirmations, w.reuse_height,
           coalesce(w.cooldown_until > now(), false) AS cooling_down,
           coalesce(w.reuse_height > m.scanned_height, w.reuse_height IS NOT NULL)
               AS held_by_watermark,
           m.scanned_height
    FROM wallet_pool.wallets w
    LEFT JOIN wallet_pool.chain_watermarks m ON m.network = w.network
) AS s;
