-- A sequence is shown to consumers only once the synchronous standby has the commit that
-- numbered it: otherwise a failover could give the number to another event after a consumer
-- had read it. PostgreSQL keeps a commit invisible while it waits for the standby, except
-- when that wait is cut short (a cancelled or terminated session, synchronous_standby_names
-- emptied, synchronous_commit lowered): then it is visible on the primary alone. So
-- visibility is gated by a mark that advances only after the standby's flush position was
-- checked to be past the numbering's commit (orders.confirm_events).

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '60s';

-- Events up to here are shown (ListOrderEvents, WatchOrderEvents); numbered ones after it
-- wait for the standby. Starts at what was numbered: that was shown before this release.
ALTER TABLE orders.event_log ADD COLUMN confirmed_through bigint NOT NULL DEFAULT 0;
UPDATE orders.event_log SET confirmed_through = last_sequence;
