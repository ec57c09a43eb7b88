"""Session fixtures for the real-client (official SDK) tests.

One mock provider (`target/release/examples/mock_provider`) and one llmtap
(`target/release/llmtap`) are started for the whole session, on free
loopback ports, with spans in a fresh SQLite file. Tests read the spans they
caused with `tap.new_spans(k)`: the rows that appeared since the test began
(the table is never truncated; rows are counted before and after).

Binary paths come from LLMTAP_BIN and MOCK_PROVIDER_BIN (defaults: the
release builds under target/). Every wait is bounded.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LLMTAP_BIN = Path(os.environ.get("LLMTAP_BIN", ROOT / "target/release/llmtap"))
MOCK_BIN = Path(
    os.environ.get("MOCK_PROVIDER_BIN", ROOT / "target/release/examples/mock_provider")
)

# Tests talk to 127.0.0.1 only: never through a proxy from the environment.
for _var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
    os.environ.pop(_var, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
# Nothing from the environment may redirect or authenticate the SDKs.
for _var in (
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_ORG_ID",
    "OPENAI_PROJECT_ID",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
):
    os.environ.pop(_var, None)

START_TIMEOUT = 15.0  # seconds, for each process to come up
STOP_TIMEOUT = 10.0  # seconds, for each process to exit after SIGTERM
BATCH_INTERVAL_MS = 50


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)


def _start_mock(workdir: Path) -> tuple[subprocess.Popen, str, Path]:
    log = workdir / "mock.log"
    out = open(log, "wb")
    proc = subprocess.Popen(
        [str(MOCK_BIN), "127.0.0.1:0"],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    out.close()
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        for line in _tail(log).splitlines():
            if line.startswith("listening on "):
                return proc, line.split("listening on ", 1)[1].strip(), log
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    _stop(proc)
    raise RuntimeError(f"mock provider did not start:\n{_tail(log)}")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _start_llmtap(workdir: Path, mock_addr: str, attempt: int):
    port, admin = free_port(), free_port()
    db = workdir / f"llmtap-{attempt}.db"
    config = workdir / f"llmtap-{attempt}.toml"
    config.write_text(
        f"""listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
database_url = "sqlite://{db}"

[tracing]
batch_interval_ms = {BATCH_INTERVAL_MS}

[[routes]]
prefix = "/v1"
upstream = "http://{mock_addr}"
format = "openai"

[[routes]]
prefix = "/anthropic"
upstream = "http://{mock_addr}"
format = "anthropic"
strip_prefix = true
"""
    )
    # Environment variables override the file: keep only unrelated ones.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LLMTAP_", "TRACE_", "OTEL_")) and k != "ENABLE_TRACING"
    }
    log = workdir / f"llmtap-{attempt}.log"
    out = open(log, "wb")
    proc = subprocess.Popen(
        [str(LLMTAP_BIN), "--config", str(config)],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=workdir,
    )
    out.close()
    health = f"http://127.0.0.1:{admin}/healthz"
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None, log
        if _healthy(health):
            return (proc, port, admin, db), log
        time.sleep(0.05)
    _stop(proc)
    return None, log


@dataclass
class Stack:
    mock_url: str
    proxy_url: str
    admin_url: str
    db_path: Path
    openai_base: str
    anthropic_base: str

    def _rows(self) -> list[dict]:
        conn = sqlite3.connect(self.db_path, timeout=5)
        try:
            conn.row_factory = sqlite3.Row
            rows = conn.execute(
                "SELECT * FROM spans ORDER BY start_time, rowid"
            ).fetchall()
            return [dict(r) for r in rows]
        finally:
            conn.close()

    def count(self) -> int:
        conn = sqlite3.connect(self.db_path, timeout=5)
        try:
            return conn.execute("SELECT count(*) FROM spans").fetchone()[0]
        finally:
            conn.close()

    def wait_spans(self, n: int, timeout: float = 10) -> list[dict]:
        """All span rows, ordered by start_time, once there are at least n."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self._rows()
            if len(rows) >= n:
                return rows
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"expected at least {n} spans within {timeout}s, found {len(rows)}"
                )
            time.sleep(0.02)


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Stack:
    for binary in (LLMTAP_BIN, MOCK_BIN):
        if not binary.is_file():
            pytest.exit(f"missing binary {binary}: run scripts/sdk_test.sh", returncode=2)
    workdir = tmp_path_factory.mktemp("llmtap-sdk")
    mock, mock_addr, mock_log = _start_mock(workdir)
    proxy_proc = None
    try:
        logs = []
        # A free port can be taken between the probe and llmtap's bind: retry.
        for attempt in range(3):
            started, log = _start_llmtap(workdir, mock_addr, attempt)
            logs.append(log)
            if started is not None:
                proxy_proc, port, admin, db = started
                break
        if proxy_proc is None:
            raise RuntimeError(
                "llmtap did not start:\n" + "\n---\n".join(_tail(l) for l in logs)
            )
        proxy = f"http://127.0.0.1:{port}"
        yield Stack(
            mock_url=f"http://{mock_addr}",
            proxy_url=proxy,
            admin_url=f"http://127.0.0.1:{admin}",
            db_path=db,
            openai_base=f"{proxy}/v1",
            anthropic_base=f"{proxy}/anthropic",
        )
    finally:
        try:
            if proxy_proc is not None:
                _stop(proxy_proc)
        finally:
            _stop(mock)
        # SIGTERM is a graceful shutdown: llmtap drains, flushes and exits 0.
        if proxy_proc is not None and proxy_proc.returncode != 0:
            raise RuntimeError(
                f"llmtap exited with {proxy_proc.returncode} on SIGTERM:\n{_tail(logs[-1])}"
            )


class Tap:
    """Per-test view of the span table: only rows added during the test."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.before = stack.count()

    def new_spans(self, k: int, timeout: float = 10, settle: float = 0.15) -> list[dict]:
        """Exactly the k spans this test caused, ordered by start_time."""
        rows = self.stack.wait_spans(self.before + k, timeout=timeout)
        # One more batch interval (and then some): no unexpected extra span.
        time.sleep(settle)
        rows = self.stack._rows()
        new = rows[self.before :]
        assert len(new) == k, f"expected {k} new spans, got {len(new)}: {new}"
        return new

    def one_span(self, timeout: float = 10) -> dict:
        return self.new_spans(1, timeout=timeout)[0]


@pytest.fixture
def tap(stack: Stack) -> Tap:
    return Tap(stack)


@pytest.fixture(scope="session")
def wait_spans(stack: Stack):
    return stack.wait_spans
