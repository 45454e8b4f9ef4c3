-- begin_for_order --
-- Opens a transaction holding the order's lock, which serialises the allocation and release
-- of one order across transactions and replicas. One round trip: a simple-query script, so
-- {order_id} is formatted in; only ever from a UUID (begin_for_order in adapters.py).
BEGIN; SELECT pg_advisory_xact_lock(8201, hashtext('{order_id}'::uuid::text))

-- order_place --
-- Everything the pool has for an order, in one read: whether it was released, the wallet it
-- holds, its network's queue and its 1-based place there: the orders waiting in earlier
-- blocks of the queue (queue_blocks) and those up to it in its own block.
SELECT EXISTS (SELECT 1 FROM wallet_pool.released_orders r WHERE r.order_id = $1) AS released,
       w.address, w.network AS wallet_network, q.network AS queue_network,
       (SELECT coalesce(sum(b.waiting), 0) FROM wallet_pool.queue_blocks b
        WHERE b.network = q.network AND b.block < (q.seq >> 10))
       + (SELECT count(*) FROM wallet_pool.queue ahead
          WHERE ahead.network = q.network AND ahead.seq >= (q.seq >> 10 << 10)
            AND ahead.seq <= q.seq) AS position
FROM (SELECT) AS one
LEFT JOIN wallet_pool.wallets w ON w.order_id = $1
LEFT JOIN wallet_pool.queue q ON q.order_id = $1

-- retire_order --
-- Remembers the order as released (it never gets a wallet again) and takes it out of its
-- queue, in one statement: DELETE 1 if it was waiting.
WITH released AS (
    INSERT INTO wallet_pool.released_orders (order_id) VALUES ($1) ON CONFLICT DO NOTHING
)
DELETE FROM wallet_pool.queue WHERE order_id = $1

-- claim_wallet --
-- One statement: take the least recently released available wallet of the network,
-- unless orders are already waiting for that network (they come first); record who holds it.
-- (The queue is probed in index order: a NOT EXISTS here lets a prepared statement's
-- generic plan scan a long queue of another network from end to end.)
WITH claimed AS (
    UPDATE wallet_pool.wallets
    SET order_id = $2, allocated_at = now()
    WHERE id = (
        SELECT id FROM wallet_pool.wallets
        WHERE network = $1 AND order_id IS NULL AND disabled_at IS NULL
          AND (cooldown_until IS NULL OR cooldown_until <= now())
          AND (SELECT true FROM wallet_pool.queue q WHERE q.network = $1 ORDER BY seq LIMIT 1)
              IS NULL
        ORDER BY released_at NULLS FIRST, id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    RETURNING address, network, order_id, allocated_at
)
INSERT INTO wallet_pool.assignments (address, network, order_id, assigned_at)
SELECT address, network, order_id, allocated_at FROM claimed
RETURNING address

-- mark_as_available --
-- Guarded by the holder: frees the wallet only while this order holds it
-- ($2 = '' means whichever wallet the order holds), closes its assignment, and keeps the
-- wallet cooling for $3 seconds.
WITH freed AS (
    UPDATE wallet_pool.wallets
    SET order_id = NULL, allocated_at = NULL, released_at = now(),
        cooldown_until = CASE WHEN $3::float8 > 0 THEN now() + make_interval(secs => $3) END
    WHERE order_id = $1 AND ($2 = '' OR address = $2)
    RETURNING address, network, released_at
), closed AS (
    UPDATE wallet_pool.assignments a
    SET released_at = freed.released_at
    FROM freed
    WHERE a.order_id = $1 AND a.address = freed.address AND a.released_at IS NULL
)
SELECT address, network FROM freed

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

-- enqueue --
-- Not if a hand-off gave the order a wallet after this transaction looked: hand-offs do not
-- take the order's lock, and an order that holds a wallet must never wait as well.
-- Orders join a network's queue one at a time (the lock lasts until commit), so they commit
-- in the order of their sequence numbers, and a place read after commit counts everyone
-- ahead.
INSERT INTO wallet_pool.queue (order_id, network)
SELECT $1, $2
FROM (SELECT pg_advisory_xact_lock(8202, hashtext($2))) AS one_at_a_time
WHERE NOT EXISTS (SELECT 1 FROM wallet_pool.wallets WHERE order_id = $1)

-- queue_counts --
SELECT network, sum(waiting)::bigint AS queued
FROM wallet_pool.queue_blocks
WHERE $1 = '' OR network = $1
GROUP BY network

-- hand_off_head --
-- Gives the oldest waiting order of the network the least recently released available
-- wallet, in one statement; nothing happens unless both exist. Watchers on every replica
-- hear of it when it commits (NOTIFY is transactional).
WITH head AS (
    SELECT order_id FROM wallet_pool.queue
    WHERE network = $1
    ORDER BY seq
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), free AS (
    -- Only when someone waits: locking a wallet for nobody costs a lock and a WAL record.
    SELECT id FROM wallet_pool.wallets
    WHERE network = $1 AND order_id IS NULL AND disabled_at IS NULL
      AND (cooldown_until IS NULL OR cooldown_until <= now())
      AND EXISTS (SELECT FROM head)
    ORDER BY released_at NULLS FIRST, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), dequeued AS (
    DELETE FROM wallet_pool.queue q
    USING head, free
    WHERE q.order_id = head.order_id
    RETURNING q.order_id
), handed AS (
    UPDATE wallet_pool.wallets w
    SET order_id = dequeued.order_id, allocated_at = now()
    FROM dequeued, free
    WHERE w.id = free.id
    RETURNING w.order_id, w.address, w.network, w.allocated_at
)
INSERT INTO wallet_pool.assignments (address, network, order_id, assigned_at)
SELECT address, network, order_id, allocated_at FROM handed
RETURNING order_id, address, pg_notify(
    'wallet_pool_hand_off',
    json_build_object('order_id', order_id, 'address', address, 'network', network)::text
)

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
