-- The event log: triggers record every change an order goes through, in the transaction of
-- the change; the sequencer numbers them after commit (see migration 005).

-- A status written (status_history): a CREATED, EXPIRED or STATUS_CHANGED event. Only the
-- sequencer notifies (see migration 006).
CREATE OR REPLACE FUNCTION orders.record_status_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    o orders.orders;
BEGIN
    SELECT * INTO o FROM orders.orders WHERE id = NEW.order_id;
    INSERT INTO orders.order_events
        (order_id, type, status, from_status, actor, reason, network, wallet_address,
         queue_position)
    VALUES (
        NEW.order_id,
        CASE WHEN NEW.from_status IS NULL THEN 'CREATED'
             WHEN NEW.actor = 'system' AND NEW.reason = 'expired' THEN 'EXPIRED'
             ELSE 'STATUS_CHANGED' END,
        NEW.to_status, NEW.from_status, NEW.actor, NEW.reason, o.network, o.wallet_address,
        o.queue_position
    );
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER status_history_events AFTER INSERT ON orders.status_history
FOR EACH ROW EXECUTE FUNCTION orders.record_status_event();

-- A wallet assigned, a first queue place, a release delivered: events. A queue place that
-- moves is only announced (watchers show it; the log would grow with every hand-off).
CREATE OR REPLACE FUNCTION orders.record_order_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    kind text;
BEGIN
    kind := CASE
        WHEN NEW.wallet_address IS NOT NULL AND OLD.wallet_address IS NULL THEN 'WALLET_ASSIGNED'
        WHEN NEW.queue_position IS NOT NULL AND OLD.queue_position IS NULL THEN 'QUEUED'
        WHEN NEW.wallet_release = 'RELEASED' AND OLD.wallet_release <> 'RELEASED'
            THEN 'RELEASE_DELIVERED'
    END;
    IF kind IS NOT NULL THEN
        INSERT INTO orders.order_events
            (order_id, type, status, network, wallet_address, queue_position)
        VALUES (NEW.id, kind, NEW.status, NEW.network, NEW.wallet_address, NEW.queue_position);
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER orders_events AFTER UPDATE ON orders.orders
FOR EACH ROW
WHEN (OLD.wallet_address IS DISTINCT FROM NEW.wallet_address
      OR OLD.queue_position IS DISTINCT FROM NEW.queue_position
      OR OLD.wallet_release IS DISTINCT FROM NEW.wallet_release)
EXECUTE FUNCTION orders.record_order_event();

-- Numbers the committed events that have none, oldest insert first, and announces on
-- 'order_events': '<last sequence> <order id> ...' (the orders whose events it numbered and
-- p_announce), or '<last sequence> *' (every order) when that would not fit a notification.
-- Returns how many it numbered. Runs one at a time: the row lock of event_log is taken
-- first, so its statements see every run that committed before.
CREATE OR REPLACE FUNCTION orders.sequence_events(p_batch integer, p_announce text[]) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    last bigint;
    numbered integer;
    changed text[];
    payload text;
BEGIN
    SELECT last_sequence INTO last FROM orders.event_log FOR UPDATE;
    WITH pending AS (
        SELECT id, last + row_number() OVER (ORDER BY id) AS sequence
        FROM (SELECT id FROM orders.order_events WHERE sequence IS NULL
              ORDER BY id LIMIT p_batch) AS batch
    ), numbered_events AS (
        UPDATE orders.order_events e SET sequence = pending.sequence
        FROM pending WHERE e.id = pending.id
        RETURNING e.order_id
    )
    SELECT count(*), array_agg(order_id::text) INTO numbered, changed FROM numbered_events;
    IF numbered > 0 THEN
        -- With no synchronous standby configured there is nothing to wait for: what it
        -- numbers is shown at once (one commit per run). Otherwise orders.confirm_events
        -- shows it once the standby has it.
        UPDATE orders.event_log SET last_sequence = last + numbered,
            confirmed_through = CASE
                WHEN current_setting('synchronous_standby_names') = '' THEN last + numbered
                ELSE confirmed_through END;
    END IF;
    changed := ARRAY(SELECT DISTINCT unnest(coalesce(changed, '{}') || coalesce(p_announce, '{}')));
    IF cardinality(changed) > 0 THEN
        payload := (last + numbered)::text || ' ' || array_to_string(changed, ' ');
        -- A notification holds less than 8000 bytes.
        IF octet_length(payload) > 7900 THEN
            payload := (last + numbered)::text || ' *';
        END IF;
        PERFORM pg_notify('order_events', payload);
    END IF;
    RETURN numbered;
