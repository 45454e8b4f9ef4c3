-- A release that names a wallet ($2 <> '') is guarded by it as a whole, not only where it frees
-- the wallet: when the order holds another wallet, or waits in a queue, nothing changes (the
-- order is not retired, keeps its wallet or its place) and the answer says what the order
-- holds (kept_address) or where it waits (kept_queue), so the caller is refused. An order
-- that holds nothing is not retired by such a release either: only a release naming no
-- wallet retires an order the pool has not served (so that its allocation, still on its way,
-- is refused when it arrives).
DROP FUNCTION wallet_pool.release_wallet(uuid, text, float8);

CREATE FUNCTION wallet_pool.release_wallet(p_order_id uuid, p_address text, p_cooldown float8)
RETURNS TABLE (
    address text, network text, dequeued boolean, handed_to uuid, handed_address text,
    kept_address text, kept_queue text
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM pg_advisory_xact_lock(8201, hashtext(p_order_id::text));
    dequeued := false;
    IF p_address <> '' THEN
        SELECT w.address INTO kept_address FROM wallet_pool.wallets w
        WHERE w.order_id = p_order_id;
        IF kept_address IS NULL THEN
            SELECT q.network INTO kept_queue FROM wallet_pool.queue q
            WHERE q.order_id = p_order_id;
        END IF;
        IF kept_address IS DISTINCT FROM p_address THEN
            RETURN NEXT;
            RETURN;
        END IF;
        kept_address := NULL;
    END IF;
    INSERT INTO wallet_pool.released_orders (order_id) VALUES (p_order_id)
    ON CONFLICT DO NOTHING;
    DELETE FROM wallet_pool.queue WHERE order_id = p_order_id;
    dequeued := FOUND;
    WITH freed AS (
        UPDATE wallet_pool.wallets
        SET order_id = NULL, allocated_at = NULL, released_at = now(),
            cooldown_until = CASE WHEN p_cooldown > 0
                                  THEN now() + make_interval(secs => p_cooldown) END
        WHERE order_id = p_order_id
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
