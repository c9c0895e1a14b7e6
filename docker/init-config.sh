#!/usr/bin/env bash
# Make the host-side configuration of the compose rehearsal (docker/compose.yaml), once:
# random passwords and Airflow keys, the gateway's signing and SFTP login keys, the partner
# server's host key, Airflow connections and variables, an empty approvers file, docker/.env.
#
#   bash docker/init-config.sh [CONFIG_DIR]     (default: docker/local; EXCHANGE_ENV_FILE
#                                                  names the .env to write, docker/.env)
#
# Needs `exchange` (the repository's .venv, or on PATH), ssh-keygen and python3. Never
# overwrites a file that exists, so running it again only fills in what is missing.
# Everything it writes is for a rehearsal on one host; see docs/operators.md for production.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
config="$(realpath -m "${1:-$here/local}")"
exchange_bin="${EXCHANGE_BIN:-}"
if [ -z "$exchange_bin" ]; then
  if [ -x "$here/../.venv/bin/exchange" ]; then
    exchange_bin="$here/../.venv/bin/exchange"
  else
    exchange_bin="$(command -v exchange || true)"
  fi
fi
if [ -z "$exchange_bin" ]; then
  echo "init-config: the exchange command is missing; run 'make install' first" >&2
  exit 1
fi
command -v ssh-keygen >/dev/null || { echo "init-config: ssh-keygen is missing (apt-get install openssh-client)" >&2; exit 1; }

umask 077
random() { head -c "${1:-24}" /dev/urandom | base64 | tr -d '\n=' | tr '+/' '-_'; }
# write FILE MODE CONTENT: only if FILE is missing. A value Airflow reads through a *_CMD
# setting (`cat FILE`) is taken with its trailing newline, so those are written without one.
write() {
  if [ ! -e "$1" ]; then
    printf "${4:-%s\n}" "$3" > "$1"
    chmod "$2" "$1"
    echo "  wrote $1"
  fi
}
value() { write "$1" 0600 "$2" '%s'; }

install -d -m 0700 "$config" "$config/secrets" "$config/keys" "$config/postgres" \
  "$config/redis" "$config/partner-sftp"
install -d -m 0755 "$config/contracts" "$config/sources"

# Passwords read by the PostgreSQL and Redis containers, whose own users are not the host's:
# readable files inside folders only the host user can enter.
write "$config/postgres/postgres_password" 0644 "$(random)"
write "$config/postgres/airflow_db_password" 0644 "$(random)"
write "$config/postgres/ledger_db_password" 0644 "$(random)"
write "$config/redis/redis.conf" 0644 "requirepass $(random)
appendonly yes"
airflow_pw="$(cat "$config/postgres/airflow_db_password")"
ledger_pw="$(cat "$config/postgres/ledger_db_password")"
redis_pw="$(sed -n 's/^requirepass //p' "$config/redis/redis.conf")"

# Airflow's own secrets, read through its *_CMD settings.
value "$config/secrets/airflow_db_url" "postgresql+psycopg://airflow:${airflow_pw}@postgres:5432/airflow"
value "$config/secrets/airflow_db_url_async" "postgresql+psycopg_async://airflow:${airflow_pw}@postgres:5432/airflow"
value "$config/secrets/celery_result_backend" "db+postgresql+psycopg://airflow:${airflow_pw}@postgres:5432/airflow"
value "$config/secrets/celery_broker_url" "redis://:${redis_pw}@redis:6379/0"
value "$config/secrets/airflow_fernet_key" "$(head -c 32 /dev/urandom | base64 | tr '+/' '-_')"
value "$config/secrets/airflow_jwt_secret" "$(random 32)"
value "$config/secrets/airflow_api_secret_key" "$(random 32)"
# Any host and port: the same file works from a test or an operator's shell.
write "$config/secrets/ledger.pgpass" 0600 "*:*:exchange:exchange:${ledger_pw}"

# Keys: the gateway's signing key, its SFTP login key, the partner server's host key.
if [ ! -e "$config/keys/gateway.key" ]; then
  "$exchange_bin" keys generate --kind signing --out "$config/keys/gateway.key"
fi
if [ ! -e "$config/keys/early-help-sftp" ]; then
  ssh-keygen -q -t ed25519 -N '' -C exchange-gateway -f "$config/keys/early-help-sftp"
fi
if [ ! -e "$config/partner-sftp/ssh_host_ed25519_key" ]; then
  ssh-keygen -q -t ed25519 -N '' -C partner-sftp -f "$config/partner-sftp/ssh_host_ed25519_key"
fi
host_key="$(cut -d' ' -f1-2 "$config/partner-sftp/ssh_host_ed25519_key.pub")"
write "$config/partner-sftp/authorized_keys" 0600 "restrict $(cut -d' ' -f1-2 "$config/keys/early-help-sftp.pub")"
write "$config/keys/known_hosts" 0644 "[partner-sftp]:2222 ${host_key}"

# The sample agreement's secrets, as Airflow variables and connections and for the CLI.
disclosure="$(head -c 32 /dev/urandom | base64)"
pseudonym="$(head -c 32 /dev/urandom | base64)"
sftp='{"conn_type": "sftp", "host": "partner-sftp", "port": 2222, "login": "partner", "extra": {"key_file": "/etc/exchange/keys/early-help-sftp", "known_hosts": "/etc/exchange/keys/known_hosts"}}'
write "$config/secrets/airflow-connections.json" 0600 "{\"early_help_sftp\": ${sftp}}"
write "$config/secrets/airflow-variables.json" 0600 \
  "{\"disclosure_key_secret\": \"${disclosure}\", \"early_help_pseudonym_key_secret\": \"${pseudonym}\"}"
write "$config/secrets/exchange-secrets.json" 0600 "{\"connections\": {\"early-help-sftp\": {\"host\": \"partner-sftp\", \"port\": 2222, \"username\": \"partner\", \"key_file\": \"/etc/exchange/keys/early-help-sftp\", \"known_hosts\": \"/etc/exchange/keys/known_hosts\"}}, \"secrets\": {\"disclosure-key\": \"${disclosure}\", \"early-help-pseudonym-key\": \"${pseudonym}\"}}"

# The trust anchor starts empty: nothing runs until the operator lists the IG officers.
umask 022
write "$config/approvers.json" 0644 '{"approvers": []}'

# Containers run as the host user's id, never as root: run as root, this hands the files the
# containers read to the official image's airflow user (50000) instead.
uid="$(id -u)"
if [ "$uid" = 0 ]; then
  uid=50000
  chown -R 50000:0 "$config/secrets" "$config/keys" "$config/partner-sftp"
fi
env_file="${EXCHANGE_ENV_FILE:-$here/.env}"
if [ ! -e "$env_file" ]; then
  sed -e "s|^AIRFLOW_UID=.*|AIRFLOW_UID=$uid|" -e "s|^EXCHANGE_CONFIG_DIR=.*|EXCHANGE_CONFIG_DIR=$config|" \
    -e "s|^EXCHANGE_SOURCES_DIR=.*|EXCHANGE_SOURCES_DIR=$config/sources|" "$here/.env.example" > "$env_file"
  echo "  wrote $env_file"
fi
echo "partner host key (pin it in each contract's hostKeys): ${host_key}"
echo "next: add IG officers to $config/approvers.json, approved contracts to $config/contracts,"
echo "      then: docker-compose -f docker/compose.yaml up -d   (docs/operators.md, Containers)"
