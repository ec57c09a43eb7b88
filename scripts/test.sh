#!/usr/bin/env bash
# The whole test suite: unit tests, end-to-end tests against the in-repo mock
# provider and a real SQLite file, and the shipped binary. Installs nothing
# but what cargo fetches.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked --lib --bins --tests "$@"
