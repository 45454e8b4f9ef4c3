-- Hand-off: a free wallet goes to the head of its network's queue.

-- Gives the oldest waiting order of the network the least recently released available
-- wallet, in one statement; nothing happens unless both exist. Watchers on every replica
-- hear of it when it commits (NOTIFY is transactional). Wallets the cooldown or the watermark
-- holds back are skipped.
CREATE OR REPLACE FUNCTION wallet_pool.hand_off_head(p_network text, p_now timestamptz)
RETURNS TABLE (order_id uuid, address text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    handed_network text;
    scanned bigint := wallet_pool.scanned_height(p_network);
BEGIN
    WITH head AS (
        SELECT order_id FROM wallet_pool.queue
        WHERE network = p_network
          AND (
              SELECT true FROM wallet_pool.wallets
              WHERE network = p_network AND wallet_pool.claimable(wallets, p_now, scanned)
              ORDER BY released_at NULLS FIRST, id
              LIMIT 1
          )
        ORDER BY seq
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    ), free AS (
        SELECT id FROM wallet_pool.wallets
        WHERE network = p_network AND wallet_pool.claimable(wallets, p_now, scanned)
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
    INSERT INTO wallet_pool.assignments (address, network, order_id, assigned_at, scanned_height)
    SELECT address, network, order_id, allocated_at, scanned FROM handed
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
CREATE OR REPLACE FUNCTION wallet_pool.hand_off_waiting(p_network text)
RETURNS TABLE (order_id uuid, address text)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(8202, hashtext(p_network));
    RETURN QUERY
    SELECT h.order_id, h.address FROM wallet_pool.hand_off_head(p_network, clock_timestamp()) AS h;
END
$$;
