-- allocate_wallet --
-- The order's lock, what the pool has for it, and when it has nothing a claim or a place at
-- the back of the queue, and its place then: one round trip (see the function).
SELECT * FROM wallet_pool.allocate_wallet($1, $2)

-- release_wallet --
-- The order's lock, retired (never allocated again), out of its queue, and its wallet freed
-- guarded by the holder ($2 = '' means whichever wallet it holds), cooling for $3 seconds,
-- and handed to the head of its network's queue in the same transaction if someone waits.
SELECT * FROM wallet_pool.release_wallet($1, $2, $3)

-- insert_wallets --
INSERT INTO wallet_pool.wallets (network, address)
SELECT $1, address FROM unnest($2::text[]) AS address
ON CONFLICT (address) DO NOTHING
RETURNING address

-- count_wallets --
SELECT count(*) FROM wallet_pool.wallets WHERE network = $1

-- wallet_counts --
SELECT network,
       count(*) AS total,
       count(*) FILTER (WHERE order_id IS NULL AND disabled_at IS NULL
                        AND (cooldown_until IS NULL OR cooldown_until <= now())) AS available,
       count(*) FILTER (WHERE order_id IS NOT NULL) AS allocated,
       count(*) FILTER (WHERE order_id IS NULL AND disabled_at IS NOT NULL) AS disabled,
       count(*) FILTER (WHERE order_id IS NULL AND disabled_at IS NULL
                        AND cooldown_until > now()) AS cooling
FROM wallet_pool.wallets
WHERE $1 = '' OR network = $1
GROUP BY network

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
    WHERE w.network = n.network AND w.order_id IS NULL AND w.disabled_at IS NULL
      AND (w.cooldown_until IS NULL OR w.cooldown_until <= now())
    ORDER BY released_at NULLS FIRST, id
    LIMIT 1
  )

-- get_wallet --
SELECT *, cooldown_until > now() AS cooling FROM wallet_pool.wallets WHERE address = $1

-- set_disabled --
-- $2: the reason, or NULL to enable. Returns the wallet as it is now.
UPDATE wallet_pool.wallets
SET disabled_at = CASE WHEN $2::text IS NULL THEN NULL ELSE coalesce(disabled_at, now()) END,
    disabled_reason = coalesce($2, '')
WHERE address = $1
RETURNING *, cooldown_until > now() AS cooling

-- list_wallets --
-- Keyset pagination on id; $2: '' (any), 'AVAILABLE', 'ALLOCATED', 'DISABLED' or 'COOLING'.
SELECT *, cooldown_until > now() AS cooling FROM wallet_pool.wallets
WHERE ($1 = '' OR network = $1)
  AND (
    $2 = ''
    OR ($2 = 'AVAILABLE' AND order_id IS NULL AND disabled_at IS NULL
        AND (cooldown_until IS NULL OR cooldown_until <= now()))
    OR ($2 = 'ALLOCATED' AND order_id IS NOT NULL)
    OR ($2 = 'DISABLED' AND order_id IS NULL AND disabled_at IS NOT NULL)
    OR ($2 = 'COOLING' AND order_id IS NULL AND disabled_at IS NULL AND cooldown_until > now())
  )
  AND id > $3
ORDER BY id
LIMIT $4

-- wallet_history --
SELECT order_id, network, assigned_at, released_at
FROM wallet_pool.assignments
WHERE address = $1
ORDER BY id
