-- Compatibility (expand/contract), to be dropped with pending_releases.release_time in the
-- release after this one (README, "Changing the schema"). The previous release reads whether
-- a release is owed from pending_releases.release_time and stamps it when it delivers one
-- (before it sets orders.wallet_release); this release sets only wallet_release, the one
-- record of it. So that a release delivered by either is delivered for both, the time is
-- stamped here when wallet_release becomes RELEASED, unless the previous release stamped it.
-- (After the statement: the statement itself may write the same row, mark_release_done does.)
CREATE OR REPLACE FUNCTION orders.stamp_release_delivered() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE orders.pending_releases SET release_time = now()
    WHERE order_id = NEW.id AND release_time IS NULL;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER orders_release_delivered AFTER UPDATE OF wallet_release
ON orders.orders
FOR EACH ROW
WHEN (NEW.wallet_release = 'RELEASED' AND OLD.wallet_release <> 'RELEASED')
EXECUTE FUNCTION orders.stamp_release_delivered();

-- Compatibility, as above: the previous release delivers a release without the pool's deposit
-- change number (release_deposit_change), which the order's payment waits for; 0 lets the
-- next deposit sync step evaluate it (the cursor has passed 0).
CREATE OR REPLACE FUNCTION orders.default_release_deposit_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.release_deposit_change := coalesce(NEW.release_deposit_change, 0);
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER orders_release_deposit_change BEFORE UPDATE OF wallet_release
ON orders.orders
FOR EACH ROW
WHEN (NEW.wallet_release = 'RELEASED' AND OLD.wallet_release <> 'RELEASED')
EXECUTE FUNCTION orders.default_release_deposit_change();
