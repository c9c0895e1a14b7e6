#!/usr/bin/env bash
# Install the system tools the gateway's demo and tests need, if missing:
# OpenSSH's sshd (the partner SFTP server), the standard `age` tool (partner-side checks),
# Chromium (the register's browser test), Redis (the Celery broker of the multi-worker test,
# which starts its own server) and docker-compose 1.29, which checks docker/compose.yaml
# offline (`docker-compose config`; no Docker engine is needed or started).
set -euo pipefail
missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v age >/dev/null 2>&1 || missing+=(age)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing system packages: ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
# The tests start their own servers: keep a package's own daemon (redis-server's) from being
# started at install, through Debian's policy-rc.d hook, removed again afterwards.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee /usr/sbin/policy-rc.d >/dev/null
  "${sudo_cmd[@]}" chmod 755 /usr/sbin/policy-rc.d
  trap '"${sudo_cmd[@]}" rm -f /usr/sbin/policy-rc.d' EXIT
fi
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
