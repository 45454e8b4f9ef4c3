-- Release: an order gives its wallet back.

-- Remembers the order as released (it never gets a wallet again), takes it out of its queue,
-- and frees its wallet, closing the assignment and keeping the wallet cooling for p_cooldown
-- seconds. A freed wallet goes to the head of its network's queue in the same transaction,
-- when someone waits. One row: the freed wallet (NULLs when none), whether the order was
-- waiting, and the order a wallet was handed to and which (NULLs when nobody waited).
--
-- A release that names a wallet ($2 <> '') is guarded by it as a whole, not only where it
-- frees the wallet: when the order holds another wallet, or waits in a queue, nothing changes
-- (the order is not retired, keeps its wallet or its place) and the answer says what the
-- order holds (kept_address) or where it waits (kept_queue), so the caller is refused. An
-- order that holds nothing is not retired by such a release either: only a release naming no
-- wallet retires an order the pool has not served (so that its allocation, still on its way,
-- is refused when it arrives).
--
-- The release also stamps the freed wallet with the guard's confirmations at this moment,
-- and ends the holding at the time the order became final (p_final_time, from the order
-- service; NULL or later: now), so that a deposit after it is late even when the release
-- itself came later (the pool was unreachable). One already recorded in between is made late
-- here (wallet_pool.deposit_is_late, the rule reports use too), with a new change number,
-- and holds the wallet out. Reports and releases exclude each other (lock 8203, shared
-- by releases), so that neither attributes a deposit without seeing the other.
-- Only a COUNTED deposit made late by it holds the wallet out (dust and spam tokens never do).
CREATE OR REPLACE FUNCTION wallet_pool.release_wallet(
    p_order_id uuid, p_address text, p_cooldown float8, p_final_time timestamptz
)
RETURNS TABLE (
    address text, network text, dequeued boolean, handed_to uuid, handed_address text,
    kept_address text, kept_queue text
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    freed_address text;
    late_reason text;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(8203, 0);
    PERFORM pg_advisory_xact_lock(8201, hashtext(p_order_id::text));
    -- Change numbers are drawn in commit order, so that a reader of the changes that has
    -- read up to one never misses a smaller one committed later: reports draw them under
    -- lock 8203 (exclusive; releases hold it shared), and the releases that make a deposit
    -- late draw theirs one at a time, under 8204 (few: most releases skip it).
    IF EXISTS (
        SELECT 1 FROM wallet_pool.deposits d
        WHERE d.order_id = p_order_id AND d.released_at IS NULL
          AND d.address = (SELECT w.address FROM wallet_pool.wallets w
                           WHERE w.order_id = p_order_id)
          AND wallet_pool.deposit_is_late(d.block_time, d.reported_at, least(now(), p_final_time))
    ) THEN
        PERFORM pg_advisory_xact_lock(8204, 0);
    END IF;
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
        UPDATE wallet_pool.wallets w
        SET order_id = NULL, allocated_at = NULL, released_at = now(),
            cooldown_until = CASE WHEN p_cooldown > 0
                                  THEN now() + make_interval(secs => p_cooldown) END,
            -- Unknown until the next report, which stamps the chain's height it saw then:
            -- the scanned height now may lag the chain (a watcher catching up), and counting
            -- from it could let the wallet go before a late payment's block is scanned.
            release_height = NULL,
            reuse_confirmations = (SELECT m.reuse_confirmations
                                   FROM wallet_pool.chain_watermarks m
                                   WHERE m.network = w.network)
        WHERE w.order_id = p_order_id
        RETURNING w.address, w.network, w.released_at, w.release_height, w.reuse_confirmations
    ), closed AS (
        UPDATE wallet_pool.assignments a
        SET released_at = least(freed.released_at, p_final_time),
            release_height = freed.release_height,
            reuse_confirmations = freed.reuse_confirmations
        FROM freed
        WHERE a.order_id = p_order_id AND a.address = freed.address AND a.released_at IS NULL
        RETURNING a.released_at
    ), made_late AS (
        -- The order's deposits reported at or after the holding's end, judged again by the
        -- rule (deposit_is_late), each made late taking a new change number, so that the
        -- order service (ListDepositChanges) reads the new verdict.
        UPDATE wallet_pool.deposits d
        SET released_at = closed.released_at,
            change_seq = nextval('wallet_pool.deposit_changes')
        FROM freed, closed
        WHERE d.address = freed.address AND d.order_id = p_order_id
          AND d.released_at IS NULL AND d.reported_at >= closed.released_at
          AND wallet_pool.deposit_is_late(d.block_time, d.reported_at, closed.released_at)
        RETURNING d.txid, d.output_index, d.amount, d.block_time - d.released_at AS late_by,
                  d.disposition
    )
    SELECT freed.address, freed.address, freed.network,
           (SELECT format('late deposit %s:%s of %s, %s after order %s released the address',
                          l.txid, l.output_index, l.amount, date_trunc('second', l.late_by),
                          p_order_id)
            FROM made_late l WHERE l.disposition = 'COUNTED' ORDER BY l.late_by LIMIT 1)
    INTO address, freed_address, network, late_reason FROM freed;
    IF late_reason IS NOT NULL THEN
        UPDATE wallet_pool.wallets w
        SET disabled_at = coalesce(w.disabled_at, now()),
            disabled_reason = concat_ws(
                '; ', CASE WHEN w.disabled_at IS NOT NULL THEN w.disabled_reason END, late_reason)
        WHERE w.address = freed_address;
    END IF;
    IF network IS NOT NULL THEN
        SELECT h.order_id, h.address INTO handed_to, handed_address
        FROM wallet_pool.hand_off_head(network, clock_timestamp()) AS h;
    END IF;
    RETURN NEXT;
END
$$;

-- Compatibility (expand/contract): the signature releases before final_time call (migrations
-- 007 and 008 defined it; 008 and 009 dropped it, failing the previous release's replicas
-- during a rollout). The holding ends now, as it did then. Kept until no supported release
-- calls it; see README, "Changing the schema".
CREATE OR REPLACE FUNCTION wallet_pool.release_wallet(
    p_order_id uuid, p_address text, p_cooldown float8
)
RETURNS TABLE (
    address text, network text, dequeued boolean, handed_to uuid, handed_address text,
    kept_address text, kept_queue text
)
LANGUAGE sql AS $$
SELECT * FROM wallet_pool.release_wallet(p_order_id, p_address, p_cooldown, NULL::timestamptz)
$$;
