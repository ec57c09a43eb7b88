#!/usr/bin/env bash
# Store throughput: sustained spans/s through the real batcher into SQLite
# (a temp file) and into PostgreSQL (a throwaway cluster with default,
# durable settings: fsync and synchronous_commit on), with the machine's
# load average printed beside each figure (examples/store_probe.rs).
#
#   bash scripts/store_bench.sh [seconds]     # default 15 s per store
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pg_cluster.sh
secs="${1:-15}"
cargo build --locked --release --example store_probe
probe=target/release/examples/store_probe
echo "== nproc $(nproc); load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== SQLite"
"$probe" --seconds "$secs"
echo "   load: $(cut -d' ' -f1-3 /proc/loadavg)"
pg_cluster_start
url=$(pg_create_database llmtap_bench)
echo "== PostgreSQL"
"$probe" "$url" --seconds "$secs"
echo "   load: $(cut -d' ' -f1-3 /proc/loadavg)"
