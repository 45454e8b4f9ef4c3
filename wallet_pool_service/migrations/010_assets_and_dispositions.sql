-- Assets per network, deposits keyed by kind, and a disposition for every deposit: only
-- COUNTED deposits hold a wallet out of the pool (dust and spam tokens never do).

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '300s';

-- The previous release's replicas keep serving while this runs. Their readers lock the view
-- wallet_states before the tables under it; taking the locks in that order first (a view's
-- lock takes its tables' too) makes this migration wait for them, where altering a table
-- first and replacing the view last (sql/wallet_states.sql) could deadlock with a reader.
LOCK TABLE wallet_pool.wallet_states IN ACCESS EXCLUSIVE MODE;

-- The assets of each network, written by the service at start-up from ASSETS (the built-in
-- ones and the setting's): code '' is the network's coin, whose contract is NULL.
CREATE TABLE wallet_pool.assets (
    network text NOT NULL,
    code text NOT NULL,
    symbol text NOT NULL,
    contract text,
    decimals bigint NOT NULL CHECK (decimals BETWEEN 0 AND 18),
    min_deposit numeric NOT NULL CHECK (min_deposit > 0),
    confirmations bigint NOT NULL CHECK (confirmations >= 1),
    -- false: no longer in the setting (kept: deposits refer to it).
    enabled boolean NOT NULL DEFAULT true,
    PRIMARY KEY (network, code),
    CONSTRAINT assets_native_has_no_contract CHECK ((code = '') = (contract IS NULL))
);
-- squawk-ignore require-concurrent-index-creation
CREATE UNIQUE INDEX assets_contract_idx ON wallet_pool.assets (network, contract);

-- The asset each order expects, from its AllocateWallet (none: the network's coin, as every
-- order before this release).
CREATE TABLE wallet_pool.order_assets (
    order_id uuid PRIMARY KEY,
    asset text NOT NULL
);

-- kind: what moved value (NATIVE, TOKEN, INTERNAL); token_contract: as the watcher saw it
-- (canonical spelling), NULL for the coin; asset: the code the contract resolved to ('' the
-- coin, NULL unknown); disposition: what the deposit does. Rows before this release were
-- native coin deposits, all counted.
-- The checks scan the table once, under the lock this file holds anyway.
ALTER TABLE wallet_pool.deposits
    -- squawk-ignore adding-field-with-default
    ADD COLUMN kind text NOT NULL DEFAULT 'NATIVE',
    ADD COLUMN token_contract text,
    -- squawk-ignore adding-field-with-default
    ADD COLUMN asset text DEFAULT '',
    -- squawk-ignore adding-field-with-default
    ADD COLUMN disposition text NOT NULL DEFAULT 'COUNTED',
    -- The asset's confirmations when the deposit was first recorded (a policy change never
    -- re-grades history); NULL: unknown asset, or recorded before this release.
    ADD COLUMN required_confirmations bigint,
    -- Its lifecycle: CONFIRMING until its confirmations reach the required ones, then
    -- CONFIRMED; REVERTED when the watcher retracts it (a reorg, a replacement, a double
    -- spend), and CONFIRMING again if the same transaction is mined again. Rows before this
    -- release count as confirmed, as they did.
    -- squawk-ignore adding-field-with-default
    ADD COLUMN status text NOT NULL DEFAULT 'CONFIRMED',
    ADD COLUMN block_hash text,
    ADD COLUMN reverted_at timestamptz,
    ADD COLUMN revert_reason text,
    -- Reverted although CONFIRMED at or below the network's finalized height: alerted.
    -- squawk-ignore adding-field-with-default
    ADD COLUMN finality_violation boolean NOT NULL DEFAULT false,
    -- Every change of a deposit (recorded, confirmations, reverted) takes the next number,
    -- drawn under the reports' lock so that they commit in order: the order service reads
    -- the changes from a cursor (ListDepositChanges). Rows before this release: their id.
    ADD COLUMN change_seq bigint,
    -- squawk-ignore constraint-missing-not-valid
    ADD CONSTRAINT deposits_status_check
        CHECK (status IN ('CONFIRMING', 'CONFIRMED', 'REVERTED')),
    -- squawk-ignore constraint-missing-not-valid
    ADD CONSTRAINT deposits_kind_check CHECK (kind IN ('NATIVE', 'TOKEN', 'INTERNAL')),
    -- squawk-ignore constraint-missing-not-valid
    ADD CONSTRAINT deposits_disposition_check
        CHECK (disposition IN ('COUNTED', 'DUST', 'UNKNOWN_ASSET', 'WRONG_ASSET')),
    -- squawk-ignore constraint-missing-not-valid
    ADD CONSTRAINT deposits_token_has_contract
        CHECK ((kind = 'TOKEN') = (token_contract IS NOT NULL)),
    -- squawk-ignore constraint-missing-not-valid
    ADD CONSTRAINT deposits_unknown_asset_is_not_resolved
        CHECK ((asset IS NULL) = (disposition = 'UNKNOWN_ASSET'));

UPDATE wallet_pool.deposits SET change_seq = id;
CREATE SEQUENCE wallet_pool.deposit_changes;
SELECT setval('wallet_pool.deposit_changes', greatest((SELECT max(id) FROM wallet_pool.deposits), 1));
-- squawk-ignore require-concurrent-index-creation
CREATE UNIQUE INDEX deposits_change_idx ON wallet_pool.deposits (change_seq);

-- The network's finalized height as its watcher reports it (BTC: tip minus its depth; ETH:
-- the finalized checkpoint; TRON: the solidified block). NULL: never reported.
ALTER TABLE wallet_pool.chain_watermarks ADD COLUMN finalized_height bigint;

-- The key: (network, txid, kind, index within the transaction), so a native transfer and a
-- token log 0 of one transaction are two deposits. Built in this transaction (reports wait).
-- squawk-ignore require-concurrent-index-creation
CREATE UNIQUE INDEX deposits_chain_key ON wallet_pool.deposits (network, txid, kind, output_index);
-- squawk-ignore ban-drop-constraint
ALTER TABLE wallet_pool.deposits DROP CONSTRAINT deposits_key;
