-- Every claim and release rewrites a wallet row and every hand-off a queue row: have
-- autovacuum keep up with that churn (the defaults wait for 20% of a table to be dead), so
-- claims never wade through dead tuples, and keep statistics fresh for the planner.
ALTER TABLE wallet_pool.wallets SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 1
);
ALTER TABLE wallet_pool.queue SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 1
);
ALTER TABLE wallet_pool.released_orders SET (autovacuum_analyze_scale_factor = 0.02);
