#!/usr/bin/env bash
# A 10,000-request run through llmtap (tracing on, SQLite) with a public load
# tool (ApacheBench, `ab` from Debian's apache2-utils), beside the same run
# direct to the mock provider. Prints time, throughput, llmtap's peak RSS and
# CPU time, and checks that every request became exactly one span.
# Usage: bash scripts/load10k.sh [requests] [concurrency]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
C=${2:-32}
command -v ab >/dev/null || { apt-get update -qq && apt-get install -y -qq apache2-utils; }
cargo build --release --quiet --bin llmtap --example mock_provider

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

MOCK=127.0.0.1:19100; PROXY=127.0.0.1:19101; ADMIN=127.0.0.1:19102
target/release/examples/mock_provider "$MOCK" > "$work/mock.log" &
pids+=($!)
cat > "$work/llmtap.toml" <<TOML
listen = "$PROXY"
admin_listen = "$ADMIN"
database_url = "sqlite://$work/llmtap.db"
[[routes]]
prefix = "/v1"
upstream = "http://$MOCK"
format = "openai"
TOML
target/release/llmtap --config "$work/llmtap.toml" > "$work/llmtap.log" 2>&1 &
LPID=$!
pids+=($LPID)
for _ in $(seq 1 100); do curl -fs "http://$ADMIN/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

printf '%s' '{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say eight words."}]}' > "$work/body.json"
run() { ab -q -k -n "$N" -c "$C" -p "$work/body.json" -T application/json -H "Authorization: Bearer sk-load-test" "$1" 2>&1; }
summ() { grep -E "Complete requests|Failed requests|Non-2xx|Time taken|Requests per second|  50%|  99%"; }
echo "== direct to the mock: $N requests, concurrency $C"
run "http://$MOCK/v1/chat/completions" | summ
cpu0=$(awk '{print $14+$15}' /proc/$LPID/stat)
echo "== through llmtap (tracing on, SQLite): $N requests, concurrency $C"
run "http://$PROXY/v1/chat/completions" | summ
# Let the writer flush: its CPU belongs to these requests too.
sleep 1.5
cpu1=$(awk '{print $14+$15}' /proc/$LPID/stat)
tck=$(getconf CLK_TCK)
echo "== llmtap process"
grep -E "VmHWM|VmRSS" /proc/$LPID/status
awk -v a="$cpu0" -v b="$cpu1" -v t="$tck" -v n="$N" 'BEGIN{printf "CPU time for the run and its span writes: %.2f s (%.3f ms per request)\n", (b-a)/t, (b-a)/t*1000/n}'
rows=$(python3 -c "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute('select count(*) from spans').fetchone()[0])" "$work/llmtap.db")
echo "spans stored: $rows (requests sent through llmtap: $N)"
[ "$rows" -eq "$N" ] || { echo "MISMATCH"; exit 1; }
