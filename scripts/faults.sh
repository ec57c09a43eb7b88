#!/usr/bin/env bash
# Every "nothing lost, nothing leaked" suite, real processes and servers on
# 127.0.0.1, bounded waits:
#   tests/faults.rs    upstream faults (refused, TLS, DNS, stalls, reset,
#                      10 MB, slow reader), connection/request gauges back at 0
#   tests/hostile.rs   hostile requests and responses (huge headers/bodies,
#                      bad JSON, 100,000-deep JSON, slowloris, HTTP/2 floods,
#                      garbage SSE, gzip/zstd bombs, endless lines), CORS, SSRF
#   tests/outage.rs    the store locked (SQLite) or stopped (PostgreSQL) under
#                      steady load, then back
#   tests/shutdown.rs  SIGTERM with open streams, SIGKILL and restart
#   tests/secrets.rs   API keys everywhere; searched for in db, logs, API,
#                      export, metrics
#   tests/otlp.rs      a down collector; exported spans redacted
#
#   bash scripts/faults.sh          the fast subset (what `cargo test` runs in CI)
#   bash scripts/faults.sh --full   a 60 s store outage, longer stalls, bigger
#                                   sizes (= LLMTAP_FAULTS_FULL=1; a few minutes)
#
# Extra arguments go to the test binaries (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--full" ]]; then
  export LLMTAP_FAULTS_FULL=1
  shift
fi
mode=fast
[[ "${LLMTAP_FAULTS_FULL:-}" == "1" ]] && mode=full
echo "== fault suites ($mode)"
start=$(date +%s)
# --nocapture: the tests print their figures (how far the upstream got
# ahead of a slow reader, what the observer decoded of a bomb, ...).
set +e
cargo test --locked --test faults --test hostile --test outage --test shutdown \
  --test secrets --test otlp -- --nocapture "$@"
status=$?
set -e
echo "== fault suites ($mode): exit $status in $(( $(date +%s) - start )) s"
exit "$status"
