#!/usr/bin/env bash
# Start (installing first, on a fresh Debian machine) the services the test suite talks to:
# PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth, database `test`) and RabbitMQ on 127.0.0.1:5672
# (guest/guest); and the tools some tests use (curl, python3-venv, openssl, chromium with chromedriver).
# Idempotent: services already running are left alone. Also drops the per-test databases of earlier runs.
set -euo pipefail

log() { echo "test-services: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -E "$@"; fi; }

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }

start_postgres() {
  if pg_up; then return; fi
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    log "installing PostgreSQL"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
    local hba
    hba=$(ls /etc/postgresql/*/main/pg_hba.conf | head -n1)
    # Tests connect as postgres over 127.0.0.1 without a password, as on the development machines.
    as_root sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
    # The package may have started the cluster already: make it read the new rules.
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main reload 2>/dev/null || true
  fi
  log "starting PostgreSQL"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  for _ in $(seq 1 60); do pg_up && break; sleep 1; done
  pg_up || { log "PostgreSQL did not come up"; exit 1; }
}

rabbit_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

start_rabbitmq() {
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    log "installing RabbitMQ"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq rabbitmq-server >/dev/null
  fi
  if ! rabbit_up; then
    # The node may be running with its app stopped (a test stops and starts it): start the app, else the node.
    as_root rabbitmqctl start_app >/dev/null 2>&1 || { log "starting RabbitMQ"; as_root rabbitmq-server -detached; }
    for _ in $(seq 1 90); do rabbit_up && break; sleep 1; done
    rabbit_up || { log "RabbitMQ did not come up"; exit 1; }
  fi
  as_root rabbitmqctl await_startup >/dev/null 2>&1 || true
}

# Tools the Schemathesis step and the TLS tests need (python3 with venv, curl, openssl).
need_tools() {
  local missing=()
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl) # the TLS tests make their certificates
  command -v python3 >/dev/null 2>&1 || missing+=(python3)
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# Headless Chromium and its WebDriver for the console's browser tests.
need_browser() {
  if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    log "installing chromium and chromium-driver"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
}

start_postgres
start_rabbitmq
need_tools
need_browser
psql -h 127.0.0.1 -U postgres -d postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE test"
# Per-test databases of earlier runs.
for db in $(psql -h 127.0.0.1 -U postgres -d test -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'bw\_test\_%'"); do
  psql -h 127.0.0.1 -U postgres -d test -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null 2>&1 || true
done
log "ready"
