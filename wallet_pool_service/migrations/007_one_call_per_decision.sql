-- Allocation and release each in one round trip (plpgsql, whose statements' plans are
-- cached per connection, as prepared statements are; an SQL function that is not inlined
-- is planned again on every call). Allocation and release take the order's lock first; the
-- statements after it then see everything that committed before the lock was granted (under
-- READ COMMITTED a function's statements each take a new snapshot, whereas a single statement
-- keeps the one it took before it waited for the lock). The lock serialises the allocation
-- and release of one order across transactions and replicas. For the same reason, whether a
-- cooldown has ended is judged by the clock after the locks (p_now), not by now(), which is
-- when the transaction began.

-- The least recently released available wallet of the network for the order, unless orders
-- of that network already wait (they come first): its address, or NULL.
CREATE FUNCTION wallet_pool.claim_wallet(p_order_id uuid, p_network text, p_now timestamptz)
RETURNS text
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    claimed_address text;
BEGIN
    -- The queue is probed in index order: a NOT EXISTS here lets the cached generic plan
    -- scan a long queue of another network from end to end.
    WITH claimed AS (
        UPDATE wallet_pool.wallets
        SET order_id = p_order_id, allocated_at = now()
        WHERE id = (
            SELECT id FROM wallet_pool.wallets
            WHERE network = p_network AND order_id IS NULL AND disabled_at IS NULL
              AND (cooldown_until IS NULL OR cooldown_until <= p_now)
              AND (SELECT true FROM wallet_pool.queue q WHERE q.network = p_network
                   ORDER BY seq LIMIT 1) IS NULL
            ORDER BY released_at NULLS FIRST, id
            LIMIT 1
            FOR UPDATE SKIP LOCKED
        )
        RETURNING address, network, order_id, allocated_at
    )
    INSERT INTO wallet_pool.assignments (address, network, order_id, assigned_at)
    SELECT address, network, order_id, allocated_at FROM claimed
    RETURNING address INTO claimed_address;
    RETURN claimed_address;
END
$$;

-- What the pool has for the order (released, a wallet, or a place in a queue); when it has
-- nothing, a claimed wallet, or else a place at the back of the network's queue. Returns the
-- order's place as it is then, and whether it claimed or queued.
--
-- Joining a queue takes the network's lock until commit, which hand-offs after a commit
-- (hand_off_waiting) share. So a joining order is seen by every hand-off that starts before
-- it commits, and it claims once more under the lock, seeing every wallet that an earlier
-- hand-off left free: no wallet stays free beside a waiting order, with no hand-off after
-- this commit. Orders also join one at a time, so a place read here counts everyone ahead.
CREATE FUNCTION wallet_pool.allocate_wallet(p_order_id uuid, p_network text)
RETURNS TABLE (
    released boolean, address text, wallet_network text, queue_network text,
    "position" bigint, claimed boolean, enqueued boolean
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM pg_advisory_xact_lock(8201, hashtext(p_order_id::text));
    claimed := false;
    enqueued := false;
    SELECT p.released, p.address, p.wallet_network, p.queue_network, p."position"
    INTO released, address, wallet_network, queue_network, "position"
    FROM wallet_pool.order_place(p_order_id) AS p;
    IF released OR address IS NOT NULL OR queue_network IS NOT NULL THEN
        RETURN NEXT;
        RETURN;
    END IF;

    -- A claim can come back empty under concurrency although wallets are free (its snapshot
    -- chose rows that concurrent claims took meanwhile); a new statement sees those claims
    -- and picks another, so a miss is tried again before the order joins the queue; the
    -- last try is under the network's lock. (An order that arrives meanwhile may claim a
    -- wallet freed before a joining order commits: orders that overlap have no order.)
    FOR attempt IN 1..3 LOOP
        IF attempt = 3 THEN
            PERFORM pg_advisory_xact_lock(8202, hashtext(p_network));
        END IF;
        address := wallet_pool.claim_wallet(p_order_id, p_network, clock_timestamp());
        IF address IS NOT NULL THEN
            claimed := true;
            wallet_network := p_network;
            RETURN NEXT;
            RETURN;
        END IF;
    END LOOP;

    -- The NOT EXISTS is a defence: only queued orders are handed wallets, and this one was
    -- not queued when it was read under its lock.
    INSERT INTO wallet_pool.queue (order_id, network)
    SELECT p_order_id, p_network
    WHERE NOT EXISTS (SELECT 1 FROM wallet_pool.wallets WHERE order_id = p_order_id);
    enqueued := FOUND;
    -- A wallet can be free beside the queue here only when nothing handed it off yet: a
    -- cooldown that just ended, or a crash between a release and its hand-off (the sweep's
    -- cases). Serve the head at once.
    PERFORM wallet_pool.hand_off_head(p_network, clock_timestamp());
    SELECT p.released, p.address, p.wallet_network, p.queue_network, p."position"
    INTO released, address, wallet_network, queue_network, "position"
    FROM wallet_pool.order_place(p_order_id) AS p;
    RETURN NEXT;
END
$$;

