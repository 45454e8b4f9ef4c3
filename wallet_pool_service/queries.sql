-- allocate_wallet --
-- The order's lock, what the pool has for it, and when it has nothing a claim or a place at
-- the back of the queue, and its place then: one round trip (see the function).
-- The order's asset ($3, '' the coin, which needs no row) is remembered from its first call.
WITH expected AS (
    INSERT INTO wallet_pool.order_assets (order_id, asset)
    SELECT $1, $3 WHERE $3 <> ''
    ON CONFLICT (order_id) DO NOTHING
)
SELECT * FROM wallet_pool.allocate_wallet($1, $2)

-- release_wallet --
-- The order's lock, retired (never allocated again), out of its queue, and its wallet freed
-- guarded by the holder ($2 = '' means whichever wallet it holds), cooling for $3 seconds,
-- and handed to the head of its network's queue in the same transaction if someone waits.
-- deposit_change: the pool's deposit change number the release leaves for the order (the
-- deposits it made late are at or below it; a repeated release says it again).
SELECT r.*,
       wallet_pool.order_deposit_change($1, coalesce(r.address, nullif($2, ''))) AS deposit_change
FROM wallet_pool.release_wallet($1, $2, $3, $4) AS r

-- insert_wallets --
INSERT INTO wallet_pool.wallets (network, address)
SELECT $1, address FROM unnest($2::text[]) AS address
ON CONFLICT (address) DO NOTHING
RETURNING address

-- count_wallets --
SELECT count(*) FROM wallet_pool.wallets WHERE network = $1

-- wallet_counts --
-- Cooling: held back by the cooldown or by the watermark (held_by_watermark counts the latter).
SELECT network,
       count(*) AS total,
       count(*) FILTER (WHERE state = 'AVAILABLE') AS available,
       count(*) FILTER (WHERE state = 'ALLOCATED') AS allocated,
       count(*) FILTER (WHERE state = 'DISABLED') AS disabled,
       count(*) FILTER (WHERE state = 'COOLING') AS cooling,
       count(*) FILTER (WHERE state = 'COOLING' AND held_by_watermark) AS held_by_watermark
FROM wallet_pool.wallet_states
WHERE $1 = '' OR network = $1
GROUP BY network

-- configure_assets --
-- At start-up: the assets of the setting, enabled; any other (an asset dropped from the
-- setting, which deposits may refer to) kept, disabled. A contract keeps its code: a row
-- with the same contract under another code is refused by the unique index.
WITH configured AS (
    INSERT INTO wallet_pool.assets
        (network, code, symbol, contract, decimals, min_deposit, confirmations, enabled)
    SELECT n, c, s, k, d, m, f, true
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::numeric[],
                $7::bigint[]) AS a (n, c, s, k, d, m, f)
    ON CONFLICT (network, code) DO UPDATE
    SET symbol = EXCLUDED.symbol, contract = EXCLUDED.contract,
        decimals = EXCLUDED.decimals, min_deposit = EXCLUDED.min_deposit,
        confirmations = EXCLUDED.confirmations, enabled = true
    RETURNING network, code
)
UPDATE wallet_pool.assets a SET enabled = false
WHERE NOT EXISTS (SELECT 1 FROM configured c WHERE c.network = a.network AND c.code = a.code)

-- watermarks --
-- The watermark guard's setting and the watcher's progress per network.
SELECT network, reuse_confirmations, scanned_height, reported_at
FROM wallet_pool.chain_watermarks
WHERE $1 = '' OR network = $1

