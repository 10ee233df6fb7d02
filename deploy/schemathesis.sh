#!/usr/bin/env bash
# Run Schemathesis (from PyPI, installed into a venv on first use) against a worker started here on SQLite.
# Fails when Schemathesis finds a server error or a response that breaks /openapi.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/billing-worker/target}"
venv="$HOME/.cache/billing-worker/venv"
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "schemathesis==4.32.5"
fi
cargo build --quiet
bin="$CARGO_TARGET_DIR/debug/billing-worker"
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export DATABASE_URL="sqlite:$work/billing.db" BILLING_LISTEN="127.0.0.1:$port" STRIPE_WEBHOOK_SECRET=whsec_schemathesis RUST_LOG=warn
key=$("$bin" keys create --scope admin --name schemathesis 2>/dev/null)
"$bin" > "$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done
api() { curl -sf -X POST -H "Authorization: Bearer $key" -H 'Content-Type: application/json' "http://127.0.0.1:$port$1" -d "$2" >/dev/null; }
api /v1/commands '{"type":"account.created","id":"st-acc","account_id":"acc"}'
api /v1/commands '{"type":"package.purchased","id":"st-pkg","account_id":"acc","package":"credits_500"}'
api /v1/accounts/acc/members '{"user_id":"ann"}'
# On the business plan, so the usage report (analytics only) is reached too.
python3 deploy/schemathesis_seed.py "http://127.0.0.1:$port" whsec_schemathesis acc
status=0
"$venv/bin/schemathesis" --config-file deploy/schemathesis.toml run "http://127.0.0.1:$port/openapi.json" \
  -H "Authorization: Bearer $key" --max-examples "${SCHEMATHESIS_EXAMPLES:-40}" --generation-deterministic || status=$?
# The metrics the run left, linted by promtool (fetched by deploy/check-deploy.sh, which .ci/run runs first):
# the exposition format is written by hand in src/metrics.rs, so a scraper's parser checks it.
promtool="${XDG_CACHE_HOME:-$HOME/.cache}/billing-worker/promtool/root/usr/bin/promtool"
curl -sf "http://127.0.0.1:$port/metrics" > "$work/metrics.txt" || { echo "GET /metrics failed"; status=1; }
if [ -x "$promtool" ]; then
  "$promtool" check metrics < "$work/metrics.txt" || { echo "promtool check metrics: /metrics is not valid"; status=1; }
  echo "promtool check metrics: $(grep -c '^# TYPE' "$work/metrics.txt") metric families valid"
fi
if grep -q "panicked" "$work/server.log"; then
  echo "the server panicked:"; grep -A3 panicked "$work/server.log"; status=1
fi
exit $status
