"""The official `anthropic` Python SDK through llmtap, against the mock provider.

Input tokens on spans follow OpenTelemetry's rule for Anthropic: uncached
input + cache reads + cache writes (the API reports the three apart).
"""

from __future__ import annotations

import anthropic
import pytest
from anthropic import Anthropic, AsyncAnthropic

from helpers import assert_cost, assert_fields, assert_ttft, expected_cost

API_KEY = "sk-ant-test-sdk-0000"
MODEL = "claude-sonnet-4-6"
MESSAGES = [{"role": "user", "content": "Say some words."}]
INPUT = 7 + 3 * len(MESSAGES)  # mock: input_tokens = 7 + 3 x messages
WORDS = 8
TEXT = "".join(["w0"] + [f" w{i}" for i in range(1, WORDS)])
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
TOOL_TOKENS = 9


@pytest.fixture
def client(stack):
    c = Anthropic(base_url=stack.anthropic_base, api_key=API_KEY, max_retries=0, timeout=10)
    yield c
    c.close()


@pytest.fixture
async def aclient(stack):
    c = AsyncAnthropic(
        base_url=stack.anthropic_base, api_key=API_KEY, max_retries=0, timeout=10
    )
    yield c
    await c.close()


def messages_span(stream: bool, finish: str | None = "end_turn", status: str = "completed") -> dict:
    return {
        "name": f"chat {MODEL}",
        "operation_type": "llm_call",
        "provider": "anthropic",
        "route": "/anthropic",
        "method": "POST",
        "path": "/anthropic/v1/messages",
        "model": MODEL,
        "response_model": MODEL,
        "response_id": "msg_mock",
        "stream": int(stream),
        "http_status": 200,
        "status": status,
        "finish_reason": finish,
    }


def usage_span(output: int, cached: int = 0, written: int = 0) -> dict:
    return {
        "error_type": None,
        "error_message": None,
        "input_tokens": INPUT + cached + written,
        "output_tokens": output,
        "cached_input_tokens": cached,
        "cache_write_tokens": written,
        "reasoning_tokens": None,
        "tokens_estimated": 0,
    }


def test_messages_create(client, tap):
    msg = client.messages.create(model=MODEL, max_tokens=256, messages=MESSAGES)
    assert (msg.id, msg.model, msg.role, msg.stop_reason) == ("msg_mock", MODEL, "assistant", "end_turn")
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == TEXT
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (INPUT, WORDS)
    s = tap.one_span()
    assert_fields(s, messages_span(False))
    assert_fields(s, usage_span(WORDS))
    assert s["api_key_hash"] and len(s["api_key_hash"]) == 16
    assert_cost(s, expected_cost(MODEL, input=INPUT, output=WORDS))
    assert_ttft(s, False)


def test_messages_create_with_cache_read_write_and_user(client, tap):
    hdr = {"x-mock-cached": "30", "x-mock-cache-write": "20", "x-mock-words": "4"}
    msg = client.messages.create(
        model=MODEL,
        max_tokens=256,
        messages=MESSAGES,
        metadata={"user_id": "user-42"},
        extra_headers=hdr,
    )
    assert msg.content[0].text == "w0 w1 w2 w3"
    u = msg.usage
    # The API reports the three input counts apart...
    assert (u.input_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens) == (INPUT, 30, 20)
    s = tap.one_span()
    # ...the span adds them up (OpenTelemetry's gen_ai.usage.input_tokens).
    assert_fields(s, messages_span(False))
    assert_fields(s, usage_span(4, cached=30, written=20))
    assert s["user_id"] == "user-42"
    assert_cost(s, expected_cost(MODEL, input=INPUT + 50, output=4, cached=30, cache_write=20))


def test_messages_stream_helper(client, tap):
    hdr = {"x-mock-cached": "5", "x-mock-cache-write": "2"}
    with client.messages.stream(
        model=MODEL, max_tokens=256, messages=MESSAGES, extra_headers=hdr
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == TEXT
    assert final.content[0].text == TEXT
    assert (final.id, final.stop_reason) == ("msg_mock", "end_turn")
    assert (final.usage.input_tokens, final.usage.output_tokens) == (INPUT, WORDS)
    assert final.usage.cache_read_input_tokens == 5
    assert final.usage.cache_creation_input_tokens == 2
    s = tap.one_span()
    assert_fields(s, messages_span(True))
    assert_fields(s, usage_span(WORDS, cached=5, written=2))
    assert_cost(s, expected_cost(MODEL, input=INPUT + 7, output=WORDS, cached=5, cache_write=2))
    assert_ttft(s, True)


async def test_messages_stream_async_raw_events(aclient, tap):
    stream = await aclient.messages.create(
        model=MODEL,
        max_tokens=256,
        messages=MESSAGES,
        stream=True,
        extra_headers={"x-mock-words": "3"},
    )
    types, text, out = [], "", None
    async for event in stream:
        types.append(event.type)
        if event.type == "content_block_delta":
            text += event.delta.text
        elif event.type == "message_delta":
            out = event.usage.output_tokens
    assert types[0] == "message_start" and types[-1] == "message_stop"
    assert (text, out) == ("w0 w1 w2", 3)
    s = tap.one_span()
    assert_fields(s, messages_span(True))
    assert_fields(s, usage_span(3))
    assert_cost(s, expected_cost(MODEL, input=INPUT, output=3))


def test_tool_use_non_streamed(client, tap):
    msg = client.messages.create(
        model=MODEL,
        max_tokens=256,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],
        extra_headers={"x-mock-tool-call": "get_weather"},
    )
    assert msg.stop_reason == "tool_use"
    (block,) = [b for b in msg.content if b.type == "tool_use"]
    assert (block.id, block.name, block.input) == ("toolu_mock_0", "get_weather", {"city": "Paris"})
    assert msg.usage.output_tokens == TOOL_TOKENS
    s = tap.one_span()
    assert_fields(s, messages_span(False, "tool_use"))
    assert_fields(s, usage_span(TOOL_TOKENS))
    assert_cost(s, expected_cost(MODEL, input=INPUT, output=TOOL_TOKENS))


