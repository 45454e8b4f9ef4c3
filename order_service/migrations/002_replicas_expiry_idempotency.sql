-- Waiting orders are leased to one replica at a time for the allocation sync.
ALTER TABLE orders.orders ADD COLUMN next_sync_time timestamptz NOT NULL DEFAULT now();
DROP INDEX orders.orders_waiting_idx;
CREATE INDEX orders_waiting_idx
    ON orders.orders (next_sync_time)
    WHERE wallet_address IS NULL AND status IN ('PENDING', 'PROCESSING');

-- The expiry loop looks for the oldest PENDING orders.
CREATE INDEX orders_pending_age_idx ON orders.orders (create_time) WHERE status = 'PENDING';

-- Idempotency keys belong to the credential that created the order, as in payment APIs:
-- two clients never see each other's orders through a shared key.
ALTER TABLE orders.orders ADD COLUMN created_by text NOT NULL DEFAULT '';
UPDATE orders.orders o SET created_by = h.actor
FROM orders.status_history h
WHERE h.order_id = o.id AND h.from_status IS NULL;
ALTER TABLE orders.orders DROP CONSTRAINT orders_request_id_key;
ALTER TABLE orders.orders ADD CONSTRAINT orders_request_key UNIQUE (created_by, request_id);
