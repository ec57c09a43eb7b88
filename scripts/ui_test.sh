#!/usr/bin/env bash
# Browser tests of the web UI (tests/ui): playwright-core (npm, pinned in
# tests/ui/package-lock.json) drives Debian's Chromium headless against the
# release llmtap, fed with real traffic through the in-repo mock provider.
#
#  1. installs chromium (apt-get) when /usr/bin/chromium is missing, and
#     Node.js when `node` is missing; `npm ci` in tests/ui;
#  2. builds the release llmtap, mock_provider and gen_spans (a no-op when
#     scripts/sdk_test.sh already built them);
#  3. starts the mock provider and llmtap (admin token set) on ephemeral
#     loopback ports with a temp SQLite file; tests/ui/ui.test.mjs sends the
#     traffic, waits for the spans and drives the pages;
#  4. fills another temp SQLite file with 100,000 spans (gen_spans), starts
#     llmtap on it and times the traces page and the dashboard
#     (tests/ui/perf.test.mjs; budget: one second).
# Screenshots, the exported file and perf.json land in
# <target>/ui-screenshots/. Only processes this script started are killed.
# `--debug` uses debug builds instead (quicker to rebuild while developing;
# the load-time figures are then not representative).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

export DEBIAN_FRONTEND=noninteractive
apt_updated=0
apt_install() {
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "ui_test: $* missing and cannot apt-get install it (not root or no apt-get)" >&2
        exit 1
    fi
    if [ "$apt_updated" = 0 ]; then
        apt-get update -qq
        apt_updated=1
    fi
    apt-get install -y -qq "$@" >/dev/null
}
chromium=/usr/bin/chromium
if [ ! -x "$chromium" ]; then
    echo "== ui: installing chromium"
    apt_install chromium
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "== ui: installing nodejs and npm"
    apt_install nodejs npm
fi

echo "== ui: npm ci (tests/ui)"
(cd tests/ui && npm ci --no-audit --no-fund --loglevel=error)

profile=release
build_flag=--release
if [ "${1:-}" = --debug ]; then
    profile=debug
    build_flag=
fi
echo "== ui: cargo build $build_flag (llmtap, mock_provider, gen_spans)"
cargo build $build_flag --quiet --locked --bin llmtap --example mock_provider --example gen_spans

target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
llmtap_bin="$target_dir/$profile/llmtap"
mock_bin="$target_dir/$profile/examples/mock_provider"
gen_bin="$target_dir/$profile/examples/gen_spans"
shots="$target_dir/ui-screenshots"
rm -rf "$shots"
mkdir -p "$shots"

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

http_ok() {
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$1"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_for DESCRIPTION SECONDS COMMAND...: polls COMMAND every 0.1 s.
wait_for() {
    local what=$1 secs=$2
    shift 2
    local i
    for ((i = 0; i < secs * 10; i++)); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo "ui_test: $what did not happen within ${secs}s" >&2
    return 1
}

# start_llmtap NAME DB [TOKEN]: starts llmtap on ephemeral loopback ports;
# sets proxy_url and admin_url.
start_llmtap() {
    local name=$1 db=$2 token=${3:-}
    local port admin
    port=$(free_port)
    admin=$(free_port)
    cat >"$work/$name.toml" <<TOML
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$admin"
database_url = "sqlite://$db"

[tracing]
batch_interval_ms = 50

[[routes]]
prefix = "/v1"
upstream = "http://$mock_addr"
format = "openai"

[[routes]]
prefix = "/anthropic"
upstream = "http://$mock_addr"
format = "anthropic"
strip_prefix = true
TOML
    # Only this run's settings: no LLMTAP_* from the environment.
    env -u LLMTAP_ADMIN_TOKEN -u LLMTAP_CONFIG -u LLMTAP_DATABASE_URL \
        ${token:+LLMTAP_ADMIN_TOKEN=$token} \
        "$llmtap_bin" --config "$work/$name.toml" >"$work/$name.log" 2>&1 &
    pids+=($!)
    proxy_url="http://127.0.0.1:$port"
    admin_url="http://127.0.0.1:$admin"
    if ! wait_for "llmtap ($name) health" 20 http_ok "$admin_url/healthz"; then
        cat "$work/$name.log" >&2
        exit 1
    fi
}

echo "== ui: starting the mock provider and llmtap"
"$mock_bin" 127.0.0.1:0 >"$work/mock.log" 2>&1 &
pids+=($!)
wait_for "mock provider start" 20 grep -q '^listening on ' "$work/mock.log" || { cat "$work/mock.log" >&2; exit 1; }
mock_addr=$(sed -n 's/^listening on //p' "$work/mock.log" | head -1)

token="ui-test-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
start_llmtap ui "$work/ui.db" "$token"

status=0
echo "== ui: browser tests (tests/ui/ui.test.mjs)"
ADMIN_URL="$admin_url" PROXY_URL="$proxy_url" ADMIN_TOKEN="$token" \
    SCREENSHOTS="$shots" CHROMIUM="$chromium" \
    node --test --test-concurrency=1 tests/ui/ui.test.mjs || status=$?

echo "== ui: 100,000 spans (gen_spans) and the page load times"
"$gen_bin" --spans 100000 --days 1 --db "$work/perf.db" --no-measure >"$work/gen.log" 2>&1 ||
    { cat "$work/gen.log" >&2; exit 1; }
start_llmtap perf "$work/perf.db"
PERF_ADMIN_URL="$admin_url" PERF_OUT="$shots/perf.json" CHROMIUM="$chromium" \
    node --test tests/ui/perf.test.mjs || status=$?
if [ -f "$shots/perf.json" ]; then
    echo "== ui: perf (ms) with 100,000 spans"
    cat "$shots/perf.json"
fi
echo "== ui: screenshots in $shots"
exit "$status"