async def test_tool_use_streamed_async_helper(aclient, tap):
    async with aclient.messages.stream(
        model=MODEL,
        max_tokens=256,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],
        extra_headers={"x-mock-tool-call": "get_weather"},
    ) as stream:
        partial = ""
        async for event in stream:
            if event.type == "input_json":
                partial += event.partial_json
        final = await stream.get_final_message()
    assert partial == '{"city":"Paris"}'
    assert final.stop_reason == "tool_use"
    (block,) = [b for b in final.content if b.type == "tool_use"]
    assert (block.name, block.input) == ("get_weather", {"city": "Paris"})
    assert final.usage.output_tokens == TOOL_TOKENS
    s = tap.one_span()
    assert_fields(s, messages_span(True, "tool_use"))
    assert_fields(s, usage_span(TOOL_TOKENS))
    assert_ttft(s, True)


def test_thinking_streamed(client, tap):
    with client.messages.stream(
        model=MODEL,
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=MESSAGES,
        extra_headers={"x-mock-thinking": "1", "x-mock-words": "2"},
    ) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["thinking", "text"]
    assert (final.content[0].thinking, final.content[0].signature) == ("Let me think.", "sig_mock")
    assert final.content[1].text == "w0 w1"
    s = tap.one_span()
    assert_fields(s, messages_span(True))
    # The reported output count already covers the thinking block.
    assert_fields(s, usage_span(2))


def test_count_tokens(client, tap):
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Count me"},
    ]
    got = client.messages.count_tokens(model=MODEL, messages=messages)
    assert got.input_tokens == 7 + 3 * 3
    s = tap.one_span()
    assert_fields(
        s,
        {
            "name": f"count_tokens {MODEL}",
            "operation_type": "count_tokens",
            "provider": "anthropic",
            "route": "/anthropic",
            "path": "/anthropic/v1/messages/count_tokens",
            "model": MODEL,
            "response_model": None,
            "response_id": None,
            "stream": 0,
            "http_status": 200,
            "status": "completed",
            "error_type": None,
            "finish_reason": None,
            "input_tokens": 16,
            "output_tokens": None,
            "cached_input_tokens": None,
            "cache_write_tokens": None,
            "tokens_estimated": 0,
        },
    )


def test_overloaded_error(client, tap):
    with pytest.raises(anthropic.OverloadedError) as info:
        client.messages.create(
            model=MODEL,
            max_tokens=256,
            messages=MESSAGES,
            extra_headers={"x-mock-scenario": "error:529"},
        )
    assert info.value.status_code == 529
    assert info.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "mock error 529"},
    }
    s = tap.one_span()  # max_retries=0: one attempt
    assert_fields(
        s,
        {
            "name": f"chat {MODEL}",
            "provider": "anthropic",
            "model": MODEL,
            "response_model": None,
            "response_id": None,
            "stream": 0,
            "http_status": 529,
            "status": "failed",
            "error_type": "overloaded_error",
            "error_message": "mock error 529",
            "finish_reason": None,
            "input_tokens": None,
            "output_tokens": None,
            "tokens_estimated": 0,
        },
    )
    assert_cost(s, None)
    assert_ttft(s, False)


def test_overloaded_mid_stream(client, tap):
    with pytest.raises(anthropic.APIStatusError) as info:
        with client.messages.stream(
            model=MODEL,
            max_tokens=256,
            messages=MESSAGES,
            extra_headers={"x-mock-scenario": "stream-error"},
        ) as stream:
            for _ in stream:
                pass
    assert "Overloaded" in str(info.value)
    s = tap.one_span()
    assert_fields(s, messages_span(True, None, "failed"))
    assert_fields(
        s,
        {
            "error_type": "overloaded_error",
            "error_message": "Overloaded",
            # Input from message_start; output counted from the one delta
            # seen ("w0": o200k splits it into "w" + "0").
            "input_tokens": INPUT,
            "output_tokens": 2,
            "tokens_estimated": 1,
        },
    )
    assert_ttft(s, True)
