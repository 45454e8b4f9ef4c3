-- Allocation and claim: what the pool has for an order, and taking a wallet for it.

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
-- of that network already wait (they come first): its address, or NULL. Wallets the cooldown
-- or the watermark holds back are skipped.
CREATE OR REPLACE FUNCTION wallet_pool.claim_wallet(
    p_order_id uuid, p_network text, p_now timestamptz
)
RETURNS text
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    claimed_address text;
    scanned bigint := wallet_pool.scanned_height(p_network);
BEGIN
    WITH claimed AS (
        UPDATE wallet_pool.wallets
        SET order_id = p_order_id, allocated_at = now()
        WHERE id = (
            SELECT id FROM wallet_pool.wallets
            WHERE network = p_network AND wallet_pool.claimable(wallets, p_now, scanned)
              AND (SELECT true FROM wallet_pool.queue q WHERE q.network = p_network
                   ORDER BY seq LIMIT 1) IS NULL
            ORDER BY released_at NULLS FIRST, id
            LIMIT 1
            FOR UPDATE SKIP LOCKED
        )
        RETURNING address, network, order_id, allocated_at
    )
    INSERT INTO wallet_pool.assignments (address, network, order_id, assigned_at, scanned_height)
    SELECT address, network, order_id, allocated_at, scanned FROM claimed
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
CREATE OR REPLACE FUNCTION wallet_pool.allocate_wallet(p_order_id uuid, p_network text)
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

-- Everything the pool has for an order, in one read: whether it was released, the wallet it
-- holds, its network's queue and its 1-based place there: the orders waiting in earlier
-- blocks of the queue (queue_blocks) and those up to it in its own block.
CREATE OR REPLACE FUNCTION wallet_pool.order_place(p_order_id uuid)
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