END
$$;

-- Compatibility (expand/contract): the signature of releases before migration 006, which
-- dropped it and failed their sequencer runs during a rollout. Kept until no supported
-- release calls it; see README, "Changing the schema".
CREATE OR REPLACE FUNCTION orders.sequence_events(p_batch integer) RETURNS integer
LANGUAGE sql AS $$
SELECT orders.sequence_events(p_batch, NULL::text[])
$$;

-- Shows what is numbered (confirmed_through := last_sequence) once a synchronous standby has
-- flushed the WAL past it, and announces the new end on 'order_events' ('<sequence>': log
-- watchers look again). Returns how many numbered events are still not shown (0: all are).
-- The standby's position is read from pg_stat_replication, which shows it to superusers and
-- members of pg_read_all_stats only (deploy/postgres/roles.sql grants it).
CREATE OR REPLACE FUNCTION orders.confirm_events() RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    numbered bigint;
    confirmed bigint;
    flushed pg_lsn;
BEGIN
    SELECT last_sequence, confirmed_through INTO numbered, confirmed FROM orders.event_log;
    IF confirmed >= numbered THEN
        RETURN 0;
    END IF;
    -- Read after the statement above: past the commit of every numbering that it saw.
    flushed := pg_current_wal_flush_lsn();
    IF current_setting('synchronous_standby_names') <> '' AND NOT EXISTS (
        SELECT 1 FROM pg_stat_replication
        WHERE sync_state IN ('sync', 'quorum') AND flush_lsn >= flushed
    ) THEN
        RETURN numbered - confirmed;
    END IF;
    UPDATE orders.event_log SET confirmed_through = numbered WHERE confirmed_through < numbered;
    IF FOUND THEN
        PERFORM pg_notify('order_events', numbered::text);
    END IF;
    RETURN 0;
END
$$;

-- Deletes numbered events older than p_cutoff from the head of the log (at most p_batch),
-- and remembers how far; returns how many.
CREATE OR REPLACE FUNCTION orders.expire_events(p_cutoff timestamptz, p_batch integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    done bigint;
    horizon bigint;
    deleted integer;
BEGIN
    SELECT deleted_through INTO done FROM orders.event_log FOR UPDATE;
    -- The head of the log up to (not including) its first event that is still kept.
    SELECT CASE WHEN bool_and(event_time < p_cutoff) THEN max(sequence)
                ELSE min(sequence) FILTER (WHERE event_time >= p_cutoff) - 1 END
    INTO horizon
    FROM (SELECT sequence, event_time FROM orders.order_events
          WHERE sequence > done ORDER BY sequence LIMIT p_batch) AS head;
    IF horizon IS NULL OR horizon <= done THEN
        RETURN 0;
    END IF;
    DELETE FROM orders.order_events WHERE sequence > done AND sequence <= horizon;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    UPDATE orders.event_log SET deleted_through = horizon;
    RETURN deleted;
END
$$;

-- The log as readers see it: numbered and confirmed (confirmed_through, migration 008), each
-- deposit event with its deposit. The event's own columns last, so that a column added to
-- order_events lands at the end of the view (which CREATE OR REPLACE VIEW allows).
CREATE OR REPLACE VIEW orders.events_shown AS
SELECT d.txid AS deposit_txid, d.output_index AS deposit_index,
       d.amount AS deposit_amount, d.address AS deposit_address,
       d.block_height AS deposit_block_height, d.block_time AS deposit_block_time,
       d.late AS deposit_late, d.asset AS deposit_asset, d.disposition AS deposit_disposition,
       d.token_contract AS deposit_token_contract, d.confirmations AS deposit_confirmations,
       d.required_confirmations AS deposit_required_confirmations, d.status AS deposit_status,
       e.*
FROM orders.order_events e
LEFT JOIN orders.deposits d ON d.pool_id = e.deposit_id
WHERE e.sequence <= (SELECT confirmed_through FROM orders.event_log);
