-- Whether a wallet may be given to an order at p_now, its network's watcher having scanned
-- up to p_scanned (NULL: never reported): held by nobody, enabled, not cooling down, past the
-- watermark. The one statement of the rule: the claim, the hand-offs, the sweep and the view
-- below test it. A SQL function the planner inlines (IMMUTABLE, one expression), so a claim's
-- plan is the one its conditions written out had (the partial index of free wallets).
CREATE OR REPLACE FUNCTION wallet_pool.claimable(
    w wallet_pool.wallets, p_now timestamptz, p_scanned bigint
)
RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
SELECT w.order_id IS NULL AND w.disabled_at IS NULL
       AND (w.cooldown_until IS NULL OR w.cooldown_until <= p_now)
       AND (w.reuse_height IS NULL OR w.reuse_height <= p_scanned)
$$;

-- The height the network's watcher has scanned up to (NULL: never reported), which
-- claimable() takes as p_scanned: read the same way by the claim and the hand-off.
CREATE OR REPLACE FUNCTION wallet_pool.scanned_height(p_network text)
RETURNS bigint
LANGUAGE sql STABLE AS $$
SELECT m.scanned_height FROM wallet_pool.chain_watermarks m WHERE m.network = p_network
$$;

-- Wallets with what holds them back: the cooldown (cooling_down) or the watermark
-- (held_by_watermark: its reuse height not reached, or the watcher never reported), and the
-- state they make (WalletState in domain.py, whose Wallet.state a test holds to this one):
-- the one place a query reads a wallet's state from.
-- The wallet's columns are named one by one (as `w.*` was expanded when migration 009
-- created the view): a column added to wallets later goes at the end, after state, where
-- a replaced view accepts it.
CREATE OR REPLACE VIEW wallet_pool.wallet_states AS
SELECT w.id, w.network, w.address, w.order_id, w.allocated_at, w.released_at, w.created_at,
       w.disabled_at, w.disabled_reason, w.cooldown_until, w.release_height,
       w.reuse_confirmations, w.reuse_height,
       coalesce(w.cooldown_until > now(), false) AS cooling_down,
       coalesce(w.reuse_height > m.scanned_height, w.reuse_height IS NOT NULL)
           AS held_by_watermark,
       m.scanned_height,
       CASE WHEN w.order_id IS NOT NULL THEN 'ALLOCATED'
            WHEN w.disabled_at IS NOT NULL THEN 'DISABLED'
            WHEN wallet_pool.claimable(w, now(), m.scanned_height) THEN 'AVAILABLE'
            ELSE 'COOLING' END AS state
FROM wallet_pool.wallets w
LEFT JOIN wallet_pool.chain_watermarks m ON m.network = w.network;
