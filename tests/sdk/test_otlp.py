"""OpenTelemetry export through real SDK traffic.

A receiver built on the official `opentelemetry-proto` classes
(`otlp_receiver.py`) is started by this module; a second llmtap (its own
SQLite file, in front of the session's mock provider) is started with only
the standard OTEL_* variables pointing at it: endpoint, headers (one
%-encoded), gzip, service name, resource attributes, a short schedule
delay. The receiver answers the first export with 503 + Retry-After: 1.

Every exported span is compared with the span record llmtap stored for the
same exchange: ids, times, kind, name, status and every GenAI attribute.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import openai
import pytest
from anthropic import Anthropic
from openai import OpenAI

from conftest import LLMTAP_BIN, START_TIMEOUT, _healthy, _stop, _tail, free_port
from otlp_receiver import Receiver

OPENAI_KEY = "sk-test-otlp-openai-SECRET-0001"
ANTHROPIC_KEY = "sk-ant-test-otlp-SECRET-0002"
GPT = "gpt-4o-mini"
CLAUDE = "claude-sonnet-4-6"
SPAN_KIND_INTERNAL, SPAN_KIND_CLIENT = 1, 3
STATUS_UNSET, STATUS_ERROR = 0, 2
TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}]


class Otel:
    def __init__(self, receiver: Receiver, db: Path, base: str, mock_port: int):
        self.receiver = receiver
        self.db = db
        self.openai_base = f"{base}/v1"
        self.anthropic_base = f"{base}/anthropic"
        self.mock_port = mock_port

    def rows(self) -> list[dict]:
        conn = sqlite3.connect(self.db, timeout=5)
        try:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute("SELECT * FROM spans ORDER BY start_time, rowid")]
        finally:
            conn.close()

    def count(self) -> int:
        conn = sqlite3.connect(self.db, timeout=5)
        try:
            return conn.execute("SELECT count(*) FROM spans").fetchone()[0]
        finally:
            conn.close()

    def new_rows(self, before: int, k: int, timeout: float = 10) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.rows()
            if len(rows) >= before + k:
                time.sleep(0.15)
                rows = self.rows()[before:]
                assert len(rows) == k, f"expected {k} new spans, got {len(rows)}"
                return rows
            if time.monotonic() >= deadline:
                raise AssertionError(f"expected {k} new spans, found {len(rows) - before}")
            time.sleep(0.02)

    def exported(self, rows: list[dict]) -> dict:
        return self.receiver.wait_for([r["span_id"] for r in rows])


@pytest.fixture(scope="module")
def otel(stack, tmp_path_factory):
    receiver = Receiver(script=[(503, "1")]).start()
    workdir = tmp_path_factory.mktemp("llmtap-otlp")
    mock_addr = stack.mock_url.removeprefix("http://")
    proc = None
    try:
        for attempt in range(3):
            port, admin = free_port(), free_port()
            db = workdir / f"otlp-{attempt}.db"
            config = workdir / f"otlp-{attempt}.toml"
            config.write_text(f"""listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
database_url = "sqlite://{db}"

[tracing]
batch_interval_ms = 50

[[routes]]
prefix = "/v1"
upstream = "{stack.mock_url}"
format = "openai"

