-- Orders change status a few times each and releases are written then marked done: have
-- autovacuum keep up (the defaults wait for 20% of a table to be dead).
ALTER TABLE orders.orders SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
);
ALTER TABLE orders.pending_releases SET (
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_analyze_scale_factor = 0.02
);
