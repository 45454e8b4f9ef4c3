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
