-- Deposits reported by the chain watchers, attributed from the address history, and the
-- watermark guard: a released wallet of a guarded network is given out again only once the
-- network's watcher has scanned past the height at its release plus the network's reuse
-- confirmations, so that a late deposit from its last customer is seen (and the wallet held
-- back) before anyone else can be given the address.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '300s';

-- Per network: the guard's setting (written by the service at start-up from
-- WALLET_REUSE_CONFIRMATIONS; NULL: off) and how far its watcher has scanned (NULL: never
-- reported).
CREATE TABLE wallet_pool.chain_watermarks (
    network text PRIMARY KEY,
    reuse_confirmations bigint CHECK (reuse_confirmations >= 0),
    scanned_height bigint CHECK (scanned_height >= 0),
    reported_at timestamptz
);

-- The height of a release is the chain's height in the first watcher report after it (NULL
-- until then), and the guard's confirmations are stamped at the release (NULL: not guarded).
-- reuse_height is the scanned height from which the wallet may be given out again; until
-- that report it is unknown (2^62).
-- The generated column rewrites the wallets table under its exclusive lock (about a second
-- per 100,000 wallets): claims wait meanwhile, so deploy this release in a quiet moment.
-- The partial index is built in the same transaction (CONCURRENTLY cannot run in one); it
-- holds only wallets released since the last watcher report.
ALTER TABLE wallet_pool.wallets
    ADD COLUMN release_height bigint,
    ADD COLUMN reuse_confirmations bigint,
    -- squawk-ignore adding-field-with-default
    ADD COLUMN reuse_height bigint GENERATED ALWAYS AS (
        CASE WHEN reuse_confirmations IS NOT NULL
             THEN coalesce(release_height, 4611686018427387904) + reuse_confirmations END
    ) STORED;
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX wallets_unknown_release_height_idx ON wallet_pool.wallets (network)
    WHERE release_height IS NULL AND reuse_confirmations IS NOT NULL;

-- The address history keeps the same facts, so that reuse can be checked afterwards
-- (tests/invariants.py): the scanned height a holder got the wallet at, and its release's
-- height and confirmations.
ALTER TABLE wallet_pool.assignments
    ADD COLUMN scanned_height bigint,
    ADD COLUMN release_height bigint,
    ADD COLUMN reuse_confirmations bigint;
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX assignments_unknown_release_height_idx ON wallet_pool.assignments (network)
    WHERE release_height IS NULL AND reuse_confirmations IS NOT NULL;

-- Every deposit a watcher reported, once per (network, txid, index). order_id: the order it
-- is attributed to (NULL: unattributed); released_at: set for a late deposit, the release of
-- that order it came after.
CREATE TABLE wallet_pool.deposits (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    network text NOT NULL,
    txid text NOT NULL,
    output_index bigint NOT NULL CHECK (output_index >= 0),
    address text NOT NULL,
    amount numeric NOT NULL CHECK (amount > 0),
    block_height bigint NOT NULL CHECK (block_height >= 0),
    block_time timestamptz NOT NULL,
    confirmations bigint NOT NULL CHECK (confirmations >= 0),
    reported_at timestamptz NOT NULL DEFAULT now(),
    order_id uuid,
    released_at timestamptz,
    CONSTRAINT deposits_key UNIQUE (network, txid, output_index),
    CONSTRAINT deposits_late_has_holder CHECK (released_at IS NULL OR order_id IS NOT NULL)
);
CREATE INDEX deposits_late_idx ON wallet_pool.deposits (id) WHERE released_at IS NOT NULL;
CREATE INDEX deposits_address_idx ON wallet_pool.deposits (address);

-- Wallets with what holds them back: the cooldown (cooling_down) or the watermark
-- (held_by_watermark: its reuse height not reached, or the watcher never reported).
CREATE VIEW wallet_pool.wallet_states AS
SELECT w.*,
       coalesce(w.cooldown_until > now(), false) AS cooling_down,
       coalesce(w.reuse_height > m.scanned_height, w.reuse_height IS NOT NULL)
           AS held_by_watermark,
       m.scanned_height
