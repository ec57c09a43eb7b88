"""The official `openai` Python SDK through llmtap, against the mock provider.

Each test checks what the SDK parsed (exact usage per the mock's formulas in
tests/mock/mod.rs) and the span llmtap recorded for the call.
"""

from __future__ import annotations

import base64
import struct

import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from helpers import assert_cost, assert_fields, assert_ttft, expected_cost

API_KEY = "sk-test-openai-sdk-0000"
MODEL = "gpt-4o-mini"
RMODEL = "gpt-4o-mini-2024-07-18"  # the mock appends a date to undated models
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say some words."},
]
PROMPT = 7 + 3 * len(MESSAGES)  # mock: prompt_tokens = 7 + 3 x messages
WORDS = 8  # mock default reply length
TEXT = "".join(["w0"] + [f" w{i}" for i in range(1, WORDS)])
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
TOOL_ARGS = '{"city":"Paris"}'
TOOL_TOKENS = 9  # mock: a tool-call reply counts 9 output tokens


@pytest.fixture
def client(stack):
    c = OpenAI(base_url=stack.openai_base, api_key=API_KEY, max_retries=0, timeout=10)
    yield c
    c.close()


@pytest.fixture
async def aclient(stack):
    c = AsyncOpenAI(base_url=stack.openai_base, api_key=API_KEY, max_retries=0, timeout=10)
    yield c
    await c.close()


def chat_span(stream: bool, response_id: str, output: int, finish: str = "stop") -> dict:
    return {
        "name": f"chat {MODEL}",
        "operation_type": "llm_call",
        "provider": "openai",
        "route": "/v1",
        "method": "POST",
        "path": "/v1/chat/completions",
        "model": MODEL,
        "response_model": RMODEL,
        "response_id": response_id,
        "stream": int(stream),
        "http_status": 200,
        "status": "completed",
        "error_type": None,
        "error_message": None,
        "finish_reason": finish,
        "input_tokens": PROMPT,
        "output_tokens": output,
        "cached_input_tokens": 0,
        "cache_write_tokens": None,
        "reasoning_tokens": 0,
        "tokens_estimated": 0,
        "parent_span_id": None,
    }


def assert_common(span: dict) -> None:
    assert len(span["trace_id"]) == 32 and len(span["span_id"]) == 16, span
    assert span["end_time"] >= span["start_time"] > 0
    assert span["duration_ms"] >= 0
    assert span["api_key_hash"] and len(span["api_key_hash"]) == 16, span


def assert_chat_completion(resp, response_id: str) -> None:
    assert resp.id == response_id
    assert resp.model == RMODEL
    assert len(resp.choices) == 1
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == TEXT
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.prompt_tokens == PROMPT
    assert resp.usage.completion_tokens == WORDS
    assert resp.usage.total_tokens == PROMPT + WORDS


# --- Chat Completions, non-streamed -----------------------------------------


def test_chat_sync(client, tap):
    rid = "chatcmpl-sync"
    resp = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, extra_headers={"x-mock-id": rid}
    )
    assert_chat_completion(resp, rid)
    s = tap.one_span()
    assert_fields(s, chat_span(False, rid, WORDS))
    assert_common(s)
    assert_cost(s, expected_cost(MODEL, input=PROMPT, output=WORDS))
    assert_ttft(s, False)


async def test_chat_async(aclient, tap):
    rid = "chatcmpl-async"
    resp = await aclient.chat.completions.create(
        model=MODEL, messages=MESSAGES, extra_headers={"x-mock-id": rid}
    )
    assert_chat_completion(resp, rid)
    s = tap.one_span()
    assert_fields(s, chat_span(False, rid, WORDS))
    assert_common(s)
    assert_cost(s, expected_cost(MODEL, input=PROMPT, output=WORDS))


def test_chat_with_cached_and_reasoning_tokens(client, tap):
    hdr = {"x-mock-cached": "4", "x-mock-reasoning": "3", "x-mock-words": "5"}
    resp = client.chat.completions.create(model=MODEL, messages=MESSAGES, extra_headers=hdr)
    assert resp.choices[0].message.content == "w0 w1 w2 w3 w4"
    assert resp.usage.completion_tokens == 5 + 3
    assert resp.usage.prompt_tokens_details.cached_tokens == 4
    assert resp.usage.completion_tokens_details.reasoning_tokens == 3
    s = tap.one_span()
    want = chat_span(False, "chatcmpl-mock", 8)
    want.update(cached_input_tokens=4, reasoning_tokens=3)
    assert_fields(s, want)
    assert_cost(s, expected_cost(MODEL, input=PROMPT, output=8, cached=4, reasoning=3))


