#!/usr/bin/env bash
# Check the deployment files without a container runtime or a cluster:
#   1. systemd-analyze verify of the unit (with ExecStart pointed at /bin/true); any warning fails;
#   2. every *.yaml / *.yml under deploy/ parses (all documents), with PyYAML (from a venv when missing);
#   3. promtool check rules and promtool test rules for the alerts (promtool from Debian's prometheus package,
#      unpacked into a cache folder, not installed).
# Idempotent: the venv and promtool are kept in ${XDG_CACHE_HOME:-~/.cache}/billing-worker.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "check-deploy: $*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -E "$@"; fi; }

cache="${XDG_CACHE_HOME:-$HOME/.cache}/billing-worker"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

check_systemd() {
  local unit=deploy/systemd/billing-worker.service out
  command -v systemd-analyze >/dev/null 2>&1 || fail "systemd-analyze not found (Debian package systemd)"
  cp deploy/systemd/env.example "$work/env"
  # A binary that exists and an environment file that exists; the rest of the unit is verified as written.
  sed -e 's#^ExecStart=/usr/local/bin/billing-worker#ExecStart=/bin/true#' \
      -e "s#^EnvironmentFile=.*#EnvironmentFile=$work/env#" "$unit" > "$work/billing-worker.service"
  grep -q '^ExecStart=/bin/true serve$' "$work/billing-worker.service" || fail "$unit: ExecStart not as expected"
  out=$(systemd-analyze verify "$work/billing-worker.service" 2>&1) || fail "systemd-analyze verify: $out"
  # verify exits 0 on unknown keys and bad values, only printing them: any line about the unit fails.
  if grep -F 'billing-worker.service' <<<"$out"; then fail "$unit: systemd-analyze verify warned (above)"; fi
  log "systemd unit verified"
}

python_with_yaml() {
  if python3 -c 'import yaml' >/dev/null 2>&1; then echo python3; return; fi
  local venv="$cache/venv-deploy"
  if ! "$venv/bin/python" -c 'import yaml' >/dev/null 2>&1; then
    log "installing PyYAML into $venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q pyyaml >&2
  fi
  echo "$venv/bin/python"
}

check_yaml() {
  local py
  py=$(python_with_yaml)
  find deploy -type f \( -name '*.yaml' -o -name '*.yml' \) -print0 | sort -z | xargs -0 "$py" -c '
import sys, yaml
bad = 0
for path in sys.argv[1:]:
    try:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d is not None]
        if not docs:
            raise ValueError("no document")
        print(f"check-deploy: yaml ok: {path} ({len(docs)} document(s))", file=sys.stderr)
    except Exception as e:
        print(f"check-deploy: FAIL: {path}: {e}", file=sys.stderr)
        bad += 1
sys.exit(1 if bad else 0)
' || fail "YAML does not parse (above)"
}

promtool_path() {
  local dir="$cache/promtool" bin
  bin="$dir/root/usr/bin/promtool"
  if [ ! -x "$bin" ]; then
    log "fetching promtool from Debian's prometheus package into $dir"
    mkdir -p "$dir"
    if ! apt-cache show prometheus >/dev/null 2>&1; then as_root apt-get update -qq; fi
    (cd "$dir" && rm -f prometheus_*.deb && apt-get download -q prometheus) >"$work/apt.log" 2>&1 \
      || { cat "$work/apt.log" >&2; fail "apt-get download prometheus failed"; }
    rm -rf "$dir/root"
    dpkg-deb -x "$dir"/prometheus_*.deb "$dir/root"
    [ -x "$bin" ] || fail "no usr/bin/promtool in the prometheus package"
  fi
  echo "$bin"
}

check_alerts() {
  local promtool
  promtool=$(promtool_path)
  log "$("$promtool" --version 2>&1 | head -n1)"
  "$promtool" check rules deploy/prometheus/alerts.yaml >&2 || fail "promtool check rules"
  "$promtool" test rules deploy/prometheus/alerts.test.yaml >&2 || fail "promtool test rules"
  log "alert rules checked and tested"
}

check_systemd
check_yaml
check_alerts
log "all deployment checks passed"
