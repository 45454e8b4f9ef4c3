-- Disabled wallets are never allocated again; a held one finishes its order first.
ALTER TABLE wallet_pool.wallets
    ADD COLUMN disabled_at timestamptz,
    ADD COLUMN disabled_reason text NOT NULL DEFAULT '';

DROP INDEX wallet_pool.wallets_available_idx;
CREATE INDEX wallets_available_idx
    ON wallet_pool.wallets (network, released_at NULLS FIRST, id)
    WHERE order_id IS NULL AND disabled_at IS NULL;

CREATE INDEX wallets_listing_idx ON wallet_pool.wallets (network, id);

-- Who held which address and when, so a late deposit can be attributed to the right order.
CREATE TABLE wallet_pool.assignments (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    address text NOT NULL REFERENCES wallet_pool.wallets (address),
    network text NOT NULL,
    order_id uuid NOT NULL,
    assigned_at timestamptz NOT NULL DEFAULT now(),
    released_at timestamptz
);
CREATE INDEX assignments_address_idx ON wallet_pool.assignments (address, id);
-- At most one open assignment per order and per address.
CREATE UNIQUE INDEX assignments_open_order_key
    ON wallet_pool.assignments (order_id) WHERE released_at IS NULL;
CREATE UNIQUE INDEX assignments_open_address_key
    ON wallet_pool.assignments (address) WHERE released_at IS NULL;

-- Wallets held before this migration get their open assignment.
INSERT INTO wallet_pool.assignments (address, network, order_id, assigned_at)
SELECT address, network, order_id, allocated_at FROM wallet_pool.wallets WHERE order_id IS NOT NULL;
