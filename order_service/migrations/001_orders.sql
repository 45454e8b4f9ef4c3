CREATE TABLE orders.orders (
    id uuid PRIMARY KEY,
    status text NOT NULL
        CHECK (status IN ('PENDING', 'PROCESSING', 'COMPLETED', 'CANCELLED')),
    network text NOT NULL,
    amount numeric NOT NULL CHECK (amount > 0),
    -- A copy of what the wallet pool gave the order, for display and for the release call.
    wallet_address text,
    queue_position integer CHECK (queue_position > 0),
    request_id text,
    create_time timestamptz NOT NULL DEFAULT now(),
    update_time timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT orders_request_id_key UNIQUE (request_id)
);

-- No address is shown to two live orders.
CREATE UNIQUE INDEX orders_live_wallet_key
    ON orders.orders (wallet_address)
    WHERE status IN ('PENDING', 'PROCESSING');

CREATE INDEX orders_newest_idx ON orders.orders (create_time DESC, id DESC);

-- Live orders still waiting for their wallet.
CREATE INDEX orders_waiting_idx
    ON orders.orders (create_time)
    WHERE wallet_address IS NULL AND status IN ('PENDING', 'PROCESSING');

CREATE TABLE orders.status_history (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    order_id uuid NOT NULL REFERENCES orders.orders (id),
    from_status text,
    to_status text NOT NULL,
    reason text NOT NULL DEFAULT '',
    actor text NOT NULL,
    change_time timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX status_history_order_idx ON orders.status_history (order_id, id);

-- Releases owed to the wallet pool; written in the same transaction as the final status,
-- delivered after commit and retried until the pool accepts them.
CREATE TABLE orders.pending_releases (
    order_id uuid PRIMARY KEY REFERENCES orders.orders (id),
    address text NOT NULL DEFAULT '',
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_time timestamptz NOT NULL,
    last_error text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now(),
    release_time timestamptz
);
CREATE INDEX pending_releases_due_idx
    ON orders.pending_releases (next_attempt_time)
    WHERE release_time IS NULL;