# --- Chat Completions, streamed ---------------------------------------------


def collect_stream(chunks) -> tuple[str, str | None, object, str | None]:
    text, finish, usage, cid = "", None, None, None
    for chunk in chunks:
        cid = chunk.id
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    return text, finish, usage, cid


async def acollect_stream(chunks) -> tuple[str, str | None, object, str | None]:
    items = [c async for c in chunks]
    return collect_stream(items)


def test_chat_stream_sync_with_usage(client, tap):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage, cid = collect_stream(stream)
    assert (text, finish, cid) == (TEXT, "stop", "chatcmpl-mock")
    assert (usage.prompt_tokens, usage.completion_tokens) == (PROMPT, WORDS)
    s = tap.one_span()
    assert_fields(s, chat_span(True, "chatcmpl-mock", WORDS))
    assert_common(s)
    assert_cost(s, expected_cost(MODEL, input=PROMPT, output=WORDS))
    assert_ttft(s, True)


async def test_chat_stream_async_with_usage(aclient, tap):
    stream = await aclient.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-mock-words": "5"},
    )
    text, finish, usage, cid = await acollect_stream(stream)
    assert (text, finish) == ("w0 w1 w2 w3 w4", "stop")
    assert (usage.prompt_tokens, usage.completion_tokens) == (PROMPT, 5)
    s = tap.one_span()
    assert_fields(s, chat_span(True, "chatcmpl-mock", 5))
    assert_cost(s, expected_cost(MODEL, input=PROMPT, output=5))
    assert_ttft(s, True)


def assert_estimated_stream_span(s: dict) -> None:
    want = chat_span(True, "chatcmpl-mock", 0)
    for k in ("input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens"):
        del want[k]
    want["tokens_estimated"] = 1
    assert_fields(s, want)
    # No usage in the stream: llmtap counts the streamed text with the o200k
    # BPE (tiktoken cannot load its data offline here). Every word of the
    # reply ("w0", " w1", ...) is a letter run then a digit, which o200k's
    # pre-tokenizer splits into two pieces (" w" + "1"), each one token.
    assert s["output_tokens"] == 2 * WORDS, s
    assert s["input_tokens"] and s["input_tokens"] > 0, s
    assert s["cached_input_tokens"] is None and s["reasoning_tokens"] is None, s
    assert_cost(s, expected_cost(MODEL, input=s["input_tokens"], output=s["output_tokens"]))
    assert_ttft(s, True)


def test_chat_stream_sync_without_usage_is_estimated(client, tap):
    stream = client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    text, finish, usage, _ = collect_stream(stream)
    assert (text, finish, usage) == (TEXT, "stop", None)
    assert_estimated_stream_span(tap.one_span())


async def test_chat_stream_async_without_usage_is_estimated(aclient, tap):
    stream = await aclient.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    text, finish, usage, _ = await acollect_stream(stream)
    assert (text, finish, usage) == (TEXT, "stop", None)
    assert_estimated_stream_span(tap.one_span())


# --- Tool calls ---------------------------------------------------------------


def test_tool_call_non_streamed(client, tap):
    resp = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        tools=[WEATHER_TOOL],
        extra_headers={"x-mock-tool-call": "get_weather"},
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert (call.id, call.type) == ("call_mock_0", "function")
    assert (call.function.name, call.function.arguments) == ("get_weather", TOOL_ARGS)
    assert resp.usage.completion_tokens == TOOL_TOKENS
    s = tap.one_span()
    assert_fields(s, chat_span(False, "chatcmpl-mock", TOOL_TOKENS, "tool_calls"))
    assert_cost(s, expected_cost(MODEL, input=PROMPT, output=TOOL_TOKENS))


def test_tool_call_streamed_with_stream_helper(client, tap):
    with client.chat.completions.stream(
        model=MODEL,
        messages=MESSAGES,
        tools=[WEATHER_TOOL],
        stream_options={"include_usage": True},
        extra_headers={"x-mock-tool-call": "get_weather"},
    ) as stream:
        done = [e for e in stream if e.type == "tool_calls.function.arguments.done"]
        final = stream.get_final_completion()
    assert [(e.name, e.arguments) for e in done] == [("get_weather", TOOL_ARGS)]
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.id == "call_mock_0"
    assert (call.function.name, call.function.arguments) == ("get_weather", TOOL_ARGS)
    assert final.usage.completion_tokens == TOOL_TOKENS
    s = tap.one_span()
    assert_fields(s, chat_span(True, "chatcmpl-mock", TOOL_TOKENS, "tool_calls"))
    assert_cost(s, expected_cost(MODEL, input=PROMPT, output=TOOL_TOKENS))
    assert_ttft(s, True)