FROM wallet_pool.wallets w
LEFT JOIN wallet_pool.chain_watermarks m ON m.network = w.network;

-- The claim, as before, also skips wallets the watermark holds back.
CREATE OR REPLACE FUNCTION wallet_pool.claim_wallet(
    p_order_id uuid, p_network text, p_now timestamptz
)
RETURNS text
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    claimed_address text;
    scanned bigint;
BEGIN
    SELECT m.scanned_height INTO scanned FROM wallet_pool.chain_watermarks m
    WHERE m.network = p_network;
    WITH claimed AS (
        UPDATE wallet_pool.wallets
        SET order_id = p_order_id, allocated_at = now()
        WHERE id = (
            SELECT id FROM wallet_pool.wallets
            WHERE network = p_network AND order_id IS NULL AND disabled_at IS NULL
              AND (cooldown_until IS NULL OR cooldown_until <= p_now)
              AND (reuse_height IS NULL OR reuse_height <= scanned)
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

-- The hand-off, as before, also skips wallets the watermark holds back.
CREATE OR REPLACE FUNCTION wallet_pool.hand_off_head(p_network text, p_now timestamptz)
RETURNS TABLE (order_id uuid, address text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    handed_network text;
    scanned bigint;
BEGIN
    SELECT m.scanned_height INTO scanned FROM wallet_pool.chain_watermarks m
    WHERE m.network = p_network;
    WITH head AS (
        SELECT order_id FROM wallet_pool.queue
        WHERE network = p_network
          AND (
              SELECT true FROM wallet_pool.wallets
              WHERE network = p_network AND order_id IS NULL AND disabled_at IS NULL
                AND (cooldown_until IS NULL OR cooldown_until <= p_now)
                AND (reuse_height IS NULL OR reuse_height <= scanned)
              ORDER BY released_at NULLS FIRST, id
              LIMIT 1
          )
        ORDER BY seq
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    ), free AS (
        SELECT id FROM wallet_pool.wallets
        WHERE network = p_network AND order_id IS NULL AND disabled_at IS NULL
          AND (cooldown_until IS NULL OR cooldown_until <= p_now)
          AND (reuse_height IS NULL OR reuse_height <= scanned)
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

-- The release, as before, also stamps the freed wallet with the guard's confirmations at
-- this moment, and ends the holding at the time the order became final (p_final_time, from
-- the order service; NULL or later: now), so that a deposit after it is late even when the
-- release itself came later (the pool was unreachable). One already recorded in between is
-- made late here, and holds the wallet out. Reports and releases exclude each other (lock
-- 8203, shared by releases), so that neither attributes a deposit without seeing the other.
-- The old signature is called by this service's own code only; a replica of the previous
-- release still running during a rolling update fails its releases until replaced (the
-- order service retries them).
-- squawk-ignore ban-drop-function
DROP FUNCTION wallet_pool.release_wallet(uuid, text, float8);
CREATE FUNCTION wallet_pool.release_wallet(
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
        UPDATE wallet_pool.deposits d SET released_at = closed.released_at
        FROM freed, closed
        -- Seen after the holding ended (a block's time may run ahead of the clock: one
        -- reported before the order became final was paid before it).
        WHERE d.address = freed.address AND d.order_id = p_order_id
          AND d.released_at IS NULL AND d.block_time >= closed.released_at
          AND d.reported_at >= closed.released_at
        RETURNING d.txid, d.output_index, d.amount, d.block_time - d.released_at AS late_by
    )
    SELECT freed.address, freed.address, freed.network,
           (SELECT format('late deposit %s:%s of %s, %s after order %s released the address',
                          l.txid, l.output_index, l.amount, date_trunc('second', l.late_by),
                          p_order_id)
            FROM made_late l ORDER BY l.late_by LIMIT 1)
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
CREATE FUNCTION wallet_pool.report_deposits(
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

ALTER TABLE wallet_pool.deposits SET (autovacuum_analyze_scale_factor = 0.02);