-- configure_reuse_guard --
-- At start-up: the guard's confirmations of each network ($2: NULL for off). Wallets the
-- guard holds now wait for the new setting (none, when it is off: the hand-off sweep gives
-- them to waiting orders), not for the one they were released under.
WITH configured AS (
    INSERT INTO wallet_pool.chain_watermarks (network, reuse_confirmations)
    SELECT * FROM unnest($1::text[], $2::bigint[])
    ON CONFLICT (network) DO UPDATE SET reuse_confirmations = EXCLUDED.reuse_confirmations
    RETURNING network, reuse_confirmations
)
UPDATE wallet_pool.wallets w SET reuse_confirmations = c.reuse_confirmations
FROM configured c
WHERE w.network = c.network AND w.order_id IS NULL AND w.reuse_confirmations IS NOT NULL
  AND w.reuse_confirmations IS DISTINCT FROM c.reuse_confirmations

-- report_deposits --
-- One watcher report: deposits attributed and recorded once, late ones holding their wallet
-- back, then the scanned height (see the function).
SELECT * FROM wallet_pool.report_deposits(
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
    $20, $21
)

-- deposits_after --
-- Recorded deposits after an id, in id order (ids commit in order: see report_deposits).
SELECT * FROM wallet_pool.deposits WHERE id > $1 ORDER BY id LIMIT $2

-- deposit_changes --
-- Deposits whose last change is after a change number, in change order (changes commit in
-- order: see report_deposits).
SELECT * FROM wallet_pool.deposits WHERE change_seq > $1 ORDER BY change_seq LIMIT $2

-- late_deposits --
-- Late deposits, oldest first; keyset pagination on id.
SELECT * FROM wallet_pool.deposits
WHERE released_at IS NOT NULL AND ($1 = '' OR network = $1) AND id > $2
ORDER BY id
LIMIT $3

-- queue_counts --
SELECT network, sum(waiting)::bigint AS queued
FROM wallet_pool.queue_blocks
WHERE $1 = '' OR network = $1
GROUP BY network

-- hand_off_waiting --
-- The oldest waiting order of the network gets the least recently released available wallet,
-- after any order joining the queue has joined (see the function); no row unless both exist.
SELECT order_id, address FROM wallet_pool.hand_off_waiting($1)

-- networks_ready_for_hand_off --
-- Which of the networks $1 have an order waiting while a wallet is free (a safety net for
-- hand-offs a crash interrupted). Two index probes per network, however long the queue.
-- (Scalar subqueries in index order with LIMIT 1: the planner keeps them as index probes,
-- which stay cheap when a network is rare, instead of joins or scans.)
SELECT n.network
FROM unnest($1::text[]) AS n (network)
WHERE (SELECT true FROM wallet_pool.queue q WHERE q.network = n.network ORDER BY seq LIMIT 1)
  AND (
    SELECT true FROM wallet_pool.wallets w
    WHERE w.network = n.network
      AND wallet_pool.claimable(w, now(), (
          SELECT m.scanned_height FROM wallet_pool.chain_watermarks m
          WHERE m.network = n.network))
    ORDER BY released_at NULLS FIRST, id
    LIMIT 1
  )

-- get_wallet --
SELECT * FROM wallet_pool.wallet_states WHERE address = $1

-- set_disabled --
-- $2: the reason, or NULL to enable. Returns the wallet as it is now.
UPDATE wallet_pool.wallets
SET disabled_at = CASE WHEN $2::text IS NULL THEN NULL ELSE coalesce(disabled_at, now()) END,
    disabled_reason = coalesce($2, '')
WHERE address = $1
RETURNING *, coalesce(cooldown_until > now(), false) AS cooling_down,
          (SELECT m.scanned_height FROM wallet_pool.chain_watermarks m
           WHERE m.network = wallets.network) AS scanned_height

-- list_wallets --
-- Keyset pagination on id; $2: '' (any), 'AVAILABLE', 'ALLOCATED', 'DISABLED' or 'COOLING'.
SELECT * FROM wallet_pool.wallet_states
WHERE ($1 = '' OR network = $1)
  AND ($2 = '' OR state = $2)
  AND id > $3
ORDER BY id
LIMIT $4

-- wallet_history --
SELECT order_id, network, assigned_at, released_at
FROM wallet_pool.assignments
WHERE address = $1
ORDER BY id