async def test_tool_call_streamed_async_deltas(aclient, tap):
    stream = await aclient.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        tools=[WEATHER_TOOL],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-mock-tool-call": "get_weather"},
    )
    name, args, finish, usage = "", "", None, None
    async for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for tc in choice.delta.tool_calls or []:
                name += (tc.function and tc.function.name) or ""
                args += (tc.function and tc.function.arguments) or ""
    assert (name, args, finish) == ("get_weather", TOOL_ARGS, "tool_calls")
    assert usage.completion_tokens == TOOL_TOKENS
    s = tap.one_span()
    assert_fields(s, chat_span(True, "chatcmpl-mock", TOOL_TOKENS, "tool_calls"))


# --- Responses API -------------------------------------------------------------

RESP_MODEL = "gpt-4.1-mini"
RESP_RMODEL = "gpt-4.1-mini-2024-07-18"
RESP_INPUT = 7 + 3  # mock: 7 + 3 x input items; a string is one item


def responses_span(stream: bool, output: int) -> dict:
    return {
        "name": f"chat {RESP_MODEL}",
        "operation_type": "llm_call",
        "provider": "openai",
        "route": "/v1",
        "path": "/v1/responses",
        "model": RESP_MODEL,
        "response_model": RESP_RMODEL,
        "response_id": "resp_mock",
        "stream": int(stream),
        "http_status": 200,
        "status": "completed",
        "error_type": None,
        "finish_reason": "completed",
        "input_tokens": RESP_INPUT,
        "output_tokens": output,
        "cached_input_tokens": 0,
        "reasoning_tokens": 0,
        "tokens_estimated": 0,
    }


def test_responses_non_streamed(client, tap):
    resp = client.responses.create(
        model=RESP_MODEL, input="Say some words.", extra_headers={"x-mock-words": "6"}
    )
    assert resp.id == "resp_mock"
    assert resp.status == "completed"
    assert resp.output_text == "w0 w1 w2 w3 w4 w5"
    assert (resp.usage.input_tokens, resp.usage.output_tokens) == (RESP_INPUT, 6)
    assert resp.usage.total_tokens == RESP_INPUT + 6
    s = tap.one_span()
    assert_fields(s, responses_span(False, 6))
    assert_common(s)
    assert_cost(s, expected_cost(RESP_MODEL, input=RESP_INPUT, output=6))
    assert_ttft(s, False)


def test_responses_streamed(client, tap):
    stream = client.responses.create(model=RESP_MODEL, input="Say some words.", stream=True)
    deltas, final, types = [], None, []
    for event in stream:
        types.append(event.type)
        if event.type == "response.output_text.delta":
            deltas.append(event.delta)
        elif event.type == "response.completed":
            final = event.response
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert "".join(deltas) == TEXT
    assert final.output_text == TEXT
    assert (final.usage.input_tokens, final.usage.output_tokens) == (RESP_INPUT, WORDS)
    s = tap.one_span()
    assert_fields(s, responses_span(True, WORDS))
    assert_cost(s, expected_cost(RESP_MODEL, input=RESP_INPUT, output=WORDS))
    assert_ttft(s, True)


async def test_responses_streamed_async_helper(aclient, tap):
    async with aclient.responses.stream(
        model=RESP_MODEL, input="Say some words.", extra_headers={"x-mock-words": "3"}
    ) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_response()
    assert final.output_text == "w0 w1 w2"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (RESP_INPUT, 3)
    s = tap.one_span()
    assert_fields(s, responses_span(True, 3))


# --- Embeddings -----------------------------------------------------------------

EMB_MODEL = "text-embedding-3-small"


def mock_vector(i: int) -> list[float]:
    """The mock's embedding for input i: (i + 1) / 8 x (k + 1), k < 8 (exact)."""
    return [(i + 1) * 0.125 * (k + 1) for k in range(8)]


