-- Deposits reported by the chain watchers, and the watermark guard.

-- Whether a deposit is late: the one rule (every verdict of the pool comes from here; the
-- order service keeps the pool's). A deposit is late when it was paid at or after the end of
-- its order's holding of the address (p_holding_end: when the order became final, or the
-- release if earlier; NULL: the order still holds it) and seen (reported) at or after it too:
-- a block's time may run ahead of the clock, so one reported before the holding ended was
-- paid before it, whatever its block says.
CREATE OR REPLACE FUNCTION wallet_pool.deposit_is_late(
    p_block_time timestamptz, p_reported_at timestamptz, p_holding_end timestamptz
)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
SELECT coalesce(p_block_time >= p_holding_end AND p_reported_at >= p_holding_end, false)
$$;

-- The pool's deposit change number an order's release leaves (ReleaseWalletResponse
-- .deposit_change): the last change of the order's deposits on the address it held, the
-- ones its release made late included; 0 when none. Volatile: called in the release's
-- statement, after release_wallet, it sees what release_wallet changed.
CREATE OR REPLACE FUNCTION wallet_pool.order_deposit_change(p_order_id uuid, p_address text)
RETURNS bigint
LANGUAGE sql VOLATILE AS $$
SELECT coalesce(max(d.change_seq), 0) FROM wallet_pool.deposits d
WHERE d.address = p_address AND d.order_id = p_order_id
$$;

