-- Addresses are stored in one spelling since ETH addresses are lower-cased on the way in
-- (AddWallets and every lookup, release included), so that one wallet cannot enter the pool
-- twice. Older rows are brought to that spelling, their assignments with them. (BTC segwit
-- addresses were only ever accepted in lower case.) Two spellings of one address already in
-- the pool stop this migration with a unique violation: an operator must disable one first.
ALTER TABLE wallet_pool.assignments DROP CONSTRAINT assignments_address_fkey;
UPDATE wallet_pool.wallets SET address = lower(address)
WHERE address ~ '^0x[0-9a-fA-F]{40}$' AND address <> lower(address);
UPDATE wallet_pool.assignments SET address = lower(address)
WHERE address ~ '^0x[0-9a-fA-F]{40}$' AND address <> lower(address);
ALTER TABLE wallet_pool.assignments ADD CONSTRAINT assignments_address_fkey
    FOREIGN KEY (address) REFERENCES wallet_pool.wallets (address) ON UPDATE CASCADE;