def embedding_span(input_tokens: int) -> dict:
    return {
        "name": f"embeddings {EMB_MODEL}",
        "operation_type": "embedding",
        "provider": "openai",
        "route": "/v1",
        "path": "/v1/embeddings",
        "model": EMB_MODEL,
        "response_model": EMB_MODEL,
        "response_id": None,
        "stream": 0,
        "http_status": 200,
        "status": "completed",
        "error_type": None,
        "finish_reason": None,
        "input_tokens": input_tokens,
        "output_tokens": 0,
        "tokens_estimated": 0,
    }


def test_embeddings_float(client, tap):
    resp = client.embeddings.create(
        model=EMB_MODEL, input=["hello", "world"], encoding_format="float"
    )
    assert [d.embedding for d in resp.data] == [mock_vector(0), mock_vector(1)]
    assert (resp.usage.prompt_tokens, resp.usage.total_tokens) == (7, 7)  # 2 x 2 + 3
    s = tap.one_span()
    assert_fields(s, embedding_span(7))
    assert '"encoding_format":"float"' in s["request_body"].replace(" ", "")
    assert_cost(s, expected_cost(EMB_MODEL, input=7))
    assert_ttft(s, False)


def test_embeddings_base64(client, tap):
    resp = client.embeddings.create(model=EMB_MODEL, input="hello", encoding_format="base64")
    raw = resp.data[0].embedding
    assert isinstance(raw, str)
    assert list(struct.unpack("<8f", base64.b64decode(raw))) == mock_vector(0)
    assert resp.usage.prompt_tokens == 5  # 2 x 1 + 3
    s = tap.one_span()
    assert_fields(s, embedding_span(5))
    assert '"encoding_format":"base64"' in s["request_body"].replace(" ", "")
    assert_cost(s, expected_cost(EMB_MODEL, input=5))


def test_embeddings_sdk_default_decodes_base64(client, tap):
    # Without encoding_format the SDK asks for base64 and decodes it itself.
    resp = client.embeddings.create(model=EMB_MODEL, input=["a", "b", "c"])
    assert [d.embedding for d in resp.data] == [mock_vector(i) for i in range(3)]
    s = tap.one_span()
    assert_fields(s, embedding_span(9))
    assert_cost(s, expected_cost(EMB_MODEL, input=9))


# --- Errors ---------------------------------------------------------------------


def test_rate_limit_error(client, tap):
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, extra_headers={"x-mock-scenario": "error:429"}
        )
    err = info.value
    assert err.status_code == 429
    assert err.code == "mock_429" and err.type == "mock_error"
    assert "mock error 429" in err.message
    s = tap.one_span()  # max_retries=0: exactly one attempt
    assert_fields(
        s,
        {
            "name": f"chat {MODEL}",
            "model": MODEL,
            "response_model": None,
            "response_id": None,
            "stream": 0,
            "http_status": 429,
            "status": "failed",
            "error_type": "mock_error",
            "error_message": "mock error 429",
            "finish_reason": None,
            "input_tokens": None,
            "output_tokens": None,
            "tokens_estimated": 0,
        },
    )
    assert_cost(s, None)


async def test_server_error_streamed_async(aclient, tap):
    with pytest.raises(openai.InternalServerError) as info:
        await aclient.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            stream=True,
            extra_headers={"x-mock-scenario": "error:503"},
        )
    assert info.value.status_code == 503
    s = tap.one_span()
    assert_fields(
        s,
        {
            "stream": 1,
            "http_status": 503,
            "status": "failed",
            "error_type": "mock_error",
            "error_message": "mock error 503",
            "input_tokens": None,
            "output_tokens": None,
        },
    )


# --- Transparency ----------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_bytes_through_llmtap_equal_the_mock_s(stack, client, tap, stream):
    direct = OpenAI(base_url=f"{stack.mock_url}/v1", api_key=API_KEY, max_retries=0, timeout=10)
    kwargs = dict(model=MODEL, messages=MESSAGES, extra_headers={"x-mock-words": "4"})
    if stream:
        kwargs.update(stream=True, stream_options={"include_usage": True})
    try:
        bodies = []
        for c in (client, direct):
            with c.chat.completions.with_streaming_response.create(**kwargs) as r:
                assert r.status_code == 200
                bodies.append(r.read())
    finally:
        direct.close()
    assert bodies[0] == bodies[1]
    s = tap.one_span()  # only the call through llmtap is recorded
    assert_fields(s, chat_span(stream, "chatcmpl-mock", 4))
    assert s["response_body"].encode() == bodies[0]
