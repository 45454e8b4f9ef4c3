#!/bin/bash
# Runs once when the PostgreSQL container initialises its data directory.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v order_role=order_service -v order_password="$ORDER_DB_PASSWORD" \
  -v pool_role=wallet_pool_service -v pool_password="$WALLET_POOL_DB_PASSWORD" \
  -v database="$POSTGRES_DB" \
  -f /docker-entrypoint-initdb.d/roles.sql.in