-- The lifecycle part of a report (called by report_deposits, under its lock): deposits
-- recorded before move to their new block and confirmations (CONFIRMING -> CONFIRMED at the
-- required ones; a CONFIRMED one stays so), a REVERTED one reported again is CONFIRMING or
-- CONFIRMED again (the transaction was mined again); retracted ones become REVERTED. A
-- CONFIRMED deposit reverted at or below the finalized height (the network's, or the
-- report's) is a finality violation. A counted deposit reverted after its order released
-- the address holds the wallet out, for the operator. Each change takes a change number.
CREATE OR REPLACE FUNCTION wallet_pool.update_reported_deposits(
    p_network text,
    p_txids text[],
    p_kinds text[],
    p_indexes bigint[],
    p_heights bigint[],
    p_hashes text[],
    p_confirmations bigint[],
    p_finalized bigint,
    p_reverted_txids text[],
    p_reverted_kinds text[],
    p_reverted_indexes bigint[],
    p_reverted_reasons text[]
)
RETURNS TABLE (updated integer, reverted integer, violations integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    finalized bigint;
BEGIN
    SELECT greatest(m.finalized_height, nullif(p_finalized, 0)) INTO finalized
    FROM wallet_pool.chain_watermarks m WHERE m.network = p_network;
    WITH reported AS (
        -- The last of a key repeated within the report.
        SELECT DISTINCT ON (r.txid, r.kind, r.output_index) r.*
        FROM unnest(p_txids, p_kinds, p_indexes, p_heights, p_hashes, p_confirmations)
            WITH ORDINALITY AS r (txid, kind, output_index, block_height, block_hash,
                                  confirmations, pos)
        ORDER BY r.txid, r.kind, r.output_index, r.pos DESC
    ), moved AS (
        UPDATE wallet_pool.deposits d
        SET block_height = r.block_height, block_hash = r.block_hash,
            confirmations = r.confirmations,
            status = CASE WHEN d.status = 'CONFIRMED'
                            OR r.confirmations >= coalesce(d.required_confirmations, 0)
                          THEN 'CONFIRMED' ELSE 'CONFIRMING' END,
            reverted_at = NULL, revert_reason = NULL,
            change_seq = nextval('wallet_pool.deposit_changes')
        FROM reported r
        WHERE d.network = p_network AND d.txid = r.txid AND d.kind = r.kind
          AND d.output_index = r.output_index
          AND (d.block_height, d.block_hash, d.confirmations, d.status)
              IS DISTINCT FROM (r.block_height, r.block_hash, r.confirmations,
                                CASE WHEN d.status = 'CONFIRMED'
                                       OR r.confirmations >= coalesce(d.required_confirmations, 0)
                                     THEN 'CONFIRMED' ELSE 'CONFIRMING' END)
        RETURNING d.id
    )
    SELECT count(*)::integer INTO updated FROM moved;

    WITH retracted AS (
        SELECT DISTINCT ON (r.txid, r.kind, r.output_index) r.*
        FROM unnest(p_reverted_txids, p_reverted_kinds, p_reverted_indexes, p_reverted_reasons)
            AS r (txid, kind, output_index, reason)
        ORDER BY r.txid, r.kind, r.output_index
    ), gone AS (
        UPDATE wallet_pool.deposits d
        SET status = 'REVERTED', reverted_at = now(), revert_reason = r.reason,
            finality_violation = d.finality_violation
                OR (d.status = 'CONFIRMED' AND d.block_height <= coalesce(finalized, -1)),
            change_seq = nextval('wallet_pool.deposit_changes')
        FROM retracted r
        WHERE d.network = p_network AND d.txid = r.txid AND d.kind = r.kind
          AND d.output_index = r.output_index AND d.status <> 'REVERTED'
        RETURNING d.address, d.txid, d.output_index, d.amount, d.order_id, d.disposition,
                  d.finality_violation, r.reason
    ), after_release AS (
        SELECT DISTINCT ON (g.address) g.*
        FROM gone g
        JOIN wallet_pool.assignments a ON a.order_id = g.order_id AND a.address = g.address
        WHERE g.disposition = 'COUNTED' AND a.released_at IS NOT NULL
        ORDER BY g.address, g.txid
    ), held AS (
        UPDATE wallet_pool.wallets w
        SET disabled_at = coalesce(w.disabled_at, now()),
            disabled_reason = concat_ws(
                '; ', CASE WHEN w.disabled_at IS NOT NULL THEN w.disabled_reason END,
                format('reverted deposit %s:%s of %s (%s) after order %s released the address',
                       g.txid, g.output_index, g.amount, g.reason, g.order_id))
        FROM after_release g
        WHERE w.address = g.address
    )
    SELECT count(*)::integer, (count(*) FILTER (WHERE g.finality_violation))::integer
    INTO reverted, violations
    FROM gone g;
    RETURN NEXT;
END
$$;

-- One watcher report, in one round trip. Reports run one at a time (all networks): deposit
-- ids are then drawn and committed in order, so a reader of the deposits by id (the order
-- service) that has read up to an id never misses a smaller one committed later. Deposits
-- are attributed to the order whose holding interval (assignments) their block time falls
-- in; one after that order's release is late. The deposits are written before the scanned
-- height moves, so that a wallet with a late deposit is out of the pool before the
-- watermark could let it go. With the kind, the contract and the
-- asset of each deposit and its disposition decided before (p_dispositions: UNKNOWN_ASSET
-- or DUST, from the service's classification; NULL: COUNTED, or WRONG_ASSET when the order
-- holding the address expects another asset). Only COUNTED late deposits hold their wallet
-- out. The 'done' row adds counts by disposition, and `tally` by attribution and
-- disposition (for the metrics).
CREATE OR REPLACE FUNCTION wallet_pool.report_deposits(
    p_network text,
    p_scanned bigint,
    p_chain_height bigint,
    p_addresses text[],
    p_txids text[],
    p_kinds text[],
    p_indexes bigint[],
    p_contracts text[],
    p_assets text[],
    p_dispositions text[],
    p_amounts numeric[],
    p_heights bigint[],
    p_times timestamptz[],
    p_confirmations bigint[],
    p_required bigint[],
    p_hashes text[],
    p_finalized bigint,
    p_reverted_txids text[],
    p_reverted_kinds text[],
    p_reverted_indexes bigint[],
    p_reverted_reasons text[]
)
RETURNS TABLE (
    outcome text, "position" integer, known_address text, known_amount numeric,
    known_contract text, scanned_height bigint, recorded integer, late integer,
    unattributed integer, counted integer, dust integer, unknown_asset integer,
    wrong_asset integer, tally jsonb, updated integer, reverted integer,
    finality_violations integer
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
    SELECT 'conflict', r.pos::integer, d.address, d.amount, d.token_contract, NULL::bigint,
           NULL::integer, NULL::integer, NULL::integer, NULL::integer, NULL::integer,
           NULL::integer, NULL::integer, NULL::jsonb, NULL::integer, NULL::integer,
           NULL::integer
    FROM unnest(p_addresses, p_txids, p_kinds, p_indexes, p_amounts, p_contracts)
        WITH ORDINALITY AS r (address, txid, kind, output_index, amount, contract, pos)
    JOIN wallet_pool.deposits d
      ON d.network = p_network AND d.txid = r.txid AND d.kind = r.kind
         AND d.output_index = r.output_index
    WHERE d.address <> r.address OR d.amount <> r.amount
       OR d.token_contract IS DISTINCT FROM r.contract
    ORDER BY r.pos;
    IF FOUND THEN
        RETURN;
    END IF;

    WITH reported AS (
        SELECT * FROM unnest(
            p_addresses, p_txids, p_kinds, p_indexes, p_contracts, p_assets, p_dispositions,
            p_amounts, p_heights, p_times, p_confirmations, p_required, p_hashes
        ) AS r (address, txid, kind, output_index, contract, asset, disposition, amount,
                block_height, block_time, confirmations, required, block_hash)
    ), inserted AS (
        INSERT INTO wallet_pool.deposits AS d
            (network, txid, kind, output_index, token_contract, asset, disposition, address,
             amount, block_height, block_time, confirmations, required_confirmations,
             order_id, released_at, status, block_hash, change_seq)
        SELECT p_network, r.txid, r.kind, r.output_index, r.contract, r.asset,
               CASE WHEN r.disposition IS NOT NULL THEN r.disposition
                    WHEN holder.order_id IS NOT NULL
                         AND coalesce(holder.expected, '') <> r.asset THEN 'WRONG_ASSET'
                    ELSE 'COUNTED' END,
               r.address, r.amount, r.block_height, r.block_time, r.confirmations, r.required,
               holder.order_id,
               -- Reported now (the row's reported_at).
               CASE WHEN wallet_pool.deposit_is_late(r.block_time, now(), holder.released_at)
                    THEN holder.released_at END,
               CASE WHEN r.confirmations >= coalesce(r.required, 0) THEN 'CONFIRMED'
                    ELSE 'CONFIRMING' END,
               r.block_hash, nextval('wallet_pool.deposit_changes')
        FROM reported r
        LEFT JOIN LATERAL (
            SELECT a.order_id, a.released_at,
                   (SELECT o.asset FROM wallet_pool.order_assets o
                    WHERE o.order_id = a.order_id) AS expected
            FROM wallet_pool.assignments a
            WHERE a.address = r.address AND a.network = p_network
              AND a.assigned_at <= r.block_time
            ORDER BY a.id DESC
            LIMIT 1
        ) holder ON true
        ON CONFLICT (network, txid, kind, output_index) DO NOTHING
        RETURNING d.address, d.txid, d.output_index, d.amount, d.block_time, d.order_id,
                  d.released_at, d.disposition,
                  CASE WHEN d.order_id IS NULL THEN 'unattributed'
                       WHEN d.released_at IS NOT NULL THEN 'late'
                       ELSE 'on_time' END AS attribution
    ), first_late AS (
        -- Only a counted deposit holds its wallet out: dust and spam tokens never do.
        SELECT DISTINCT ON (i.address) i.*
        FROM inserted i WHERE i.released_at IS NOT NULL AND i.disposition = 'COUNTED'
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
           (count(*) FILTER (WHERE i.order_id IS NULL))::integer,
           (count(*) FILTER (WHERE i.disposition = 'COUNTED'))::integer,
           (count(*) FILTER (WHERE i.disposition = 'DUST'))::integer,
           (count(*) FILTER (WHERE i.disposition = 'UNKNOWN_ASSET'))::integer,
           (count(*) FILTER (WHERE i.disposition = 'WRONG_ASSET'))::integer,
           (SELECT coalesce(jsonb_object_agg(t.k, t.n), '{}')
            FROM (SELECT j.attribution || ':' || j.disposition AS k, count(*) AS n
                  FROM inserted j GROUP BY 1) t)
    INTO recorded, late, unattributed, counted, dust, unknown_asset, wrong_asset, tally
    FROM inserted i;

    SELECT u.updated, u.reverted, u.violations INTO updated, reverted, finality_violations
    FROM wallet_pool.update_reported_deposits(
        p_network, p_txids, p_kinds, p_indexes, p_heights, p_hashes, p_confirmations,
        p_finalized, p_reverted_txids, p_reverted_kinds, p_reverted_indexes, p_reverted_reasons
    ) AS u;

    UPDATE wallet_pool.chain_watermarks m
    SET scanned_height = p_scanned, reported_at = now(),
        finalized_height = greatest(m.finalized_height, nullif(p_finalized, 0))
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

-- The signature of the previous release (its replicas still run during a rolling update):
-- native coin deposits, counted unless dust is decided later; now through the new one.
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
LANGUAGE sql AS $$
    SELECT r.outcome, r.position, r.known_address, r.known_amount, r.scanned_height,
           r.recorded, r.late, r.unattributed
    FROM wallet_pool.report_deposits(
        p_network, p_scanned, p_chain_height, p_addresses, p_txids,
        array_fill('NATIVE'::text, ARRAY[cardinality(p_addresses)]), p_indexes,
        array_fill(NULL::text, ARRAY[cardinality(p_addresses)]),
        array_fill(''::text, ARRAY[cardinality(p_addresses)]),
        array_fill(NULL::text, ARRAY[cardinality(p_addresses)]),
        p_amounts, p_heights, p_times, p_confirmations,
        array_fill(NULL::bigint, ARRAY[cardinality(p_addresses)]),
        array_fill(NULL::text, ARRAY[cardinality(p_addresses)]),
        0, ARRAY[]::text[], ARRAY[]::text[], ARRAY[]::bigint[], ARRAY[]::text[]
    ) AS r
$$;
