#!/usr/bin/env bash
# Load-test harness: llmtap (tracing every request into SQLite) against the
# same traffic sent direct to the mock provider and through nginx.
#
# Usage: bash scripts/bench.sh [--quick]
#
#   --quick   1 round instead of 3, 3 s wrk runs instead of 5 s, a 20 s mixed
#             run instead of 60 s (about 2 minutes in all; the full run takes
#             about 6-7 minutes on 2 cores).
#
# What it does:
#   1. builds target/release/llmtap and target/release/examples/mock_provider;
#   2. installs wrk and nginx from Debian (apt-get) when they are missing;
#      python3 (standard library only) drives the streaming and mixed cases;
#   3. raises the open-files limit (65536, or the hard limit if lower), then
#      starts on loopback, in a temp dir: the mock provider, llmtap (tracing
#      on, default batching, SQLite file in the temp dir), and nginx (generated
#      from scripts/bench/nginx.conf.in: worker_processes auto, proxy_buffering
#      off, HTTP/1.1 upstream keepalive 64, access_log off) as a non-daemon
#      child (-p TMP -c CONF -g 'daemon off;');
#      and a second llmtap with ENABLE_TRACING=false (case 1 only: the
#      cost of the proxy itself, tracing code off the path);
#   4. runs scripts/bench/driver.py, which measures, alternating the targets
#      direct / llmtap / nginx and rotating their order each round:
#        1. non-streamed chat completions with wrk (scripts/bench/chat.lua) at
#           c=1, 32, 256: req/s, p50/p99, added latency, proxy CPU per request
#           (utime+stime from /proc/PID/stat);
#        2. streaming with scripts/bench/httpclient.py (asyncio, raw HTTP/1.1):
#           solo time to first byte, then 1,000 concurrent 50-chunk streams
#           (x-mock-delay-ms 5 and 20): TTFB, total, proxy peak RSS (VmHWM);
#        3. a fixed-rate mixed run through llmtap, sampling its RSS and CPU
#           every second, then checking span rows == requests sent (after 2 s);
#   5. writes the run to its own file, docs/benchmarks/runs/<UTC>-<commit>.md
#      (e.g. 2026-12-07T1803Z-9ee1e44.md; printed), and rebuilds the summary
#      of BENCHMARKS.md (between its bench-summary markers) from the runs
#      folder with scripts/bench/summary.py. Nothing is appended anywhere.
#
# Environment knobs: BENCH_PORT_BASE (default 19320; uses 7 ports from it),
# BENCH_STREAMS (1000), BENCH_STREAM_DELAYS ("5,20"), BENCH_MIXED_RATE (400),
# BENCH_RUNS_DIR (docs/benchmarks/runs), BENCH_SUMMARY (BENCHMARKS.md).
#
# Every process it starts is ended by PID on exit (trap EXIT); every loop and
# every load run is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=""
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK="--quick" ;;
    -h|--help) sed -n '2,43p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (usage: bash scripts/bench.sh [--quick])" >&2; exit 2 ;;
  esac
done
CMDLINE="bash scripts/bench.sh${QUICK:+ $QUICK}"
RUNS_DIR=${BENCH_RUNS_DIR:-docs/benchmarks/runs}
SUMMARY=${BENCH_SUMMARY:-BENCHMARKS.md}
BASE=${BENCH_PORT_BASE:-19320}
MOCK=127.0.0.1:$BASE
PROXY=127.0.0.1:$((BASE + 1))
ADMIN=127.0.0.1:$((BASE + 2))
NGINX=127.0.0.1:$((BASE + 3))
PLAIN=127.0.0.1:$((BASE + 4))
PLAIN_ADMIN=127.0.0.1:$((BASE + 5))
BARE=127.0.0.1:$((BASE + 6))

log() { echo "[bench] $*" >&2; }

# ---- tools
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]} with apt-get"
  apt-get update -qq
  # RUNLEVEL=1: keep the package's init script from starting a system nginx.
  RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)

log "building release binaries"
cargo build --release --quiet --bin llmtap --example mock_provider --example bare_proxy

# ---- limits: 1,000 streams need ~2,000 sockets in a proxy.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
log "open files limit: $NOFILE"

# ---- ports must be free
for p in "$MOCK" "$PROXY" "$ADMIN" "$NGINX" "$PLAIN" "$PLAIN_ADMIN" "$BARE"; do
  if python3 -c 'import socket,sys; h,p=sys.argv[1].rsplit(":",1); s=socket.socket(); s.settimeout(0.3); sys.exit(0 if s.connect_ex((h,int(p)))==0 else 1)' "$p"; then
    echo "port $p is in use; set BENCH_PORT_BASE to another base port" >&2; exit 1
  fi
done

