"""Agent loops through llmtap, driven by the official SDKs exactly as an app
would drive them: the SDK's own returned objects go back into the history,
only the base URL points at llmtap, and no tracing header is ever sent
(`extra_headers` only steer the mock provider).

llmtap must stitch each loop into one trace on its own (src/record/stitch.rs): the
first LLM call is the root, every later call hangs from it, and every tool
call the model asked for becomes an `execute_tool {name}` span, child of the
call that asked for it, lasting from the end of that call to the arrival of
the request that carried the result.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from anthropic import Anthropic, AsyncAnthropic
from openai import AsyncOpenAI, OpenAI

OPENAI_KEY = "sk-test-agent-loops-0000"
ANTHROPIC_KEY = "sk-ant-test-agent-loops-0000"
CHAT_MODEL = "gpt-4o-mini"
RESP_MODEL = "gpt-4.1-mini"
CLAUDE = "claude-sonnet-4-6"
TOOL_ARGS = '{"city":"Paris"}'  # the mock's arguments for every tool call
RESULT = "18 C"
TOOL_SECONDS = 0.1  # how long the app "runs" the tool
ANSWER_WORDS = 6
ANSWER = "".join(["w0"] + [f" w{i}" for i in range(1, ANSWER_WORDS)])

OPENAI_TOOLS = [
    {
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
]
RESPONSES_TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]
ANTHROPIC_TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather in a city.",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]


def tag() -> str:
    """Unique per loop: conversations of other tests (or reruns) never match."""
    return uuid.uuid4().hex[:12]


@pytest.fixture
def client(stack):
    c = OpenAI(base_url=stack.openai_base, api_key=OPENAI_KEY, max_retries=0, timeout=10)
    yield c
    c.close()


@pytest.fixture
async def aclient(stack):
    c = AsyncOpenAI(base_url=stack.openai_base, api_key=OPENAI_KEY, max_retries=0, timeout=10)
    yield c
    await c.close()


@pytest.fixture
def claude(stack):
    c = Anthropic(base_url=stack.anthropic_base, api_key=ANTHROPIC_KEY, max_retries=0, timeout=10)
    yield c
    c.close()


@pytest.fixture
async def aclaude(stack):
    c = AsyncAnthropic(
        base_url=stack.anthropic_base, api_key=ANTHROPIC_KEY, max_retries=0, timeout=10
    )
    yield c
    await c.close()


# --- what every loop must look like --------------------------------------------


def summary(spans: list[dict]) -> str:
    """One line per span: what a failure needs to show."""
    keys = ("name", "operation_type", "trace_id", "span_id", "parent_span_id",
            "conversation_id", "start_time", "end_time", "stream", "finish_reason")
    return "\n".join(str({k: s[k] for k in keys}) for s in spans)


def assert_loop(
    spans: list[dict],
    *,
    call_id: str,
    result: str = RESULT,
    arguments: str = TOOL_ARGS,
    min_tool_ms: float = TOOL_SECONDS * 1000,
    streams: list[int],
    finishes: list[str],
    path: str,
) -> None:
    """One trace: LLM spans (in order) rooted at the first, one tool span."""
    dump = summary(spans)
    llm = [s for s in spans if s["operation_type"] == "llm_call"]
    tools = [s for s in spans if s["operation_type"] == "tool_call"]
    assert len(llm) == len(streams), f"LLM spans: {len(llm)}\n{dump}"
    assert len(tools) == 1, f"tool spans: {len(tools)}\n{dump}"
    assert len(spans) == len(llm) + 1, dump

    # One trace, rooted at the first LLM call; every later call hangs from it.
    root = llm[0]
    assert all(s["trace_id"] == root["trace_id"] for s in spans), dump
    assert len(root["trace_id"]) == 32 and len(root["span_id"]) == 16, root
    assert root["parent_span_id"] is None, root
    for s in llm[1:]:
        assert s["parent_span_id"] == root["span_id"], f"not under the root:\n{dump}"
    assert len({s["span_id"] for s in spans}) == len(spans), dump

    # One conversation.
    convs = [s["conversation_id"] for s in spans]
    assert all(convs) and len(set(convs)) == 1, f"conversation_id per span: {convs}\n{dump}"

    # The LLM calls themselves, in order.
    starts = [s["start_time"] for s in llm]
    assert starts == sorted(starts) and len(set(starts)) == len(starts), dump
    for s, stream, finish in zip(llm, streams, finishes):
        assert s["path"] == path, s
        assert s["status"] == "completed" and s["http_status"] == 200, s
        assert s["stream"] == stream, s
        assert s["finish_reason"] == finish, s
        assert s["end_time"] >= s["start_time"], s
    for before, after in zip(llm, llm[1:]):
        assert before["end_time"] <= after["start_time"], dump

    # The tool span: asked for by the first call, from its end to the
    # arrival of the request that carried the result.
    t = tools[0]
    assert t["name"] == "execute_tool get_weather", t
    assert t["status"] == "completed", t
    assert t["error_type"] is None and t["error_message"] is None, t
    assert t["parent_span_id"] == root["span_id"], t
    assert t["provider"] == root["provider"] and t["route"] == root["route"], t
    assert t["api_key_hash"] == root["api_key_hash"], t
    assert t["start_time"] == llm[0]["end_time"], (t, llm[0])
    assert t["end_time"] == llm[1]["start_time"], (t, llm[1])
    assert t["duration_ms"] == pytest.approx((t["end_time"] - t["start_time"]) / 1000), t
    assert t["duration_ms"] >= min_tool_ms, t
    assert t["request_body"] == arguments, t
    assert t["response_body"] == result, t
    props = json.loads(t["properties"])
    assert props["gen_ai.tool.call.id"] == call_id, props
    assert props.get("gen_ai.tool.name", "get_weather") == "get_weather", props
    # Ordered by start time: root, tool, then the later calls.
    assert spans[0] is root and spans[1] is t, dump


def chat_text(chunks) -> str:
    text = ""
    for chunk in chunks:
        for choice in chunk.choices:
            text += choice.delta.content or ""
    return text


# --- 1. OpenAI Chat Completions, sync --------------------------------------------


def openai_sync_loop(
    client: OpenAI,
    question: str,
    call_id: str,
    result: str = RESULT,
    pause: float = TOOL_SECONDS,
    barrier: threading.Barrier | None = None,
) -> list:
    """question → tool call → tool result → streamed answer → follow-up."""

    def sync() -> None:
        if barrier is not None:
            barrier.wait()

    messages: list = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": question},
    ]
    sync()
    completion = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=messages,
        tools=OPENAI_TOOLS,
        extra_headers={"x-mock-tool-call": "get_weather", "x-mock-call-id": call_id},
    )
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls"
    messages.append(message)
    for call in message.tool_calls:
        assert (call.id, call.function.name) == (call_id, "get_weather")
        assert json.loads(call.function.arguments) == {"city": "Paris"}
        time.sleep(pause)  # the app runs the tool
        messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    sync()
    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=messages,
        tools=OPENAI_TOOLS,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-mock-words": str(ANSWER_WORDS)},
    )
    answer = chat_text(stream)
    assert answer == ANSWER
    messages.append({"role": "assistant", "content": answer})
    messages.append({"role": "user", "content": "And tomorrow?"})
    sync()
    follow_up = client.chat.completions.create(
        model=CHAT_MODEL, messages=messages, tools=OPENAI_TOOLS
    )
    messages.append(follow_up.choices[0].message)
    assert follow_up.choices[0].finish_reason == "stop"
    return messages


def test_openai_sync_agent_loop_is_one_trace(client, tap):
    t = tag()
    call_id = f"call_{t}"
    openai_sync_loop(client, f"What is the weather in Paris? ({t})", call_id)
    spans = tap.new_spans(4)
    assert_loop(
        spans,
        call_id=call_id,
        streams=[0, 1, 0],
        finishes=["tool_calls", "stop", "stop"],
        path="/v1/chat/completions",
    )
    assert all(s["provider"] == "openai" for s in spans), spans


# --- 2. OpenAI Chat Completions, async, stream helper ------------------------------


async def test_openai_async_agent_loop_with_stream_helper_is_one_trace(aclient, tap):
    t = tag()
    call_id = f"call_{t}"
    messages: list = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": f"What is the weather in Paris? ({t})"},
    ]
    # Turn 1, streamed by the SDK's helper: the model asks for the tool.
    async with aclient.chat.completions.stream(
        model=CHAT_MODEL,
        messages=messages,
        tools=OPENAI_TOOLS,
        stream_options={"include_usage": True},
        extra_headers={"x-mock-tool-call": "get_weather", "x-mock-call-id": call_id},
    ) as stream:
        async for _ in stream:
            pass
        final = await stream.get_final_completion()
    assert final.choices[0].finish_reason == "tool_calls"
    message = final.choices[0].message
    messages.append(message)
    (call,) = message.tool_calls
    assert (call.id, call.function.name, call.function.arguments) == (
        call_id,
        "get_weather",
        TOOL_ARGS,
    )
    await asyncio.sleep(TOOL_SECONDS)
    messages.append({"role": "tool", "tool_call_id": call.id, "content": RESULT})
    # Turn 2: the answer, streamed chunk by chunk.
    chunks = await aclient.chat.completions.create(
        model=CHAT_MODEL,
        messages=messages,
        tools=OPENAI_TOOLS,
        stream=True,
        extra_headers={"x-mock-words": str(ANSWER_WORDS)},
    )
    answer = chat_text([c async for c in chunks])
    assert answer == ANSWER
    messages.append({"role": "assistant", "content": answer})
    # Turn 3: a follow-up question.
    messages.append({"role": "user", "content": "And tomorrow?"})
    follow_up = await aclient.chat.completions.create(
        model=CHAT_MODEL, messages=messages, tools=OPENAI_TOOLS
    )
    assert follow_up.choices[0].finish_reason == "stop"
    spans = tap.new_spans(4)
    assert_loop(
        spans,
        call_id=call_id,
        streams=[1, 1, 0],
        finishes=["tool_calls", "stop", "stop"],
        path="/v1/chat/completions",
    )


# --- 3. Anthropic Messages ------------------------------------------------------------


def test_anthropic_agent_loop_is_one_trace(claude, tap):
    t = tag()
    call_id = f"toolu_{t}"
    system = "You are a helpful assistant."
    messages: list = [{"role": "user", "content": f"What is the weather in Paris? ({t})"}]
    # Turn 1: a tool_use block.
    response = claude.messages.create(
        model=CLAUDE,
        max_tokens=256,
        system=system,
        messages=messages,
        tools=ANTHROPIC_TOOLS,
        extra_headers={"x-mock-tool-call": "get_weather", "x-mock-call-id": call_id},
    )
    assert response.stop_reason == "tool_use"
    messages.append({"role": "assistant", "content": response.content})
    results = []
    for block in response.content:
        if block.type == "tool_use":
            assert (block.id, block.name, block.input) == (call_id, "get_weather", {"city": "Paris"})
            time.sleep(TOOL_SECONDS)
            results.append({"type": "tool_result", "tool_use_id": block.id, "content": RESULT})
    assert len(results) == 1
    messages.append({"role": "user", "content": results})
    # Turn 2: the answer, through the SDK's stream helper.
    with claude.messages.stream(
        model=CLAUDE,
        max_tokens=256,
        system=system,
        messages=messages,
        tools=ANTHROPIC_TOOLS,
        extra_headers={"x-mock-words": str(ANSWER_WORDS)},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == ANSWER and final.stop_reason == "end_turn"
    messages.append({"role": "assistant", "content": final.content})
    # Turn 3: a follow-up question.
    messages.append({"role": "user", "content": "Thanks! And tomorrow?"})
    follow_up = claude.messages.create(
        model=CLAUDE, max_tokens=256, system=system, messages=messages, tools=ANTHROPIC_TOOLS
    )
    assert follow_up.stop_reason == "end_turn"
    spans = tap.new_spans(4)
    assert_loop(
        spans,
        call_id=call_id,
        streams=[0, 1, 0],
        finishes=["tool_use", "end_turn", "end_turn"],
        path="/anthropic/v1/messages",
    )
    assert all(s["provider"] == "anthropic" for s in spans), spans


# --- 4. OpenAI Responses API, chained by previous_response_id ------------------------


def test_responses_loop_chained_by_previous_response_id_is_one_trace(client, tap):
    t = tag()
    call_id = f"call_{t}"
    ids = [f"resp_{t}_{i}" for i in range(3)]
    first = client.responses.create(
        model=RESP_MODEL,
        input=f"What is the weather in Paris? ({t})",
        tools=RESPONSES_TOOLS,
        extra_headers={
            "x-mock-tool-call": "get_weather",
            "x-mock-call-id": call_id,
            "x-mock-id": ids[0],
        },
    )
    assert first.id == ids[0]
    calls = [item for item in first.output if item.type == "function_call"]
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [(call_id, "get_weather", TOOL_ARGS)]
    time.sleep(TOOL_SECONDS)
    second = client.responses.create(
        model=RESP_MODEL,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": c.call_id, "output": RESULT} for c in calls],
        tools=RESPONSES_TOOLS,
        extra_headers={"x-mock-id": ids[1], "x-mock-words": str(ANSWER_WORDS)},
    )
    assert second.output_text == ANSWER
    third = client.responses.create(
        model=RESP_MODEL,
        previous_response_id=second.id,
        input="And tomorrow?",
        tools=RESPONSES_TOOLS,
        extra_headers={"x-mock-id": ids[2]},
    )
    assert third.id == ids[2]
    spans = tap.new_spans(4)
    assert_loop(
        spans,
        call_id=call_id,
        streams=[0, 0, 0],
        finishes=["completed", "completed", "completed"],
        path="/v1/responses",
    )
    llm = [s for s in spans if s["operation_type"] == "llm_call"]
    assert [s["response_id"] for s in llm] == ids, llm


# --- 5. Interleaved loops never mix ----------------------------------------------------


def split_traces(spans: list[dict]) -> dict[str, list[dict]]:
    traces: dict[str, list[dict]] = {}
    for s in spans:
        traces.setdefault(s["trace_id"], []).append(s)
    return traces


def test_two_openai_loops_interleaved_from_threads_never_mix(client, tap):
    barrier = threading.Barrier(2, timeout=10)
    loops = {}  # tag: (call id, tool result, tool time)
    for result, pause in (("18 C", 0.1), ("25 C", 0.2)):
        t = tag()
        loops[t] = (f"call_{t}", result, pause)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(
                openai_sync_loop,
                client,
                f"What is the weather in Paris? ({t})",
                call_id,
                result,
                pause,
                barrier,
            )
            for t, (call_id, result, pause) in loops.items()
        ]
        for f in futures:
            f.result(timeout=30)
    spans = tap.new_spans(8)
    traces = split_traces(spans)
    assert len(traces) == 2, summary(spans)
    seen = set()
    for trace in traces.values():
        tool = next(s for s in trace if s["operation_type"] == "tool_call")
        call_id = json.loads(tool["properties"])["gen_ai.tool.call.id"]
        (t,) = [t for t, (c, _, _) in loops.items() if c == call_id]
        seen.add(t)
        _, result, pause = loops[t]
        assert_loop(
            trace,
            call_id=call_id,
            result=result,
            min_tool_ms=pause * 1000,
            streams=[0, 1, 0],
            finishes=["tool_calls", "stop", "stop"],
            path="/v1/chat/completions",
        )
        # Every LLM call of this trace carries this loop's question only.
        (other,) = set(loops) - {t}
        for s in trace:
            if s["operation_type"] == "llm_call":
                assert t in s["request_body"] and other not in s["request_body"], s
    assert seen == set(loops)
    convs = {trace[0]["conversation_id"] for trace in traces.values()}
    assert len(convs) == 2, convs


async def test_two_anthropic_loops_interleaved_as_tasks_never_mix(aclaude, tap):
    system = "You are a helpful assistant."
    turn_gate = [asyncio.Barrier(2) for _ in range(3)]

    async def loop(t: str, call_id: str, result: str, pause: float) -> None:
        messages: list = [{"role": "user", "content": f"What is the weather in Paris? ({t})"}]
        await turn_gate[0].wait()
        response = await aclaude.messages.create(
            model=CLAUDE,
            max_tokens=256,
            system=system,
            messages=messages,
            tools=ANTHROPIC_TOOLS,
            extra_headers={"x-mock-tool-call": "get_weather", "x-mock-call-id": call_id},
        )
        messages.append({"role": "assistant", "content": response.content})
        (block,) = [b for b in response.content if b.type == "tool_use"]
        assert block.id == call_id
        await asyncio.sleep(pause)
        messages.append(
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": result}]}
        )
        await turn_gate[1].wait()
        async with aclaude.messages.stream(
            model=CLAUDE,
            max_tokens=256,
            system=system,
            messages=messages,
            tools=ANTHROPIC_TOOLS,
            extra_headers={"x-mock-words": str(ANSWER_WORDS)},
        ) as stream:
            final = await stream.get_final_message()
        messages.append({"role": "assistant", "content": final.content})
        messages.append({"role": "user", "content": "Thanks! And tomorrow?"})
        await turn_gate[2].wait()
        await aclaude.messages.create(
            model=CLAUDE, max_tokens=256, system=system, messages=messages, tools=ANTHROPIC_TOOLS
        )

    loops = {}
    for result, pause in (("18 C", 0.15), ("25 C", 0.1)):
        t = tag()
        loops[t] = (f"toolu_{t}", result, pause)
    await asyncio.wait_for(
        asyncio.gather(*(loop(t, *v) for t, v in loops.items())), timeout=30
    )
    spans = tap.new_spans(8)
    traces = split_traces(spans)
    assert len(traces) == 2, summary(spans)
    for trace in traces.values():
        tool = next(s for s in trace if s["operation_type"] == "tool_call")
        call_id = json.loads(tool["properties"])["gen_ai.tool.call.id"]
        (t,) = [t for t, (c, _, _) in loops.items() if c == call_id]
        _, result, pause = loops[t]
        assert_loop(
            trace,
            call_id=call_id,
            result=result,
            min_tool_ms=pause * 1000,
            streams=[0, 1, 0],
            finishes=["tool_use", "end_turn", "end_turn"],
            path="/anthropic/v1/messages",
        )
        (other,) = set(loops) - {t}
        for s in trace:
            if s["operation_type"] == "llm_call":
                assert t in s["request_body"] and other not in s["request_body"], s
