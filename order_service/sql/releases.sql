-- Compatibility (expand/contract), to be dropped with pending_releases.release_time in the
-- release after this one (README, "Changing the schema"). The previous release reads whether
-- a release is owed from pending_releases.release_time and stamps it when it delivers one
-- (before it sets orders.wallet_release); this release sets only wallet_release, the one
-- record of it. So that a release delivered by either is delivered for both, the time is
-- stamped here when wallet_release becomes RELEASED, unless the previous release stamped it.
-- And a delivery by the previous release, which does not know the pool's deposit change
-- number the order's payment waits for (release_settling), gets 0: the next deposit sync step
-- evaluates the payment. (After the statement, which may write the same rows:
-- mark_release_done does.)
CREATE OR REPLACE FUNCTION orders.stamp_release_delivered() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE orders.pending_releases SET release_time = now()
    WHERE order_id = NEW.id AND release_time IS NULL;
    INSERT INTO orders.release_settling (order_id, deposit_change) VALUES (NEW.id, 0)
    ON CONFLICT (order_id) DO NOTHING;
    RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER orders_release_delivered AFTER UPDATE OF wallet_release
ON orders.orders
FOR EACH ROW
WHEN (NEW.wallet_release = 'RELEASED' AND OLD.wallet_release <> 'RELEASED')
EXECUTE FUNCTION orders.stamp_release_delivered();
