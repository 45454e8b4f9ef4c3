-- create_order --
-- The order and its 'created' history row, in one statement. Nothing is returned when the
-- creator used the request_id before. Leased to its creator for $11 seconds, who asks the
-- pool about it meanwhile: the allocation loop would ask again while that call is in flight.
WITH created AS (
    INSERT INTO orders.orders
        (id, status, network, amount, request_id, created_by, asset, tolerance_under_pct,
         tolerance_under_abs, tolerance_over_pct, tolerance_over_abs, next_sync_time)
    VALUES ($1, 'PENDING', $2, $3, $4, $5, $6, $7, $8, $9, $10,
            now() + make_interval(secs => $11::float8))
    ON CONFLICT (created_by, request_id) DO NOTHING
    RETURNING *
), history AS (
    INSERT INTO orders.status_history
        (order_id, from_status, to_status, reason, actor, payment_status)
    SELECT id, NULL, status, 'created', created_by, payment_status FROM created
)
SELECT * FROM created

-- order_by_request_id --
SELECT * FROM orders.orders WHERE created_by = $1 AND request_id = $2

-- get_order --
SELECT * FROM orders.orders WHERE id = $1

-- list_orders --
-- Newest first; keyset pagination on (create_time, id). $8: only the orders that credential
-- created (a client's scope; NULL: every order).
SELECT * FROM orders.orders
WHERE ($8::text IS NULL OR created_by = $8)
  AND ($1::text IS NULL OR status = $1)
  AND ($2::text IS NULL OR network = $2)
  AND ($3::timestamptz IS NULL OR (create_time, id) < ($3, $4::uuid))
  AND ($6::timestamptz IS NULL OR create_time >= $6)
  AND ($7::timestamptz IS NULL OR create_time < $7)
ORDER BY create_time DESC, id DESC
LIMIT $5

-- change_status --
-- Compare-and-set, in one statement: moves the order from $2 to $3 only while it still has
-- $2, with its history row and, when $6 is not NULL, the release it owes (first attempted
-- right after, so the lease of $6 seconds keeps the retry loop off it meanwhile).
-- $7: the payment statuses the order must have (NULL: any); the history row records the
-- one it has. No row: another change came first, or the payment status is not one of $7.
WITH changed AS (
    UPDATE orders.orders
    SET status = $3, update_time = now(),
        wallet_release = CASE WHEN $6::float8 IS NULL THEN wallet_release ELSE 'PENDING' END
    WHERE id = $1 AND status = $2 AND ($7::text[] IS NULL OR payment_status = ANY ($7))
    RETURNING *
), history AS (
    INSERT INTO orders.status_history
        (order_id, from_status, to_status, reason, actor, payment_status)
    SELECT id, $2, $3, $4, $5, payment_status FROM changed
), owed AS (
    INSERT INTO orders.pending_releases (order_id, address, next_attempt_time)
    SELECT id, coalesce(wallet_address, ''), now() + make_interval(secs => $6::float8)
    FROM changed
    WHERE $6::float8 IS NOT NULL
    ON CONFLICT (order_id) DO NOTHING
)
SELECT * FROM changed

-- order_history --
SELECT from_status, to_status, actor, reason, change_time, payment_status
FROM orders.status_history
WHERE order_id = $1
ORDER BY id

-- set_wallet --
-- Only a live order still waiting takes the address the pool gave it.
-- Its payment window starts now: the customer is shown where to pay.
UPDATE orders.orders
SET wallet_address = $2, queue_position = NULL, update_time = now(), payment_window_start = now()
WHERE id = $1 AND wallet_address IS NULL AND status IN ('PENDING', 'PROCESSING')
RETURNING *

-- set_queue_position --
UPDATE orders.orders SET queue_position = $2
WHERE id = $1 AND wallet_address IS NULL AND status IN ('PENDING', 'PROCESSING')
  AND queue_position IS DISTINCT FROM $2
RETURNING *

-- claim_waiting_orders --
-- Leases a batch of live orders still waiting for their wallet for $2 seconds (longer than
-- a pool call's deadline), so that replicas do not ask the pool about the same order at once.
-- (= ANY (ARRAY(…)) makes the batch an init plan, so the update finds its rows by key
-- instead of joining against the whole table.)
UPDATE orders.orders o
SET next_sync_time = now() + make_interval(secs => $2)
WHERE o.id = ANY (ARRAY(
    SELECT id FROM orders.orders
    WHERE wallet_address IS NULL AND status IN ('PENDING', 'PROCESSING')
      AND next_sync_time <= now()
    ORDER BY next_sync_time
    LIMIT $1
    FOR UPDATE SKIP LOCKED
))
RETURNING o.id, o.network, o.asset

-- claim_expired_orders --
-- PENDING orders shown their address more than $1 seconds ago (or, still waiting for one,
-- created that long ago) with nothing received (no counted deposit, confirming or
-- confirmed), locked for the expiry; replicas skip each other's.
SELECT * FROM orders.orders
WHERE status = 'PENDING' AND received_confirmed = 0 AND received_pending = 0
  AND coalesce(payment_window_start, create_time) < now() - make_interval(secs => $1)
ORDER BY coalesce(payment_window_start, create_time)
LIMIT $2
FOR UPDATE SKIP LOCKED

-- expiry_due --
-- Whether claim_expired_orders would find an order (without locking any).
SELECT EXISTS (
    SELECT 1 FROM orders.orders
    WHERE status = 'PENDING' AND received_confirmed = 0 AND received_pending = 0
      AND coalesce(payment_window_start, create_time) < now() - make_interval(secs => $1)
)

-- release_pending --
-- Whether the order owes its wallet's release (orders.wallet_release is the one record of it;
-- pending_releases only schedules the attempts).
SELECT EXISTS (
    SELECT 1 FROM orders.orders WHERE id = $1 AND wallet_release = 'PENDING'
)

-- count_pending_releases --
SELECT count(*) FROM orders.orders WHERE wallet_release = 'PENDING'

-- claim_due_releases --
-- Leases a batch of due releases, so replicas never deliver the same one at once. The
-- releases owed are few (orders_release_owed_idx); their schedule says which are due.
UPDATE orders.pending_releases p
SET next_attempt_time = now() + make_interval(secs => $2)
WHERE p.order_id = ANY (ARRAY(
    SELECT s.order_id FROM orders.pending_releases s
    WHERE s.order_id = ANY (ARRAY(
        SELECT o.id FROM orders.orders o WHERE o.wallet_release = 'PENDING'
    ))
      AND s.next_attempt_time <= now()
    ORDER BY s.next_attempt_time
    LIMIT $1
    FOR UPDATE SKIP LOCKED
))
RETURNING p.order_id, p.address, p.attempts, p.create_time AS final_time

-- mark_release_done --
-- The release delivered, shown on the order (which records the event); its schedule counts
-- the attempt; the order's payment waits until the deposit cursor has passed the pool's
-- deposit change number after the release ($2; 0: the pool did not say).
WITH done AS (
    UPDATE orders.orders SET wallet_release = 'RELEASED'
    WHERE id = $1 AND wallet_release = 'PENDING'
    RETURNING id
), counted AS (
    UPDATE orders.pending_releases p SET attempts = attempts + 1, last_error = ''
    FROM done WHERE p.order_id = done.id
)
INSERT INTO orders.release_settling (order_id, deposit_change)
SELECT id, $2 FROM done
ON CONFLICT (order_id) DO UPDATE
SET deposit_change = greatest(release_settling.deposit_change, EXCLUDED.deposit_change)

-- postpone_release --
UPDATE orders.pending_releases p
SET attempts = attempts + 1,
    next_attempt_time = now() + make_interval(secs => $2),
    last_error = $3
FROM orders.orders o
WHERE p.order_id = $1 AND o.id = p.order_id AND o.wallet_release = 'PENDING'
RETURNING p.attempts

-- events_after --
-- The log after a sequence, optionally of some types only ($3: empty for all).
SELECT * FROM orders.events_shown e
WHERE e.sequence > $1 AND (cardinality($3::text[]) = 0 OR e.type = ANY ($3))
ORDER BY e.sequence
LIMIT $2

-- order_events_after --
-- One order's events after a sequence, optionally of some types only.
SELECT * FROM orders.events_shown e
WHERE e.order_id = $4 AND e.sequence > $1
  AND (cardinality($3::text[]) = 0 OR e.type = ANY ($3))
ORDER BY e.sequence
LIMIT $2

-- order_deposits --
SELECT * FROM orders.deposits WHERE order_id = $1 ORDER BY pool_id

-- lock_order_for_payment --
-- The order, locked for its payment, and whether its payment must wait ($2: how far the
-- deposit cursor has read the pool's changes): a final order's payment waits while its
-- release is owed, and after delivery until the cursor has passed the pool's change number
-- of that release, so that it never counts a deposit the pool is about to call late.
SELECT o.*,
       o.status IN ('COMPLETED', 'CANCELLED')
       AND (o.wallet_release = 'PENDING'
            OR EXISTS (SELECT 1 FROM orders.release_settling s
                       WHERE s.order_id = o.id AND s.deposit_change > $2)) AS payment_waits
FROM orders.orders o WHERE o.id = $1
FOR UPDATE OF o

-- settling_orders --
-- Final orders whose payment waited for the deposit cursor ($1) and may now be evaluated.
SELECT order_id AS id FROM orders.release_settling
WHERE deposit_change <= $1
ORDER BY deposit_change
LIMIT $2

-- settle_order --
-- The order's payment evaluated after its release: it waits no more.
DELETE FROM orders.release_settling WHERE order_id = $1 AND deposit_change <= $2

-- set_payment --
-- The payment status and amounts (the event comes from a trigger, on a change of status).
UPDATE orders.orders
SET payment_status = $2, received_confirmed = $3, received_pending = $4
WHERE id = $1
  AND (payment_status, received_confirmed, received_pending) IS DISTINCT FROM ($2, $3, $4)
RETURNING *

-- deposit_cursor --
SELECT last_pool_id, last_change FROM orders.deposit_cursor

-- record_deposits --
-- Deposits the pool attributed to orders of this service, each once (their events come
-- from triggers), updated when seen again, and the cursor moved past the page, in one
-- statement. Deposits
-- of orders this service does not know are skipped. Late is the pool's verdict (the one
-- judge, wallet_pool.deposit_is_late), kept once given: a release the pool receives after
-- the deposit makes it late there, and its next change says so here.
WITH recorded AS (
    INSERT INTO orders.deposits
        (pool_id, order_id, txid, output_index, amount, address, block_height, block_time,
         asset, disposition, token_contract, confirmations, required_confirmations, status,
         late)
    SELECT d.pool_id, d.order_id, d.txid, d.output_index, d.amount, d.address, d.block_height,
           d.block_time, d.asset, d.disposition, d.token_contract, d.confirmations,
           d.required_confirmations, d.status, d.late
    FROM unnest(
        $1::bigint[], $2::uuid[], $3::text[], $4::bigint[], $5::numeric[], $6::text[],
        $7::bigint[], $8::timestamptz[], $9::boolean[], $10::text[], $11::text[], $12::text[],
        $13::bigint[], $14::bigint[], $15::text[]
    ) AS d (pool_id, order_id, txid, output_index, amount, address, block_height,
            block_time, late, asset, disposition, token_contract, confirmations,
            required_confirmations, status)
    WHERE EXISTS (SELECT 1 FROM orders.orders o WHERE o.id = d.order_id)
    -- Seen before: its block, confirmations, status and lateness as the pool says now (a
    -- late deposit stays late).
    ON CONFLICT (pool_id) DO UPDATE
    SET block_height = EXCLUDED.block_height, confirmations = EXCLUDED.confirmations,
        status = EXCLUDED.status, late = deposits.late OR EXCLUDED.late
    WHERE (deposits.block_height, deposits.confirmations, deposits.status,
           deposits.late OR EXCLUDED.late)
          IS DISTINCT FROM (EXCLUDED.block_height, EXCLUDED.confirmations, EXCLUDED.status,
                            deposits.late)
    RETURNING pool_id, order_id
), moved AS (
    -- $16: how far the id cursor (ListDeposits), $17: the change cursor
    -- (ListDepositChanges) has read; NULL leaves it.
    UPDATE orders.deposit_cursor
    SET last_pool_id = greatest(last_pool_id, coalesce($16, last_pool_id)),
        last_change = greatest(last_change, coalesce($17, last_change))
)
SELECT DISTINCT order_id FROM recorded

-- event_log --
SELECT last_sequence, deleted_through, confirmed_through FROM orders.event_log

-- confirm_events --
-- Shows the numbered events once the synchronous standby has them; how many still wait.
SELECT orders.confirm_events()

-- sequence_events --
-- Numbers up to $1 committed events that have no sequence yet, and announces them and the
-- orders $2 (see the function).
SELECT orders.sequence_events($1, $2::text[])

-- expire_events --
-- Deletes up to $2 events older than $1 seconds from the head of the log.
SELECT orders.expire_events(now() - make_interval(secs => $1), $2)
