-- The event log: every change an order goes through, recorded by triggers in the transaction
-- of the change itself, so no code path can change an order without its event.
--
-- Sequences are given after commit, not at insert: a sequence drawn at insert by concurrent
-- transactions can commit out of order, and a consumer that read up to 11 would never see a
-- 10 that committed later. Here a sequencer (orders.sequence_events, run on any replica
-- after each commit it hears of, and every second as a safety net) numbers the events that
-- have committed and have no number yet, one run at a time under the event_log row lock, so
-- numbers are dense (no gaps), and an event never gets a number below one that a consumer
-- may already have read.

-- What a final order did with its wallet: NOT_NEEDED while live, then PENDING until the pool
-- took the release back, then RELEASED.
ALTER TABLE orders.orders
    ADD COLUMN wallet_release text NOT NULL DEFAULT 'NOT_NEEDED'
        CHECK (wallet_release IN ('NOT_NEEDED', 'PENDING', 'RELEASED'));
UPDATE orders.orders o
SET wallet_release = CASE WHEN p.release_time IS NULL THEN 'PENDING' ELSE 'RELEASED' END
FROM orders.pending_releases p
WHERE p.order_id = o.id;

CREATE TABLE orders.order_events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Dense and in the order events became visible; NULL until the sequencer numbers it.
    sequence bigint UNIQUE,
    order_id uuid NOT NULL,
    type text NOT NULL
        CHECK (type IN ('CREATED', 'QUEUED', 'WALLET_ASSIGNED', 'STATUS_CHANGED', 'EXPIRED',
                        'RELEASE_DELIVERED')),
    status text NOT NULL,
    from_status text,
    actor text NOT NULL DEFAULT '',
    reason text NOT NULL DEFAULT '',
    network text NOT NULL,
    wallet_address text,
    queue_position integer,
    event_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_events_unsequenced_idx ON orders.order_events (id) WHERE sequence IS NULL;
CREATE INDEX order_events_order_idx ON orders.order_events (order_id, sequence);
ALTER TABLE orders.order_events SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
);

-- One row: the last sequence given, and the last one deleted by retention (consumers behind
-- it are told so).
CREATE TABLE orders.event_log (
    last_sequence bigint NOT NULL,
    deleted_through bigint NOT NULL,
    single boolean PRIMARY KEY DEFAULT true CHECK (single)
);
INSERT INTO orders.event_log (last_sequence, deleted_through) VALUES (0, 0);

-- Replicas hear of every change ('order_changes', the order id): watchers of the order look
-- again, and the sequencer runs.
CREATE FUNCTION orders.record_status_event() RETURNS trigger
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
    PERFORM pg_notify('order_changes', NEW.order_id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER status_history_events AFTER INSERT ON orders.status_history
FOR EACH ROW EXECUTE FUNCTION orders.record_status_event();

-- A wallet assigned, a first queue place, a release delivered: events. A queue place that
-- moves is only announced (watchers show it; the log would grow with every hand-off).
CREATE FUNCTION orders.record_order_event() RETURNS trigger
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
    PERFORM pg_notify('order_changes', NEW.id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER orders_events AFTER UPDATE ON orders.orders
FOR EACH ROW
WHEN (OLD.wallet_address IS DISTINCT FROM NEW.wallet_address
      OR OLD.queue_position IS DISTINCT FROM NEW.queue_position
      OR OLD.wallet_release IS DISTINCT FROM NEW.wallet_release)
EXECUTE FUNCTION orders.record_order_event();

-- Numbers the committed events that have none, oldest insert first, and announces the last
-- sequence ('order_events'). Returns how many it numbered. Runs one at a time: the row lock
-- of event_log is taken first, so its statements see every run that committed before.
CREATE FUNCTION orders.sequence_events(p_batch integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    last bigint;
    numbered integer;
BEGIN
    SELECT last_sequence INTO last FROM orders.event_log FOR UPDATE;
    WITH pending AS (
        SELECT id, last + row_number() OVER (ORDER BY id) AS sequence
        FROM (SELECT id FROM orders.order_events WHERE sequence IS NULL
              ORDER BY id LIMIT p_batch) AS batch
    )
    UPDATE orders.order_events e SET sequence = pending.sequence
    FROM pending WHERE e.id = pending.id;
    GET DIAGNOSTICS numbered = ROW_COUNT;
    IF numbered > 0 THEN
        UPDATE orders.event_log SET last_sequence = last + numbered;
        PERFORM pg_notify('order_events', (last + numbered)::text);
    END IF;
    RETURN numbered;
END
$$;

-- Deletes numbered events older than p_cutoff from the head of the log (at most p_batch),
-- and remembers how far; returns how many.
CREATE FUNCTION orders.expire_events(p_cutoff timestamptz, p_batch integer) RETURNS integer
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
