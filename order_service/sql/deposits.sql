-- The DEPOSIT_RECEIVED event of each deposit the order service records.

-- DEPOSIT_RECEIVED when a deposit is recorded; DEPOSIT_CONFIRMED and DEPOSIT_REVERTED as its
-- status changes (a reverted one mined again is received again).
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
    VALUES (NEW.order_id,
            CASE WHEN TG_OP = 'INSERT' THEN 'DEPOSIT_RECEIVED'
                 WHEN NEW.status = 'CONFIRMED' THEN 'DEPOSIT_CONFIRMED'
                 WHEN NEW.status = 'REVERTED' THEN 'DEPOSIT_REVERTED'
                 ELSE 'DEPOSIT_RECEIVED' END,
            o.status, o.network, NEW.address, NEW.pool_id);
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER deposits_events AFTER INSERT ON orders.deposits
FOR EACH ROW EXECUTE FUNCTION orders.record_deposit_event();

CREATE OR REPLACE TRIGGER deposits_status_events AFTER UPDATE OF status ON orders.deposits
FOR EACH ROW
WHEN (OLD.status IS DISTINCT FROM NEW.status)
EXECUTE FUNCTION orders.record_deposit_event();

-- The status trigger's own function until this file took both (never released).
DROP FUNCTION IF EXISTS orders.record_deposit_status_event();

-- One event per change of the payment status, never for the same status again (more money
-- after PAID raises the amounts; it may move the status to OVERPAID once).
CREATE OR REPLACE FUNCTION orders.record_payment_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO orders.order_events
        (order_id, type, status, network, wallet_address, payment_status,
         from_payment_status, received_confirmed, received_pending)
    VALUES (NEW.id, 'PAYMENT_STATUS_CHANGED', NEW.status, NEW.network, NEW.wallet_address,
            NEW.payment_status, OLD.payment_status, NEW.received_confirmed,
            NEW.received_pending);
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER orders_payment_events AFTER UPDATE OF payment_status ON orders.orders
FOR EACH ROW
WHEN (OLD.payment_status IS DISTINCT FROM NEW.payment_status)
EXECUTE FUNCTION orders.record_payment_event();