[[routes]]
prefix = "/anthropic"
upstream = "{stack.mock_url}"
format = "anthropic"
strip_prefix = true
""")
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith(("LLMTAP_", "TRACE_", "OTEL_")) and k != "ENABLE_TRACING"}
            env.update({
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                "OTEL_EXPORTER_OTLP_HEADERS": "x-otlp-token=t%20ok%3D1,x-team=ml",
                "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
                "OTEL_EXPORTER_OTLP_TIMEOUT": "5000",
                "OTEL_SERVICE_NAME": "llmtap-sdk-test",
                "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=ci,service.namespace=llm%2Cgw",
                "OTEL_BSP_SCHEDULE_DELAY": "50",
            })
            log = workdir / f"otlp-{attempt}.log"
            with open(log, "wb") as out:
                proc = subprocess.Popen([str(LLMTAP_BIN), "--config", str(config)], stdout=out,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        env=env, cwd=workdir)
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and proc.poll() is None:
                if _healthy(f"http://127.0.0.1:{admin}/healthz"):
                    break
                time.sleep(0.05)
            if proc.poll() is None and _healthy(f"http://127.0.0.1:{admin}/healthz"):
                break
            _stop(proc)
            proc = None
        if proc is None:
            raise RuntimeError(f"llmtap (OTLP) did not start:\n{_tail(log)}")
        yield Otel(receiver, db, f"http://127.0.0.1:{port}", int(mock_addr.rsplit(":", 1)[1]))
    finally:
        if proc is not None:
            _stop(proc)
            assert proc.returncode == 0, _tail(log)
        receiver.stop()


@pytest.fixture
def client(otel):
    c = OpenAI(base_url=otel.openai_base, api_key=OPENAI_KEY, max_retries=0, timeout=10)
    yield c
    c.close()


@pytest.fixture
def claude(otel):
    c = Anthropic(base_url=otel.anthropic_base, api_key=ANTHROPIC_KEY, max_retries=0, timeout=10)
    yield c
    c.close()


# --- what every exported span must say ------------------------------------------------


def check_ids_and_times(span, row: dict) -> None:
    assert span.trace_id.hex() == row["trace_id"]
    assert span.span_id.hex() == row["span_id"]
    assert span.parent_span_id.hex() == (row["parent_span_id"] or "")
    assert span.start_time_unix_nano == row["start_time"] * 1000
    assert span.end_time_unix_nano == row["end_time"] * 1000
    assert span.name == row["name"]


def check_llm(otel: Otel, exported: tuple, row: dict, *, operation: str = "chat") -> dict:
    """Every GenAI attribute of an LLM span against its stored record."""
    span, resource, scope = exported
    check_ids_and_times(span, row)
    assert span.kind == SPAN_KIND_CLIENT
    assert span.name == f"{operation} {row['model']}"
    a = dict(__import__("otlp_receiver").attrs(span.attributes))
    want = {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": row["provider"],
        "gen_ai.request.model": row["model"],
        "gen_ai.response.model": row["response_model"],
        "gen_ai.response.id": row["response_id"],
        "gen_ai.response.finish_reasons": [row["finish_reason"]] if row["finish_reason"] else None,
        "gen_ai.usage.input_tokens": row["input_tokens"],
        "gen_ai.usage.output_tokens": row["output_tokens"],
        "gen_ai.usage.cache_read.input_tokens": row["cached_input_tokens"],
        "gen_ai.usage.cache_creation.input_tokens": row["cache_write_tokens"],
        "gen_ai.usage.reasoning.output_tokens": row["reasoning_tokens"],
        "gen_ai.request.stream": bool(row["stream"]),
        "gen_ai.response.time_to_first_chunk": (
            row["ttft_ms"] / 1000 if row["ttft_ms"] is not None else None
        ),
        "gen_ai.conversation.id": row["conversation_id"],
        "server.address": "127.0.0.1",
        "server.port": otel.mock_port,
        "error.type": row["error_type"],
        "llmtap.tokens_estimated": bool(row["tokens_estimated"]),
        "http.response.status_code": row["http_status"],
        "llmtap.cost_usd": row["cost_usd"],
        "user.id": row["user_id"],
    }
    for k, v in want.items():
        if v is None:
            assert k not in a, f"{k} should be absent: {a[k]!r}"
        elif isinstance(v, float):
            assert a[k] == pytest.approx(v, rel=1e-12), (k, a[k], v)
        else:
            assert a[k] == v, (k, a.get(k), v)
    if row["status"] == "failed":
        assert span.status.code == STATUS_ERROR
        assert span.status.message == row["error_message"]
    else:
        assert span.status.code == STATUS_UNSET
    assert resource["service.name"] == "llmtap-sdk-test"
    assert resource["deployment.environment"] == "ci"
    assert resource["service.namespace"] == "llm,gw"
    assert scope.name == "llmtap"
    return a


# --- the traffic ------------------------------------------------------------------------


def test_openai_chat_and_stream(otel, client):
    before = otel.count()
    resp = client.chat.completions.create(
        model=GPT,
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}],
        user="user-7",
        extra_headers={"x-mock-cached": "4", "x-mock-reasoning": "3", "x-mock-words": "5"},
    )
    stream = client.chat.completions.create(
        model=GPT, messages=[{"role": "user", "content": "Stream please."}], stream=True,
        stream_options={"include_usage": True}, extra_headers={"x-mock-words": "4"},
    )
    streamed = "".join((c.choices[0].delta.content or "") for c in stream if c.choices)
    rows = otel.new_rows(before, 2)
    got = otel.exported(rows)
    plain, streamed_row = rows
    a = check_llm(otel, got[plain["span_id"]], plain)
    assert a["gen_ai.usage.cache_read.input_tokens"] == 4
    assert a["gen_ai.usage.reasoning.output_tokens"] == 3
    assert a["gen_ai.request.stream"] is False
    assert "gen_ai.response.time_to_first_chunk" not in a
    # Message content (body capture is on by default), in the parts format.
    assert json.loads(a["gen_ai.input.messages"]) == [
        {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
        {"role": "user", "parts": [{"type": "text", "content": "Hi!"}]},
    ]
    assert json.loads(a["gen_ai.output.messages"]) == [{
        "role": "assistant",
        "parts": [{"type": "text", "content": resp.choices[0].message.content}],
        "finish_reason": "stop",
    }]
    b = check_llm(otel, got[streamed_row["span_id"]], streamed_row)
    assert b["gen_ai.request.stream"] is True
    assert b["gen_ai.response.time_to_first_chunk"] > 0
    out = json.loads(b["gen_ai.output.messages"])
    assert out[0]["parts"] == [{"type": "text", "content": streamed}]
    assert out[0]["finish_reason"] == "stop"


def test_openai_stream_without_usage_is_marked_estimated(otel, client):
    before = otel.count()
    stream = client.chat.completions.create(
        model=GPT, messages=[{"role": "user", "content": "Count."}], stream=True,
    )
    for _ in stream:
        pass
    (row,) = otel.new_rows(before, 1)
    assert row["tokens_estimated"] == 1
    a = check_llm(otel, otel.exported([row])[row["span_id"]], row)
    assert a["llmtap.tokens_estimated"] is True


def test_anthropic_messages_with_cache_tokens_and_stream(otel, claude):
    before = otel.count()
    hdr = {"x-mock-cached": "30", "x-mock-cache-write": "20", "x-mock-words": "4"}
    msg = claude.messages.create(
        model=CLAUDE, max_tokens=64, system="Be terse.",
        messages=[{"role": "user", "content": "Hello"}], extra_headers=hdr,
    )
    with claude.messages.stream(
        model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "Stream"}],
    ) as s:
        text = "".join(s.text_stream)
    rows = otel.new_rows(before, 2)
    got = otel.exported(rows)
    a = check_llm(otel, got[rows[0]["span_id"]], rows[0])
    assert a["gen_ai.provider.name"] == "anthropic"
    assert a["gen_ai.usage.cache_read.input_tokens"] == 30
    assert a["gen_ai.usage.cache_creation.input_tokens"] == 20
    assert a["gen_ai.response.finish_reasons"] == ["end_turn"]
    assert json.loads(a["gen_ai.input.messages"])[0] == {
        "role": "system", "parts": [{"type": "text", "content": "Be terse."}]}
    assert json.loads(a["gen_ai.output.messages"])[0]["parts"] == [
        {"type": "text", "content": msg.content[0].text}]
    b = check_llm(otel, got[rows[1]["span_id"]], rows[1])
    assert b["gen_ai.request.stream"] is True
    assert json.loads(b["gen_ai.output.messages"])[0]["parts"] == [{"type": "text", "content": text}]


def test_caller_trace_session_and_properties(otel, client):
    before = otel.count()
    trace, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    client.embeddings.create(
        model="text-embedding-3-small", input="hello",
        extra_headers={
            "traceparent": f"00-{trace}-{parent}-01",
            "x-llmtap-session-id": "sess-9",
            "x-llmtap-property-team": "search",
            "x-llmtap-conversation-id": "conv-1",
        },
    )
    (row,) = otel.new_rows(before, 1)
    span = otel.exported([row])[row["span_id"]]
    assert span[0].trace_id.hex() == trace and span[0].parent_span_id.hex() == parent
    a = check_llm(otel, span, row, operation="embeddings")
    assert a["session.id"] == "sess-9"
    assert a["llmtap.property.team"] == "search"
    assert a["gen_ai.conversation.id"] == "conv-1"


def test_failure_is_an_error_span(otel, client):
    before = otel.count()
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model=GPT, messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-mock-scenario": "error:429"},
        )
    (row,) = otel.new_rows(before, 1)
    span = otel.exported([row])[row["span_id"]]
    a = check_llm(otel, span, row)
    assert a["error.type"] == "mock_error"
    assert a["http.response.status_code"] == 429
    assert span[0].status.code == STATUS_ERROR
    assert span[0].status.message == "mock error 429"


def test_agent_loop_with_a_tool_call(otel, client):
    before = otel.count()
    call_id = f"call_{time.monotonic_ns()}"
    messages = [{"role": "user", "content": f"Weather in Paris? {call_id}"}]
    first = client.chat.completions.create(
        model=GPT, messages=messages, tools=TOOLS,
        extra_headers={"x-mock-tool-call": "get_weather", "x-mock-call-id": call_id},
    )
    msg = first.choices[0].message
    messages.append(msg)
    messages.append({"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": "18 C"})
    client.chat.completions.create(model=GPT, messages=messages, tools=TOOLS)
    rows = otel.new_rows(before, 3)
    got = otel.exported(rows)
    llm = [r for r in rows if r["operation_type"] == "llm_call"]
    (tool,) = [r for r in rows if r["operation_type"] == "tool_call"]
    root = llm[0]
    assert len({r["trace_id"] for r in rows}) == 1
    for r in llm:
        check_llm(otel, got[r["span_id"]], r)
    second = got[llm[1]["span_id"]][0]
    assert second.parent_span_id.hex() == root["span_id"]
    a = check_llm(otel, got[root["span_id"]], root)
    assert a["gen_ai.response.finish_reasons"] == ["tool_calls"]
    out = json.loads(a["gen_ai.output.messages"])
    assert out[0]["parts"][0] == {"type": "tool_call", "id": call_id, "name": "get_weather",
                                  "arguments": {"city": "Paris"}}
    # The follow-up's input carries the tool result.
    b = __import__("otlp_receiver").attrs(second.attributes)
    assert {"type": "tool_call_response", "id": call_id, "response": "18 C"} in [
        p for m in json.loads(b["gen_ai.input.messages"]) for p in m["parts"]]
    # The tool span: INTERNAL, execute_tool {name}, under the call that asked.
    span, resource, _ = got[tool["span_id"]]
    check_ids_and_times(span, tool)
    assert span.kind == SPAN_KIND_INTERNAL
    assert span.name == "execute_tool get_weather"
    assert span.parent_span_id.hex() == root["span_id"]
    t = __import__("otlp_receiver").attrs(span.attributes)
    assert t["gen_ai.operation.name"] == "execute_tool"
    assert t["gen_ai.tool.name"] == "get_weather"
    assert t["gen_ai.tool.call.id"] == call_id
    assert t["gen_ai.conversation.id"] == root["conversation_id"]
    assert t["gen_ai.tool.call.result"] == "18 C"
    assert "gen_ai.request.model" not in t
    assert span.status.code == STATUS_UNSET


# --- the transport ----------------------------------------------------------------------


def test_transport_headers_gzip_and_retry_after(otel):
    reqs = otel.receiver.requests()
    assert len(reqs) >= 2, "at least the refused and the retried export"
    assert reqs[0].status == 503
    accepted = [r for r in reqs if r.status == 200]
    assert accepted and accepted[0].at - reqs[0].at >= 0.95, "Retry-After: 1 not honoured"
    for r in reqs:
        assert r.error is None, r.error
        assert r.path == "/v1/traces"
        assert r.headers["content-type"] == "application/x-protobuf"
        assert r.headers["content-encoding"] == "gzip"
        assert r.raw[:2] == b"\x1f\x8b"
        assert r.headers["x-otlp-token"] == "t ok=1"
        assert r.headers["x-team"] == "ml"


def test_no_api_key_reaches_the_collector(otel):
    reqs = otel.receiver.requests()
    assert reqs
    for r in reqs:
        for key in (OPENAI_KEY, ANTHROPIC_KEY, "SECRET"):
            assert key.encode() not in r.body and key.encode() not in r.raw
            assert all(key not in v for v in r.headers.values())