work=$(mktemp -d /tmp/llmtap-bench.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  # Bounded wait (5 s) for a clean exit, then SIGKILL what is left.
  for _ in $(seq 1 50); do
    local alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_tcp() { # addr, what
  for _ in $(seq 1 100); do
    python3 -c 'import socket,sys; h,p=sys.argv[1].rsplit(":",1); s=socket.socket(); s.settimeout(0.3); sys.exit(0 if s.connect_ex((h,int(p)))==0 else 1)' "$1" && return 0
    sleep 0.1
  done
  echo "$2 did not start on $1" >&2; return 1
}

# ---- mock provider
target/release/examples/mock_provider "$MOCK" > "$work/mock.log" 2>&1 &
MOCK_PID=$!; pids+=("$MOCK_PID")
wait_tcp "$MOCK" "mock provider"

# ---- llmtap (tracing on, default batching, SQLite in the temp dir)
cat > "$work/llmtap.toml" <<TOML
listen = "$PROXY"
admin_listen = "$ADMIN"
database_url = "sqlite://$work/llmtap.db"

[tracing]
enabled = true

[[routes]]
prefix = "/v1"
upstream = "http://$MOCK"
format = "openai"
TOML
target/release/llmtap --config "$work/llmtap.toml" > "$work/llmtap.log" 2>&1 &
LLMTAP_PID=$!; pids+=("$LLMTAP_PID")
for i in $(seq 1 100); do
  python3 -c 'import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)' "http://$ADMIN/healthz" 2>/dev/null && break
  [ "$i" = 100 ] && { echo "llmtap did not become healthy:" >&2; cat "$work/llmtap.log" >&2; exit 1; }
  sleep 0.1
done
sleep 0.5
IDLE_RSS=$(awk '/^VmRSS:/{print $2}' "/proc/$LLMTAP_PID/status")

# ---- llmtap as a plain proxy (ENABLE_TRACING=false): tracing code off the path
sed -e "s|^listen = .*|listen = \"$PLAIN\"|" -e "s|^admin_listen = .*|admin_listen = \"$PLAIN_ADMIN\"|" \
  -e "s|^database_url = .*|database_url = \"sqlite://$work/plain.db\"|" \
  "$work/llmtap.toml" > "$work/plain.toml"
ENABLE_TRACING=false target/release/llmtap --config "$work/plain.toml" > "$work/plain.log" 2>&1 &
PLAIN_PID=$!; pids+=("$PLAIN_PID")
wait_tcp "$PLAIN" "llmtap (tracing off)"

# ---- the floor: a bare hyper proxy (examples/bare_proxy.rs), none of
# llmtap's work, on the same crates llmtap forwards with
target/release/examples/bare_proxy "$BARE" "$MOCK" > "$work/bare.log" 2>&1 &
BARE_PID=$!; pids+=("$BARE_PID")
wait_tcp "$BARE" "bare hyper proxy"

# ---- nginx (non-daemon child; its PID is the master's)
mkdir -p "$work/nginx/tmp"
sed -e "s/@MOCK@/$MOCK/" -e "s/@LISTEN@/$NGINX/" -e "s/@NOFILE@/$NOFILE/" \
  scripts/bench/nginx.conf.in > "$work/nginx/nginx.conf"
"$NGINX_BIN" -p "$work/nginx/" -c "$work/nginx/nginx.conf" -g 'daemon off;' \
  > "$work/nginx/stdout.log" 2>&1 &
NGINX_PID=$!; pids+=("$NGINX_PID")
wait_tcp "$NGINX" "nginx" || { cat "$work/nginx/stdout.log" "$work/nginx/error.log" >&2 || true; exit 1; }
NGINX_WORKERS=$(python3 -c 'import os,sys
n=0
for d in os.listdir("/proc"):
    if d.isdigit():
        try: s=open(f"/proc/{d}/stat").read()
        except OSError: continue
        if int(s[s.rfind(")")+2:].split()[1])==int(sys.argv[1]): n+=1
print(n)' "$NGINX_PID")

# ---- sanity: one request through each target
for t in "$MOCK" "$PROXY" "$NGINX" "$PLAIN" "$BARE"; do
  python3 - "$t" <<'PY'
import sys, urllib.request
req = urllib.request.Request(f"http://{sys.argv[1]}/v1/chat/completions",
    data=b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}',
    headers={"Content-Type": "application/json", "Authorization": "Bearer sk-bench-0000"})
body = urllib.request.urlopen(req, timeout=5).read()
assert b"chat.completion" in body, body[:200]
PY
done
log "mock pid $MOCK_PID on $MOCK; llmtap pid $LLMTAP_PID on $PROXY; nginx pid $NGINX_PID ($NGINX_WORKERS workers) on $NGINX"

# ---- measure (the driver writes the run's own file and prints its path)
RUN_FILE=$(python3 scripts/bench/driver.py $QUICK \
  --mock "$MOCK" --llmtap "$PROXY" --nginx "$NGINX" \
  --mock-pid "$MOCK_PID" --llmtap-pid "$LLMTAP_PID" --nginx-pid "$NGINX_PID" \
  --plain "$PLAIN" --plain-pid "$PLAIN_PID" --bare "$BARE" --bare-pid "$BARE_PID" \
  --db "$work/llmtap.db" --runs-dir "$RUNS_DIR" \
  --llmtap-config "$work/llmtap.toml" \
  --nginx-workers "$NGINX_WORKERS" --nofile "$NOFILE" --cmdline "$CMDLINE" \
  --idle-rss-kb "$IDLE_RSS")
cat "$RUN_FILE"
log "run written to $RUN_FILE"
python3 scripts/bench/summary.py --runs "$RUNS_DIR" --summary "$SUMMARY"
log "summary of $SUMMARY rebuilt from $RUNS_DIR"
if grep -q "ERROR" "$work/llmtap.log"; then
  log "llmtap logged errors:"; grep "ERROR" "$work/llmtap.log" | head -5 >&2
fi
