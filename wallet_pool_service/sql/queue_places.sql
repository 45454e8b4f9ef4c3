-- An order's place in its queue, kept in blocks of 1,024 (see migration 006).

CREATE OR REPLACE FUNCTION wallet_pool.count_queue_blocks() RETURNS trigger
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

CREATE OR REPLACE TRIGGER queue_blocks_count AFTER INSERT OR DELETE ON wallet_pool.queue
    FOR EACH ROW EXECUTE FUNCTION wallet_pool.count_queue_blocks();
CREATE OR REPLACE TRIGGER queue_blocks_clear AFTER TRUNCATE ON wallet_pool.queue
    FOR EACH STATEMENT EXECUTE FUNCTION wallet_pool.count_queue_blocks();
