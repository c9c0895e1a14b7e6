#!/usr/bin/env bash
# First start of the PostgreSQL container only (docker-entrypoint-initdb.d): one role and one
# database for Airflow's metadata, another for the gateway's audit ledger, so neither service
# can read or change the other's tables. Passwords are read from the mounted files by psql
# itself, so they never appear in a command line. (PG_SECRETS_DIR is for the offline test.)
set -euo pipefail
secrets="${PG_SECRETS_DIR:-/run/secrets}"
psql -X -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<SQL
\set airflow_password \`cat ${secrets}/airflow_db_password\`
\set ledger_password \`cat ${secrets}/ledger_db_password\`
CREATE ROLE airflow LOGIN PASSWORD :'airflow_password';
CREATE DATABASE airflow OWNER airflow;
CREATE ROLE exchange LOGIN PASSWORD :'ledger_password';
CREATE DATABASE exchange OWNER exchange;
REVOKE ALL ON DATABASE airflow FROM PUBLIC;
REVOKE ALL ON DATABASE exchange FROM PUBLIC;
SQL
