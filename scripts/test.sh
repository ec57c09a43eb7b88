#!/usr/bin/env bash
# The whole test suite:
#  1. cargo tests: unit tests, end-to-end tests against the in-repo mock
#     provider and a real SQLite file, property tests, the shipped binary;
#  2. the official OpenAI and Anthropic Python SDKs driving llmtap (a venv
#     under target/, packages from PyPI);
#  3. the web UI in headless Chromium (playwright-core from npm).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --locked --lib --bins --tests "$@"
bash scripts/sdk_test.sh
bash scripts/ui_test.sh
