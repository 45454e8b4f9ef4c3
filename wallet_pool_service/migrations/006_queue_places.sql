-- An order's place in its queue without counting everyone ahead of it: the queue is cut into
-- blocks of 1,024 sequence numbers, and each block keeps how many of a network's orders wait
-- in it. A place is then the waiting counts of the earlier blocks plus a count within one
-- block, however long the queue. Kept by triggers, in the transaction that changes the queue
-- (whose rows are inserted and deleted, never updated).
CREATE TABLE wallet_pool.queue_blocks (
    network text NOT NULL,
    block bigint NOT NULL,
    waiting integer NOT NULL CHECK (waiting >= 0),
    PRIMARY KEY (network, block)
);

CREATE FUNCTION wallet_pool.count_queue_blocks() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    left_waiting integer;
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO wallet_pool.queue_blocks AS b (network, block, waiting)
        VALUES (NEW.network, NEW.seq >> 10, 1)
        ON CONFLICT (network, block) DO UPDATE SET waiting = b.waiting + 1;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE wallet_pool.queue_blocks SET waiting = waiting - 1
        WHERE network = OLD.network AND block = OLD.seq >> 10
        RETURNING waiting INTO left_waiting;
        -- An emptied block goes, so that the blocks ahead of a place stay few.
        IF left_waiting = 0 THEN
            DELETE FROM wallet_pool.queue_blocks
            WHERE network = OLD.network AND block = OLD.seq >> 10;
        END IF;
    ELSE
        DELETE FROM wallet_pool.queue_blocks;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER queue_blocks_count AFTER INSERT OR DELETE ON wallet_pool.queue
    FOR EACH ROW EXECUTE FUNCTION wallet_pool.count_queue_blocks();
CREATE TRIGGER queue_blocks_clear AFTER TRUNCATE ON wallet_pool.queue
    FOR EACH STATEMENT EXECUTE FUNCTION wallet_pool.count_queue_blocks();
INSERT INTO wallet_pool.queue_blocks (network, block, waiting)
SELECT network, seq >> 10, count(*) FROM wallet_pool.queue GROUP BY 1, 2;

ALTER TABLE wallet_pool.queue_blocks SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 1
);
