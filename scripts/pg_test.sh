#!/usr/bin/env bash
# The integration tests against PostgreSQL: installs PostgreSQL from
# Debian's packages when it is missing (as root), starts a throwaway
# cluster on 127.0.0.1 on a free port in a temp dir (scripts/pg_cluster.sh),
# runs `cargo test --locked --tests` with LLMTAP_TEST_DATABASE_URL pointing
# at it (each test harness creates its own database there), then stops the
# cluster and removes the temp dir. Extra arguments go to cargo test.
#
#   bash scripts/pg_test.sh                # every integration test
#   bash scripts/pg_test.sh --test api     # one test file
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/pg_cluster.sh

# Durability is not under test: no fsync, so a CREATE DATABASE per
# harness stays cheap.
pg_cluster_start fsync=off synchronous_commit=off full_page_writes=off
export LLMTAP_TEST_DATABASE_URL="$PG_SERVER_URL"
if [ "$#" -eq 0 ]; then
    set -- --tests
fi
cargo test --locked "$@"
