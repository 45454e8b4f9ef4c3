-- The deposits of this service's orders, as the wallet pool attributed them (learned through
-- its ListDeposits, never from its schema), and the DEPOSIT_RECEIVED event of each.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

-- pool_id: the pool's id of the deposit (the cursor of ListDeposits), so a deposit read
-- twice (by two replicas, or again after a crash) is recorded once.
CREATE TABLE orders.deposits (
    pool_id bigint PRIMARY KEY,
    order_id uuid NOT NULL REFERENCES orders.orders (id),
    txid text NOT NULL,
    output_index bigint NOT NULL,
    amount numeric NOT NULL,
    address text NOT NULL,
    block_height bigint NOT NULL,
    block_time timestamptz NOT NULL,
    -- It came after the order's wallet was released.
    late boolean NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deposits_order_idx ON orders.deposits (order_id, pool_id);

-- How far the pool's deposits have been read: one row.
CREATE TABLE orders.deposit_cursor (
    last_pool_id bigint NOT NULL,
    single boolean PRIMARY KEY DEFAULT true CHECK (single)
);
INSERT INTO orders.deposit_cursor (last_pool_id) VALUES (0);

-- The type check is replaced by one that admits more (so nothing it held is lost), and
-- checked against the log's rows under the table's lock in the runner's transaction (the log
-- is bounded by the retention; NOT VALID and a later VALIDATE would not shorten the lock
-- inside one transaction).
ALTER TABLE orders.order_events
    ADD COLUMN deposit_id bigint,
    -- squawk-ignore ban-drop-constraint
    DROP CONSTRAINT order_events_type_check,
    -- squawk-ignore constraint-missing-not-valid
    ADD CONSTRAINT order_events_type_check
        CHECK (type IN ('CREATED', 'QUEUED', 'WALLET_ASSIGNED', 'STATUS_CHANGED', 'EXPIRED',
                        'RELEASE_DELIVERED', 'DEPOSIT_RECEIVED'));

CREATE FUNCTION orders.record_deposit_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    o orders.orders;
BEGIN
    -- The order's row lock, shared: a status change in flight commits first (or waits), so
    -- the event shows the status it follows and the log's statuses never go back.
    SELECT * INTO o FROM orders.orders WHERE id = NEW.order_id FOR SHARE;
    INSERT INTO orders.order_events
        (order_id, type, status, network, wallet_address, deposit_id)
    VALUES (NEW.order_id, 'DEPOSIT_RECEIVED', o.status, o.network, NEW.address, NEW.pool_id);
    RETURN NULL;
END
$$;

CREATE TRIGGER deposits_events AFTER INSERT ON orders.deposits
FOR EACH ROW EXECUTE FUNCTION orders.record_deposit_event();
