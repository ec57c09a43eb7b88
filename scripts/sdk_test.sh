#!/usr/bin/env bash
# Real-client tests: the official `openai` and `anthropic` Python SDKs talk to
# llmtap, which forwards to the in-repo mock provider; tests/sdk checks what
# the SDKs parsed and the spans llmtap stored. Everything runs on 127.0.0.1.
#
# Builds the release llmtap and mock_provider, keeps a virtualenv with the
# pinned packages of tests/sdk/requirements.txt in <target>/sdk-venv
# (reinstalled only when that file changes), then runs pytest; its exit code
# is this script's. Extra arguments go to pytest (e.g. -k anthropic).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== sdk: cargo build --release (llmtap, mock_provider)"
cargo build --release --quiet --locked --bin llmtap --example mock_provider

target_dir=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
llmtap_bin="$target_dir/release/llmtap"
mock_bin="$target_dir/release/examples/mock_provider"
venv="$target_dir/sdk-venv"
requirements=tests/sdk/requirements.txt

# `python3 -m venv` needs ensurepip, which Debian ships apart (python3-venv).
make_venv() {
    rm -rf "$venv"
    python3 -m venv "$venv"
}
if ! "$venv/bin/python" -c 'import pip' >/dev/null 2>&1; then
    echo "== sdk: creating $venv"
    if ! make_venv; then
        if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
            echo "== sdk: python3 -m venv failed; installing python3-venv"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            make_venv
        else
            echo "sdk_test: python3 -m venv failed; install python3-venv" >&2
            exit 1
        fi
    fi
fi

stamp="$venv/.requirements.sha256"
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "== sdk: pip install -r $requirements"
    rm -f "$stamp"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/python" -m pip install -q -r "$requirements"
    echo "$want" >"$stamp"
fi

echo "== sdk: pytest tests/sdk"
status=0
LLMTAP_BIN="$llmtap_bin" MOCK_PROVIDER_BIN="$mock_bin" PYTHONDONTWRITEBYTECODE=1 \
    "$venv/bin/python" -m pytest -q tests/sdk "$@" || status=$?
exit "$status"