-- Gives the oldest waiting order of the network the least recently released available
-- wallet, in one statement; nothing happens unless both exist. Watchers on every replica
-- hear of it when it commits (NOTIFY is transactional).
CREATE FUNCTION wallet_pool.hand_off_head(p_network text, p_now timestamptz)
RETURNS TABLE (order_id uuid, address text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    handed_network text;
BEGIN
    WITH head AS (
        -- Only when a wallet is free: a row lock costs a WAL record, and an order that joins
        -- a long queue looks here too.
        -- (The wallet is probed in index order: an EXISTS lets a generic plan scan every
        -- wallet of the table when none of the network is free.)
        SELECT order_id FROM wallet_pool.queue
        WHERE network = p_network
          AND (
              SELECT true FROM wallet_pool.wallets
              WHERE network = p_network AND order_id IS NULL AND disabled_at IS NULL
                AND (cooldown_until IS NULL OR cooldown_until <= p_now)
              ORDER BY released_at NULLS FIRST, id
              LIMIT 1
          )
        ORDER BY seq
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    ), free AS (
        -- Only when someone waits: locking a wallet for nobody costs a lock and a WAL record.
        SELECT id FROM wallet_pool.wallets
        WHERE network = p_network AND order_id IS NULL AND disabled_at IS NULL
          AND (cooldown_until IS NULL OR cooldown_until <= p_now)
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
    RETURNING order_id, address, network INTO order_id, address, handed_network;
    IF handed_network IS NOT NULL THEN
        PERFORM pg_notify(
            'wallet_pool_hand_off',
            json_build_object(
                'order_id', order_id, 'address', address, 'network', handed_network
            )::text
        );
        RETURN NEXT;
    END IF;
END
$$;

-- The hand-off after a commit that left wallets free (a release that found nobody waiting,
-- added or enabled wallets, a cooldown's end, the sweep): it first waits for orders that are
-- joining the network's queue (see allocate_wallet), so that it sees them.
CREATE FUNCTION wallet_pool.hand_off_waiting(p_network text)
RETURNS TABLE (order_id uuid, address text)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(8202, hashtext(p_network));
    RETURN QUERY
    SELECT h.order_id, h.address FROM wallet_pool.hand_off_head(p_network, clock_timestamp()) AS h;
END
$$;

-- Remembers the order as released (it never gets a wallet again), takes it out of its queue,
-- and frees its wallet guarded by the holder ($2 = '' means whichever wallet the order
-- holds), closing the assignment and keeping the wallet cooling for p_cooldown seconds.
-- A freed wallet goes to the head of its network's queue in the same transaction, when
-- someone waits. One row: the freed wallet (NULLs when none), whether the order was waiting,
-- and the order a wallet was handed to and which (NULLs when nobody waited).
CREATE FUNCTION wallet_pool.release_wallet(p_order_id uuid, p_address text, p_cooldown float8)
RETURNS TABLE (
    address text, network text, dequeued boolean, handed_to uuid, handed_address text
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM pg_advisory_xact_lock(8201, hashtext(p_order_id::text));
    INSERT INTO wallet_pool.released_orders (order_id) VALUES (p_order_id)
    ON CONFLICT DO NOTHING;
    DELETE FROM wallet_pool.queue WHERE order_id = p_order_id;
    dequeued := FOUND;
    WITH freed AS (
        UPDATE wallet_pool.wallets
        SET order_id = NULL, allocated_at = NULL, released_at = now(),
            cooldown_until = CASE WHEN p_cooldown > 0
                                  THEN now() + make_interval(secs => p_cooldown) END
        WHERE order_id = p_order_id AND (p_address = '' OR address = p_address)
        RETURNING address, network, released_at
    ), closed AS (
        UPDATE wallet_pool.assignments a
        SET released_at = freed.released_at
        FROM freed
        WHERE a.order_id = p_order_id AND a.address = freed.address AND a.released_at IS NULL
    )
    SELECT freed.address, freed.network INTO address, network FROM freed;
    IF network IS NOT NULL THEN
        SELECT h.order_id, h.address INTO handed_to, handed_address
        FROM wallet_pool.hand_off_head(network, clock_timestamp()) AS h;
    END IF;
    RETURN NEXT;
END
$$;

-- Everything the pool has for an order, in one read: whether it was released, the wallet it
-- holds, its network's queue and its 1-based place there: the orders waiting in earlier
-- blocks of the queue (queue_blocks) and those up to it in its own block.
CREATE FUNCTION wallet_pool.order_place(p_order_id uuid)
RETURNS TABLE (
    released boolean, address text, wallet_network text, queue_network text, "position" bigint
)
LANGUAGE sql STABLE AS $$
SELECT EXISTS (SELECT 1 FROM wallet_pool.released_orders r WHERE r.order_id = p_order_id),
       w.address, w.network, q.network,
       (SELECT coalesce(sum(b.waiting), 0) FROM wallet_pool.queue_blocks b
        WHERE b.network = q.network AND b.block < (q.seq >> 10))
       + (SELECT count(*) FROM wallet_pool.queue ahead
          WHERE ahead.network = q.network AND ahead.seq >= (q.seq >> 10 << 10)
            AND ahead.seq <= q.seq)
FROM (SELECT) AS one
LEFT JOIN wallet_pool.wallets w ON w.order_id = p_order_id
LEFT JOIN wallet_pool.queue q ON q.order_id = p_order_id
$$;
