-- The pool: a wallet belongs to one network and is either available (order_id IS NULL)
-- or held by exactly one order. One column for the holder makes two holders impossible.
CREATE TABLE wallet_pool.wallets (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    network text NOT NULL,
    address text NOT NULL,
    order_id uuid,
    allocated_at timestamptz,
    released_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT wallets_address_key UNIQUE (address),
    -- An order holds at most one wallet.
    CONSTRAINT wallets_order_id_key UNIQUE (order_id),
    CONSTRAINT wallets_holder_consistent CHECK ((order_id IS NULL) = (allocated_at IS NULL))
) WITH (fillfactor = 80);

-- Claims take the least recently released available wallet of a network.
CREATE INDEX wallets_available_idx
    ON wallet_pool.wallets (network, released_at NULLS FIRST, id)
    WHERE order_id IS NULL;

-- Orders waiting for a wallet, first come first served per network.
CREATE TABLE wallet_pool.queue (
    order_id uuid PRIMARY KEY,
    network text NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY,
    enqueued_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX queue_fifo_idx ON wallet_pool.queue (network, seq);

-- Orders whose wallet was released: they may never be given a wallet again, so a late
-- or repeated allocation cannot hand a wallet to a finished order.
CREATE TABLE wallet_pool.released_orders (
    order_id uuid PRIMARY KEY,
    released_at timestamptz NOT NULL DEFAULT now()
);
