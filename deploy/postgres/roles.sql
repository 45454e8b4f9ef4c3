-- One database role per service, each owning its own schema and nothing else.
-- psql variables: order_role, order_password, pool_role, pool_password, database.
CREATE ROLE :"order_role" LOGIN PASSWORD :'order_password';
CREATE ROLE :"pool_role" LOGIN PASSWORD :'pool_password';
CREATE SCHEMA orders AUTHORIZATION :"order_role";
CREATE SCHEMA wallet_pool AUTHORIZATION :"pool_role";
-- Nobody else may create objects in the public schema or connect by default.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"database" TO :"order_role", :"pool_role";
-- Sessions of the services find nothing outside pg_catalog unless a query names the schema
-- (every query does). Set on the roles, not at connect: PgBouncer refuses that parameter.
ALTER ROLE :"order_role" SET search_path = pg_catalog;
ALTER ROLE :"pool_role" SET search_path = pg_catalog;
-- The order service shows an event only once the synchronous standby has its sequence
-- (orders.confirm_events reads the standby's flush position in pg_stat_replication, which
-- only members of pg_read_all_stats can see).
GRANT pg_read_all_stats TO :"order_role";
