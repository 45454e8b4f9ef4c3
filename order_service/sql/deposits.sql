-- The DEPOSIT_RECEIVED event of each deposit the order service records.

CREATE OR REPLACE FUNCTION orders.record_deposit_event() RETURNS trigger
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

CREATE OR REPLACE TRIGGER deposits_events AFTER INSERT ON orders.deposits
FOR EACH ROW EXECUTE FUNCTION orders.record_deposit_event();
