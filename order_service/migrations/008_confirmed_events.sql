-- A sequence is shown to consumers only once the synchronous standby has the commit that
-- numbered it: otherwise a failover could give the number to another event after a consumer
-- had read it. PostgreSQL keeps a commit invisible while it waits for the standby, except
-- when that wait is cut short (a cancelled or terminated session, synchronous_standby_names
-- emptied, synchronous_commit lowered): then it is visible on the primary alone. So
-- visibility is gated by a mark that advances only after the standby's flush position was
-- checked to be past the numbering's commit (orders.confirm_events).

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

-- Events up to here are shown (ListOrderEvents, WatchOrderEvents); numbered ones after it
-- wait for the standby. Starts at what was numbered: that was shown before this release.
ALTER TABLE orders.event_log ADD COLUMN confirmed_through bigint NOT NULL DEFAULT 0;
UPDATE orders.event_log SET confirmed_through = last_sequence;

-- As in 006, and: with no synchronous standby configured there is nothing to wait for, so
-- what it numbers is shown at once (one commit per run, as before).
CREATE OR REPLACE FUNCTION orders.sequence_events(p_batch integer, p_announce text[])
RETURNS integer
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

-- Shows what is numbered (confirmed_through := last_sequence) once a synchronous standby has
-- flushed the WAL past it, and announces the new end on 'order_events' ('<sequence>': log
-- watchers look again). Returns how many numbered events are still not shown (0: all are).
-- The standby's position is read from pg_stat_replication, which shows it to superusers and
-- members of pg_read_all_stats only (deploy/postgres/roles.sql grants it).
CREATE FUNCTION orders.confirm_events() RETURNS bigint
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
