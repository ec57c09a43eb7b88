#!/usr/bin/env bash
# Runs the cargo-fuzz target over every parser of untrusted bytes for a fixed
# number of inputs (default 20000; `bash scripts/fuzz.sh 1000000` for longer).
# Installs cargo-fuzz when missing. The toolchain here is stable, so
# RUSTC_BOOTSTRAP=1 lets cargo-fuzz use the sanitizer flags it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-20000}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --quiet
cd fuzz
RUSTC_BOOTSTRAP=1 cargo fuzz run parsers -- -runs="$RUNS" -max_len=65536 2>&1 | tail -n 3
