-- Deposits reported by the chain watchers, and the watermark guard.

-- One watcher report, in one round trip. Reports run one at a time (all networks): deposit
-- ids are then drawn and committed in order, so a reader of the deposits by id (the order
-- service) that has read up to an id never misses a smaller one committed later.
--
-- Rows: 'backwards' (scanned_height: the height already reported, which is higher; nothing
-- written), or 'conflict' per deposit already recorded with another address or amount
-- ("position": 1-based in the report; known_*: what was recorded first; nothing written),
-- or else one 'done' row with the counts. Deposits are attributed to the order whose
-- holding interval (assignments) their block time falls in; one after that order's release
-- is late, and its wallet is disabled (an operator enables it again). The deposits are
-- written before the scanned height moves, so that a wallet with a late deposit is out of
-- the pool before the watermark could let it go.
CREATE OR REPLACE FUNCTION wallet_pool.report_deposits(
    p_network text,
    p_scanned bigint,
    p_chain_height bigint,
    p_addresses text[],
    p_txids text[],
    p_indexes bigint[],
    p_amounts numeric[],
    p_heights bigint[],
    p_times timestamptz[],
    p_confirmations bigint[]
)
RETURNS TABLE (
    outcome text, "position" integer, known_address text, known_amount numeric,
    scanned_height bigint, recorded integer, late integer, unattributed integer
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    before bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(8203, 0);
    INSERT INTO wallet_pool.chain_watermarks (network) VALUES (p_network)
    ON CONFLICT (network) DO NOTHING;
    SELECT m.scanned_height INTO before FROM wallet_pool.chain_watermarks m
    WHERE m.network = p_network;
    IF before > p_scanned THEN
        outcome := 'backwards';
        scanned_height := before;
        RETURN NEXT;
        RETURN;
    END IF;

    RETURN QUERY
    SELECT 'conflict', r.pos::integer, d.address, d.amount, NULL::bigint, NULL::integer,
           NULL::integer, NULL::integer
    FROM unnest(p_addresses, p_txids, p_indexes, p_amounts)
        WITH ORDINALITY AS r (address, txid, output_index, amount, pos)
    JOIN wallet_pool.deposits d
      ON d.network = p_network AND d.txid = r.txid AND d.output_index = r.output_index
    WHERE d.address <> r.address OR d.amount <> r.amount
    ORDER BY r.pos;
    IF FOUND THEN
        RETURN;
    END IF;

    WITH reported AS (
        SELECT * FROM unnest(
            p_addresses, p_txids, p_indexes, p_amounts, p_heights, p_times, p_confirmations
        ) AS r (address, txid, output_index, amount, block_height, block_time, confirmations)
    ), inserted AS (
        INSERT INTO wallet_pool.deposits AS d
            (network, txid, output_index, address, amount, block_height, block_time,
             confirmations, order_id, released_at)
        SELECT p_network, r.txid, r.output_index, r.address, r.amount, r.block_height,
               r.block_time, r.confirmations, holder.order_id,
               CASE WHEN holder.released_at <= r.block_time THEN holder.released_at END
        FROM reported r
        LEFT JOIN LATERAL (
            SELECT a.order_id, a.released_at FROM wallet_pool.assignments a
            WHERE a.address = r.address AND a.network = p_network
              AND a.assigned_at <= r.block_time
            ORDER BY a.id DESC
            LIMIT 1
        ) holder ON true
        ON CONFLICT ON CONSTRAINT deposits_key DO NOTHING
        RETURNING d.address, d.txid, d.output_index, d.amount, d.block_time, d.order_id,
                  d.released_at
    ), first_late AS (
        SELECT DISTINCT ON (i.address) i.*
        FROM inserted i WHERE i.released_at IS NOT NULL
        ORDER BY i.address, i.block_time
    ), held_back AS (
        UPDATE wallet_pool.wallets w
        SET disabled_at = coalesce(w.disabled_at, now()),
            -- Added to a reason it was disabled for already, so that an operator enabling
            -- it again for that reason sees the late deposit too.
            disabled_reason = concat_ws(
                '; ', CASE WHEN w.disabled_at IS NOT NULL THEN w.disabled_reason END,
                format(
                    'late deposit %s:%s of %s, %s after order %s released the address',
                    l.txid, l.output_index, l.amount,
                    date_trunc('second', l.block_time - l.released_at), l.order_id
                ))
        FROM first_late l
        WHERE w.address = l.address
    )
    SELECT count(*)::integer,
           (count(*) FILTER (WHERE i.released_at IS NOT NULL))::integer,
           (count(*) FILTER (WHERE i.order_id IS NULL))::integer
    INTO recorded, late, unattributed
    FROM inserted i;

    UPDATE wallet_pool.chain_watermarks m
    SET scanned_height = p_scanned, reported_at = now()
    WHERE m.network = p_network;
    -- Wallets released since the previous report count from the chain's height now on.
    UPDATE wallet_pool.wallets w SET release_height = p_chain_height
    WHERE w.network = p_network AND w.release_height IS NULL
      AND w.reuse_confirmations IS NOT NULL AND w.order_id IS NULL;
    UPDATE wallet_pool.assignments a SET release_height = p_chain_height
    WHERE a.network = p_network AND a.release_height IS NULL
      AND a.reuse_confirmations IS NOT NULL;
    outcome := 'done';
    scanned_height := p_scanned;
    RETURN NEXT;
END
$$;
