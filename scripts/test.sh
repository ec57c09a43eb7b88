#!/usr/bin/env bash
# The whole test suite:
#  1. cargo tests: unit tests, end-to-end tests against the in-repo mock
#     provider and a real SQLite file, property tests, the shipped binary;
#  2. the integration tests again against PostgreSQL: a throwaway cluster
#     on 127.0.0.1 in a temp dir (scripts/pg_test.sh installs PostgreSQL
#     from Debian's packages when missing, as root); skip with
#     LLMTAP_SKIP_PG=1;
#  3. the official OpenAI and Anthropic Python SDKs driving llmtap (a venv
#     under target/, packages from PyPI);
#  4. the container image's runtime stage laid out from the Dockerfile and
#     run as its user (scripts/image_check.py; there is no Docker engine);
#  5. the web UI in headless Chromium (playwright-core from npm).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 scripts/check_links.py  # first, it is fast: every relative link and #anchor in the documents resolves
cargo test --locked --lib --bins --tests "$@"
if [ "${LLMTAP_SKIP_PG:-0}" != "1" ]; then
    bash scripts/pg_test.sh --tests "$@"
fi
bash scripts/sdk_test.sh
python3 scripts/image_check.py
bash scripts/ui_test.sh
