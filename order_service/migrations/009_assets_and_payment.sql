-- The asset an order is paid in, and what the pool made of each deposit (only COUNTED
-- deposits of the order's asset count toward its payment).

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

-- '' is the network's coin: every order before this release.
ALTER TABLE orders.orders
    -- squawk-ignore adding-field-with-default
    ADD COLUMN asset text NOT NULL DEFAULT '';

-- As the pool classified them (asset NULL: an unknown token); rows before this release were
-- counted coin deposits.
ALTER TABLE orders.deposits
    -- squawk-ignore adding-field-with-default
    ADD COLUMN asset text DEFAULT '',
    -- squawk-ignore adding-field-with-default
    ADD COLUMN disposition text NOT NULL DEFAULT 'COUNTED',
    ADD COLUMN token_contract text,
    -- squawk-ignore constraint-missing-not-valid
    ADD CONSTRAINT deposits_disposition_check
        CHECK (disposition IN ('COUNTED', 'DUST', 'UNKNOWN_ASSET', 'WRONG_ASSET'));

-- What the pool said of each deposit's confirmations, and what its asset needs (NULL:
-- recorded before this release, taken as confirmed).
ALTER TABLE orders.deposits
    ADD COLUMN confirmations bigint,
    ADD COLUMN required_confirmations bigint;

-- The payment status (order_service/payment.py: a function of the counted, on-time deposits
-- of the order's asset and the tolerance below), stored for reading; the tolerance is the
-- settings' snapshot at creation (0 for orders before this release).
ALTER TABLE orders.orders
    -- squawk-ignore adding-field-with-default
    ADD COLUMN payment_status text NOT NULL DEFAULT 'UNPAID',
    -- squawk-ignore adding-field-with-default
    ADD COLUMN received_confirmed numeric NOT NULL DEFAULT 0,
    -- squawk-ignore adding-field-with-default
    ADD COLUMN received_pending numeric NOT NULL DEFAULT 0,
    -- squawk-ignore adding-field-with-default
    ADD COLUMN tolerance_under_pct numeric NOT NULL DEFAULT 0,
    -- squawk-ignore adding-field-with-default
    ADD COLUMN tolerance_under_abs numeric NOT NULL DEFAULT 0,
    -- squawk-ignore adding-field-with-default
    ADD COLUMN tolerance_over_pct numeric NOT NULL DEFAULT 0,
    -- squawk-ignore adding-field-with-default
    ADD COLUMN tolerance_over_abs numeric NOT NULL DEFAULT 0,
    -- squawk-ignore constraint-missing-not-valid
    ADD CONSTRAINT orders_payment_status_check
        CHECK (payment_status IN ('UNPAID', 'PARTIAL', 'PAID', 'OVERPAID'));

-- PAYMENT_STATUS_CHANGED: from, to, and the amounts at that moment. The type check is
-- replaced by one that admits more (as in 007).
ALTER TABLE orders.order_events
    ADD COLUMN payment_status text,
    ADD COLUMN from_payment_status text,
    ADD COLUMN received_confirmed numeric,
    ADD COLUMN received_pending numeric,
    -- squawk-ignore ban-drop-constraint
    DROP CONSTRAINT order_events_type_check,
    -- squawk-ignore constraint-missing-not-valid
    ADD CONSTRAINT order_events_type_check
        CHECK (type IN ('CREATED', 'QUEUED', 'WALLET_ASSIGNED', 'STATUS_CHANGED', 'EXPIRED',
                        'RELEASE_DELIVERED', 'DEPOSIT_RECEIVED', 'PAYMENT_STATUS_CHANGED'));


-- The payment window starts when the order is shown its address (set with it). An order
-- without one (still queued, or before this release) counts from its creation, as before:
-- nobody can have paid it. The expiry reads the start through this index, which holds only
-- PENDING orders with nothing received: an order with a counted deposit (confirming or
-- confirmed) leaves it, and is never expired.
ALTER TABLE orders.orders ADD COLUMN payment_window_start timestamptz;
-- squawk-ignore require-concurrent-index-creation
CREATE INDEX orders_payment_window_idx
    ON orders.orders ((coalesce(payment_window_start, create_time)))
    WHERE status = 'PENDING' AND received_confirmed = 0 AND received_pending = 0;

-- Each deposit's status as the pool last said (CONFIRMING, CONFIRMED, REVERTED), followed
-- through the pool's change cursor (ListDepositChanges), which for the deposits recorded
-- before this release is their id: the cursor starts where the id cursor stood.
ALTER TABLE orders.deposits
    -- squawk-ignore adding-field-with-default
    ADD COLUMN status text NOT NULL DEFAULT 'CONFIRMED',
    -- squawk-ignore constraint-missing-not-valid
    ADD CONSTRAINT deposits_status_check
        CHECK (status IN ('CONFIRMING', 'CONFIRMED', 'REVERTED'));
ALTER TABLE orders.deposit_cursor
    -- squawk-ignore adding-field-with-default
    ADD COLUMN last_change bigint NOT NULL DEFAULT 0;
UPDATE orders.deposit_cursor SET last_change = last_pool_id;

ALTER TABLE orders.order_events
    -- squawk-ignore ban-drop-constraint
    DROP CONSTRAINT order_events_type_check,
    -- squawk-ignore constraint-missing-not-valid
    ADD CONSTRAINT order_events_type_check
        CHECK (type IN ('CREATED', 'QUEUED', 'WALLET_ASSIGNED', 'STATUS_CHANGED', 'EXPIRED',
                        'RELEASE_DELIVERED', 'DEPOSIT_RECEIVED', 'PAYMENT_STATUS_CHANGED',
                        'DEPOSIT_CONFIRMED', 'DEPOSIT_REVERTED'));


-- The payment status each change found the order in (a COMPLETED order not PAID shows it in
-- its history); NULL for changes before this release.
ALTER TABLE orders.status_history ADD COLUMN payment_status text;
