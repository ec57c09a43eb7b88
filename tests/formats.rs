//! End-to-end tests of every wire format llmtap parses: Chat Completions
//! (tool calls, `n`, refusals, vLLM-style usage chunks, stream errors,
//! reasoning), the Responses API, Embeddings, legacy Completions, Anthropic
//! Messages and `count_tokens`, OpenAI-compatible providers configured by
//! route alone (Groq, Azure), other paths, and gzip. Each test checks that
//! the client's bytes equal the mock's own and that the span has exact
//! fields.

mod common;
mod mock;

use common::*;
use http::{Method, StatusCode};
use llmtap::record::pricing::{PriceTable, TokenCounts};
use llmtap::record::providers::{estimate_input, Endpoint};
use llmtap::record::tokens::{self, Encoding};
use serde_json::{json, Value};

/// The mock's default number of reply words.
const WORDS: i64 = 8;
/// Chat prompt tokens the mock reports for `chat_body` (7 + 3 × 2 messages).
const CHAT_P: i64 = 7 + 3 * 2;
/// The mock's chat `stream-error` message.
const CHAT_STREAM_ERROR: &str = "The server had an error while processing your request.";
const GPT4O_MINI: &str = "gpt-4o-mini-2024-07-18";
const CLAUDE: &str = "claude-sonnet-4-5";
const ANT_KEY: &str = "sk-ant-test-0123";

// === helpers ===

/// POSTs `body` directly to the mock at `direct` and through llmtap at
/// `via`; asserts the status and the body bytes are identical and returns
/// the response through llmtap.
async fn both(h: &Harness, via: &str, direct: &str, headers: &[(&str, &str)], body: &str) -> Got {
    let c = client();
    let d = post(&c, &h.direct(direct), headers, body).await;
    let v = post(&c, &h.url(via), headers, body).await;
    assert_eq!(v.status, d.status, "status differs for {via}");
    assert_eq!(v.body, d.body, "bytes through llmtap differ for {via}");
    assert_eq!(
        v.headers.get("content-encoding"),
        d.headers.get("content-encoding")
    );
    v
}

/// `both` for an OpenAI path (same path through llmtap and direct).
async fn openai(h: &Harness, path: &str, headers: &[(&str, &str)], body: &str) -> Got {
    both(h, path, path, headers, body).await
}

/// `both` for an Anthropic path: `/anthropic{path}` through llmtap (the
/// prefix is stripped), `path` direct, with Anthropic's auth headers.
async fn anthropic(h: &Harness, path: &str, headers: &[(&str, &str)], body: &str) -> Got {
    let mut hdr = vec![("x-api-key", ANT_KEY), ("anthropic-version", "2023-06-01")];
    hdr.extend_from_slice(headers);
    both(h, &format!("/anthropic{path}"), path, &hdr, body).await
}

/// Asserts every field of `want` (an object keyed by column) equals the span's.
fn assert_fields(s: &Value, want: Value) {
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(&s[k], v, "span field {k:?} in {s:#}");
    }
}

fn num(s: &Value, k: &str) -> i64 {
    s[k].as_i64().unwrap_or(0)
}

/// `cost_usd` equals the shipped table's cost for `model` of the span's
/// (already asserted) token counts, or is null when `model` is None or
/// has no price.
fn assert_cost(s: &Value, model: Option<&str>) {
    let tokens = TokenCounts {
        input: num(s, "input_tokens"),
        output: num(s, "output_tokens"),
        cached_input: num(s, "cached_input_tokens"),
        cache_write: num(s, "cache_write_tokens"),
        reasoning: num(s, "reasoning_tokens"),
    };
    let table = PriceTable::shipped().unwrap();
    match model.and_then(|m| table.cost(m, &tokens)) {
        Some(want) => {
            let got = s["cost_usd"]
                .as_f64()
                .unwrap_or_else(|| panic!("no cost: {s:#}"));
            assert!((got - want).abs() < 1e-12, "cost {got} != {want}: {s:#}");
            assert!(want > 0.0);
        }
        None => assert!(s["cost_usd"].is_null(), "cost should be null: {s:#}"),
    }
}

/// A streamed call with content has a TTFT within its duration; others none.
fn assert_ttft(s: &Value, expected: bool) {
    if expected {
        let ttft = s["ttft_ms"]
            .as_f64()
            .unwrap_or_else(|| panic!("no ttft: {s:#}"));
        assert!(
            ttft > 0.0 && ttft <= s["duration_ms"].as_f64().unwrap(),
            "{s:#}"
        );
    } else {
        assert!(s["ttft_ms"].is_null(), "unexpected ttft: {s:#}");
    }
}

/// A chat body with the given extra top-level fields.
fn chat_with(stream: bool, include_usage: bool, extra: Value) -> String {
    let mut v: Value = serde_json::from_str(&chat_body(stream, include_usage)).unwrap();
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v.to_string()
}

fn count(text: &str) -> i64 {
    tokens::count(Encoding::O200k, text) as i64
}

fn words_text(n: usize) -> String {
    mock::reply_words(n).concat()
}

/// The exact, completed chat span of `gpt-4o-mini` (non-estimated usage).
fn assert_chat_ok(s: &Value, stream: bool, output: i64, reasoning: i64, finish: &str) {
    assert_fields(
        s,
        json!({
            "name": "chat gpt-4o-mini", "operation_type": "llm_call", "provider": "openai",
            "route": "/v1", "path": "/v1/chat/completions", "model": "gpt-4o-mini",
            "response_model": GPT4O_MINI, "response_id": "chatcmpl-mock",
            "stream": stream as i64, "http_status": 200, "status": "completed",
            "error_type": null, "error_message": null, "finish_reason": finish,
            "input_tokens": CHAT_P, "output_tokens": output, "cached_input_tokens": 0,
            "cache_write_tokens": null, "reasoning_tokens": reasoning, "tokens_estimated": 0,
        }),
    );
    assert_cost(s, Some(GPT4O_MINI));
    assert_ttft(s, stream);
}

// === 1. Chat Completions ===

#[tokio::test]
async fn chat_tool_call_non_streamed_and_streamed() {
    let h = Harness::start().await;
    let hdr = [("x-mock-tool-call", "get_weather")];
    let got = openai(&h, "/v1/chat/completions", &hdr, &chat_body(false, false)).await;
    let call = &got.json()["choices"][0]["message"]["tool_calls"][0]["function"];
    assert_eq!(call["arguments"], mock::TOOL_ARGS);
    openai(&h, "/v1/chat/completions", &hdr, &chat_body(true, true)).await;
    let spans = h.spans(2).await;
    let out = mock::TOOL_CALL_TOKENS as i64;
    assert_chat_ok(&spans[0], false, out, 0, "tool_calls");
    assert_chat_ok(&spans[1], true, out, 0, "tool_calls");
    assert_eq!(out, 9);
}

#[tokio::test]
async fn chat_n_choices_non_streamed_and_streamed() {
    let h = Harness::start().await;
    let n = json!({"n": 3});
    let got = openai(
        &h,
        "/v1/chat/completions",
        &[],
        &chat_with(false, false, n.clone()),
    )
    .await;
    assert_eq!(got.json()["choices"].as_array().unwrap().len(), 3);
    openai(&h, "/v1/chat/completions", &[], &chat_with(true, true, n)).await;
    let spans = h.spans(2).await;
    assert_chat_ok(&spans[0], false, WORDS * 3, 0, "stop");
    assert_chat_ok(&spans[1], true, WORDS * 3, 0, "stop");
}

#[tokio::test]
async fn chat_refusal_streamed_marks_ttft() {
    let h = Harness::start().await;
    let hdr = [("x-mock-scenario", "refusal")];
    openai(&h, "/v1/chat/completions", &hdr, &chat_body(true, true)).await;
    let s = h.one_span().await;
    assert_chat_ok(&s, true, mock::REFUSAL_TOKENS as i64, 0, "stop");
}

#[tokio::test]
async fn chat_usage_chunk_with_null_choices_is_exact() {
    let h = Harness::start().await;
    let hdr = [("x-mock-scenario", "choices-null"), ("x-mock-words", "5")];
    let got = openai(&h, "/v1/chat/completions", &hdr, &chat_body(true, true)).await;
    assert!(std::str::from_utf8(&got.body)
        .unwrap()
        .contains("\"choices\":null"));
    let s = h.one_span().await;
    assert_chat_ok(&s, true, 5, 0, "stop");
}

#[tokio::test]
async fn chat_stream_error_fails_the_span_and_estimates_what_was_seen() {
    let h = Harness::start().await;
    let body = chat_body(true, false);
    let hdr = [("x-mock-scenario", "stream-error")];
    let got = openai(&h, "/v1/chat/completions", &hdr, &body).await;
    assert_eq!(got.status, StatusCode::OK);
    let s = h.one_span().await;
    let input = estimate_input(Endpoint::Chat, body.as_bytes(), Encoding::O200k).unwrap();
    assert_fields(
        &s,
        json!({
            "name": "chat gpt-4o-mini", "model": "gpt-4o-mini", "response_model": GPT4O_MINI,
            "response_id": "chatcmpl-mock", "stream": 1, "http_status": 200,
            "status": "failed", "error_type": "server_error",
            "error_message": CHAT_STREAM_ERROR, "finish_reason": null,
            // Only the first word was generated before the error.
            "input_tokens": input, "output_tokens": count("w0"),
            "cached_input_tokens": null, "reasoning_tokens": null, "tokens_estimated": 1,
        }),
    );
    assert_cost(&s, Some(GPT4O_MINI));
    assert_ttft(&s, true);
}

/// A stream that asked for a usage chunk but failed before it came has no
/// usage from the provider: its tokens are counted from what was seen, as
/// for a stream that did not ask (docs/troubleshooting.md: "tokens seen so far").
#[tokio::test]
async fn chat_stream_error_with_include_usage_still_estimates_output() {
    let h = Harness::start().await;
    let body = chat_body(true, true);
    let hdr = [("x-mock-scenario", "stream-error")];
    openai(&h, "/v1/chat/completions", &hdr, &body).await;
    let s = h.one_span().await;
    let input = estimate_input(Endpoint::Chat, body.as_bytes(), Encoding::O200k).unwrap();
    assert_fields(
        &s,
        json!({
            "stream": 1, "status": "failed", "error_type": "server_error",
            "error_message": CHAT_STREAM_ERROR, "input_tokens": input,
            "output_tokens": count("w0"), "tokens_estimated": 1,
        }),
    );
    assert_cost(&s, Some(GPT4O_MINI));
}

#[tokio::test]
async fn chat_reasoning_tokens_are_part_of_output() {
    let h = Harness::start().await;
    let hdr = [("x-mock-reasoning", "4"), ("x-mock-words", "5")];
    let got = openai(&h, "/v1/chat/completions", &hdr, &chat_body(false, false)).await;
    assert_eq!(got.json()["usage"]["completion_tokens"], 9);
    openai(&h, "/v1/chat/completions", &hdr, &chat_body(true, true)).await;
    let spans = h.spans(2).await;
    assert_chat_ok(&spans[0], false, 9, 4, "stop");
    assert_chat_ok(&spans[1], true, 9, 4, "stop");
}

// === 2. Responses API ===

const RESP_MODEL: &str = "gpt-4.1-mini";
const RESP_RMODEL: &str = "gpt-4.1-mini-2024-07-18";

fn responses_body(stream: bool) -> String {
    json!({"model": RESP_MODEL, "input": "Say some words.", "stream": stream}).to_string()
}

/// Responses input tokens the mock reports for one input item.
const RESP_P: i64 = 7 + 3;

fn responses_fields(stream: bool, status: &str, finish: Value) -> Value {
    json!({
        "name": "chat gpt-4.1-mini", "operation_type": "llm_call", "provider": "openai",
        "path": "/v1/responses", "model": RESP_MODEL, "response_model": RESP_RMODEL,
        "response_id": "resp_mock", "stream": stream as i64, "http_status": 200,
        "status": status, "finish_reason": finish,
    })
}

#[tokio::test]
async fn responses_text_non_streamed_and_streamed_with_cache_and_reasoning() {
    let h = Harness::start().await;
    let hdr = [
        ("x-mock-cached", "4"),
        ("x-mock-reasoning", "3"),
        ("x-mock-words", "6"),
    ];
    for stream in [false, true] {
        openai(&h, "/v1/responses", &hdr, &responses_body(stream)).await;
    }
    let spans = h.spans(2).await;
    for (s, stream) in spans.iter().zip([false, true]) {
        assert_fields(s, responses_fields(stream, "completed", json!("completed")));
        assert_fields(
            s,
            json!({
                "error_type": null, "error_message": null,
                "input_tokens": RESP_P, "output_tokens": 6 + 3, "cached_input_tokens": 4,
                "cache_write_tokens": null, "reasoning_tokens": 3, "tokens_estimated": 0,
            }),
        );
        assert_cost(s, Some(RESP_RMODEL));
        assert_ttft(s, stream);
    }
}

#[tokio::test]
async fn responses_function_call_non_streamed_and_streamed() {
    let h = Harness::start().await;
    let hdr = [("x-mock-tool-call", "get_weather")];
    for stream in [false, true] {
        openai(&h, "/v1/responses", &hdr, &responses_body(stream)).await;
    }
    let spans = h.spans(2).await;
    for (s, stream) in spans.iter().zip([false, true]) {
        assert_fields(s, responses_fields(stream, "completed", json!("completed")));
        assert_fields(
            s,
            json!({
                "input_tokens": RESP_P, "output_tokens": mock::TOOL_CALL_TOKENS,
                "cached_input_tokens": 0, "reasoning_tokens": 0, "tokens_estimated": 0,
            }),
        );
        assert_cost(s, Some(RESP_RMODEL));
        // Streamed argument fragments are generated content.
        assert_ttft(s, stream);
    }
}

#[tokio::test]
async fn responses_incomplete_is_completed_with_max_output_tokens() {
    let h = Harness::start().await;
    let hdr = [("x-mock-scenario", "incomplete")];
    for stream in [false, true] {
        openai(&h, "/v1/responses", &hdr, &responses_body(stream)).await;
    }
    let spans = h.spans(2).await;
    for (s, stream) in spans.iter().zip([false, true]) {
        assert_fields(
            s,
            responses_fields(stream, "completed", json!("max_output_tokens")),
        );
        assert_fields(
            s,
            json!({"error_type": null, "input_tokens": RESP_P, "output_tokens": WORDS,
                   "tokens_estimated": 0}),
        );
        assert_cost(s, Some(RESP_RMODEL));
    }
}

#[tokio::test]
async fn responses_failed_stream_fails_the_span_with_the_message() {
    let h = Harness::start().await;
    let body = responses_body(true);
    let hdr = [("x-mock-scenario", "response-failed")];
    openai(&h, "/v1/responses", &hdr, &body).await;
    let s = h.one_span().await;
    assert_fields(&s, responses_fields(true, "failed", json!("failed")));
    // The failed response reports `usage: null`: the code estimates the
    // input from the request and counts the (empty) output seen as 0.
    let input = estimate_input(Endpoint::Responses, body.as_bytes(), Encoding::O200k).unwrap();
    assert_fields(
        &s,
        json!({
            "error_type": "server_error", "error_message": "mock failure",
            "input_tokens": input, "output_tokens": 0, "cached_input_tokens": null,
            "reasoning_tokens": null, "tokens_estimated": 1,
        }),
    );
    assert_cost(&s, Some(RESP_RMODEL));
    assert_ttft(&s, false);
}

#[tokio::test]
async fn responses_stream_error_event_fails_the_span() {
    let h = Harness::start().await;
    let body = responses_body(true);
    let hdr = [("x-mock-scenario", "stream-error")];
    openai(&h, "/v1/responses", &hdr, &body).await;
    let s = h.one_span().await;
    assert_fields(&s, responses_fields(true, "failed", Value::Null));
    let input = estimate_input(Endpoint::Responses, body.as_bytes(), Encoding::O200k).unwrap();
    assert_fields(
        &s,
        json!({
            "error_type": "server_error", "error_message": "mock stream error",
            "input_tokens": input, "output_tokens": count("w0"), "tokens_estimated": 1,
        }),
    );
    assert_cost(&s, Some(RESP_RMODEL));
    assert_ttft(&s, true);
}

// === 3. Embeddings ===

#[tokio::test]
async fn embeddings_float_and_base64() {
    let h = Harness::start().await;
    let float = json!({"model": "text-embedding-3-small", "input": ["hello", "world"]});
    let b64 = json!({"model": "text-embedding-3-small", "input": "hello",
                     "encoding_format": "base64"});
    let got = openai(&h, "/v1/embeddings", &[], &float.to_string()).await;
    assert!(got.json()["data"][1]["embedding"].is_array());
    let got = openai(&h, "/v1/embeddings", &[], &b64.to_string()).await;
    assert!(got.json()["data"][0]["embedding"].is_string());
    let spans = h.spans(2).await;
    // The mock reports 2 × inputs + 3 prompt tokens.
    for (s, input) in spans.iter().zip([2 * 2 + 3, 2 + 3]) {
        assert_fields(
            s,
            json!({
                "name": "embeddings text-embedding-3-small", "operation_type": "embedding",
                "provider": "openai", "path": "/v1/embeddings",
                "model": "text-embedding-3-small", "response_model": "text-embedding-3-small",
                "response_id": null, "stream": 0, "http_status": 200, "status": "completed",
                "error_type": null, "finish_reason": null, "input_tokens": input,
                "output_tokens": 0, "cached_input_tokens": null, "reasoning_tokens": null,
                "tokens_estimated": 0,
            }),
        );
        assert_cost(s, Some("text-embedding-3-small"));
        assert_ttft(s, false);
    }
}

// === 4. Legacy Completions ===

#[tokio::test]
async fn legacy_completions_non_streamed_and_streamed() {
    let h = Harness::start().await;
    let model = "gpt-3.5-turbo-instruct";
    let body = |stream: bool, usage: bool| {
        let mut v = json!({"model": model, "prompt": "Say this is a test", "stream": stream});
        if usage {
            v["stream_options"] = json!({"include_usage": true});
        }
        v.to_string()
    };
    let hdr = [("x-mock-words", "6")];
    openai(&h, "/v1/completions", &hdr, &body(false, false)).await;
    openai(&h, "/v1/completions", &hdr, &body(true, true)).await;
    let no_usage = body(true, false);
    openai(&h, "/v1/completions", &hdr, &no_usage).await;
    let spans = h.spans(3).await;
    let rmodel = "gpt-3.5-turbo-instruct-2024-07-18";
    let enc = tokens::encoding_for(Some(model));
    let est_in = estimate_input(Endpoint::Completions, no_usage.as_bytes(), enc).unwrap();
    let est_out = tokens::count(enc, &words_text(6)) as i64;
    let want = [
        (false, 5, 6, 0),
        (true, 5, 6, 0),
        // No usage chunk asked for: estimated with the model's encoding.
        (true, est_in, est_out, 1),
    ];
    for (s, (stream, input, output, estimated)) in spans.iter().zip(want) {
        assert_fields(
            s,
            json!({
                "name": "text_completion gpt-3.5-turbo-instruct", "operation_type": "llm_call",
                "path": "/v1/completions", "model": model, "response_model": rmodel,
                "response_id": "cmpl-mock", "stream": stream as i64, "http_status": 200,
                "status": "completed", "error_type": null, "finish_reason": "stop",
                "input_tokens": input, "output_tokens": output, "cached_input_tokens": null,
                "reasoning_tokens": null, "tokens_estimated": estimated,
            }),
        );
        assert_cost(s, Some(rmodel));
        assert_ttft(s, stream);
    }
}

// === 5. Anthropic Messages ===

fn messages_body(stream: bool, extra: Value) -> String {
    let mut v = json!({
        "model": CLAUDE, "max_tokens": 256, "stream": stream,
        "messages": [{"role": "user", "content": "Say some words."}],
    });
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v.to_string()
}

/// Anthropic input tokens the mock reports for one message.
const ANT_P: i64 = 7 + 3;

fn messages_fields(stream: bool, status: &str, finish: Value) -> Value {
    json!({
        "name": "chat claude-sonnet-4-5", "operation_type": "llm_call",
        "provider": "anthropic", "route": "/anthropic", "path": "/anthropic/v1/messages",
        "model": CLAUDE, "response_model": CLAUDE, "response_id": "msg_mock",
        "stream": stream as i64, "http_status": 200, "status": status,
        "finish_reason": finish,
    })
}

#[tokio::test]
async fn anthropic_messages_with_cache_read_and_write_and_user() {
    assert!(PriceTable::shipped().unwrap().lookup(CLAUDE).is_some());
    let h = Harness::start().await;
    let hdr = [("x-mock-cached", "30"), ("x-mock-cache-write", "20")];
    let user = json!({"metadata": {"user_id": "user-42"}});
    for stream in [false, true] {
        anthropic(
            &h,
            "/v1/messages",
            &hdr,
            &messages_body(stream, user.clone()),
        )
        .await;
    }
    assert_eq!(h.mock.state.last_request().unwrap().uri, "/v1/messages");
    let spans = h.spans(2).await;
    for (s, stream) in spans.iter().zip([false, true]) {
        assert_fields(s, messages_fields(stream, "completed", json!("end_turn")));
        assert_fields(
            s,
            json!({
                "error_type": null, "error_message": null, "user_id": "user-42",
                // OpenTelemetry: input = uncached + cache read + cache write.
                "input_tokens": ANT_P + 30 + 20, "output_tokens": WORDS,
                "cached_input_tokens": 30, "cache_write_tokens": 20,
                "reasoning_tokens": null, "tokens_estimated": 0,
            }),
        );
        assert_cost(s, Some(CLAUDE));
        assert_ttft(s, stream);
        assert!(!s.to_string().contains(ANT_KEY));
    }
}

#[tokio::test]
async fn anthropic_tool_use_streamed() {
    let h = Harness::start().await;
    let hdr = [("x-mock-tool-call", "get_weather")];
    anthropic(&h, "/v1/messages", &hdr, &messages_body(true, json!({}))).await;
    let s = h.one_span().await;
    assert_fields(&s, messages_fields(true, "completed", json!("tool_use")));
    assert_fields(
        &s,
        json!({"input_tokens": ANT_P, "output_tokens": mock::TOOL_CALL_TOKENS,
               "cached_input_tokens": 0, "cache_write_tokens": 0, "tokens_estimated": 0}),
    );
    assert_cost(&s, Some(CLAUDE));
    assert_ttft(&s, true);
}

#[tokio::test]
async fn anthropic_thinking_non_streamed_and_streamed() {
    let h = Harness::start().await;
    let hdr = [("x-mock-thinking", "1"), ("x-mock-words", "3")];
    for stream in [false, true] {
        let got = anthropic(&h, "/v1/messages", &hdr, &messages_body(stream, json!({}))).await;
        assert!(std::str::from_utf8(&got.body)
            .unwrap()
            .contains(mock::THINKING_TEXT));
    }
    let spans = h.spans(2).await;
    for (s, stream) in spans.iter().zip([false, true]) {
        assert_fields(s, messages_fields(stream, "completed", json!("end_turn")));
        // The mock's output count already covers the thinking block.
        assert_fields(
            s,
            json!({"input_tokens": ANT_P, "output_tokens": 3, "reasoning_tokens": null,
                   "tokens_estimated": 0}),
        );
        assert_cost(s, Some(CLAUDE));
        assert_ttft(s, stream);
    }
}

#[tokio::test]
async fn anthropic_stream_error_fails_with_overloaded_error() {
    let h = Harness::start().await;
    let hdr = [("x-mock-scenario", "stream-error")];
    anthropic(&h, "/v1/messages", &hdr, &messages_body(true, json!({}))).await;
    let s = h.one_span().await;
    assert_fields(&s, messages_fields(true, "failed", Value::Null));
    assert_fields(
        &s,
        json!({
            "error_type": "overloaded_error", "error_message": "Overloaded",
            // Input as reported by message_start; output counted from the
            // one delta seen (message_start's placeholder 1 is not used).
            "input_tokens": ANT_P, "output_tokens": count("w0"),
            "cached_input_tokens": 0, "cache_write_tokens": 0, "tokens_estimated": 1,
        }),
    );
    assert_cost(&s, Some(CLAUDE));
    assert_ttft(&s, true);
}

#[tokio::test]
async fn anthropic_rate_limit_passes_through_and_fails_the_span() {
    let h = Harness::start().await;
    let hdr = [("x-mock-scenario", "error:429")];
    let got = anthropic(&h, "/v1/messages", &hdr, &messages_body(false, json!({}))).await;
    assert_eq!(got.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        &got.body[..],
        br#"{"type":"error","error":{"type":"rate_limit_error","message":"mock error 429"}}"#
    );
    let s = h.one_span().await;
    assert_fields(
        &s,
        json!({
            "name": "chat claude-sonnet-4-5", "provider": "anthropic", "model": CLAUDE,
            "response_model": null, "response_id": null, "stream": 0, "http_status": 429,
            "status": "failed", "error_type": "rate_limit_error",
            "error_message": "mock error 429", "finish_reason": null,
            "input_tokens": null, "output_tokens": null, "tokens_estimated": 0,
        }),
    );
    assert_cost(&s, None);
    assert_ttft(&s, false);
}

// === 6. count_tokens ===

#[tokio::test]
async fn anthropic_count_tokens() {
    let h = Harness::start().await;
    let body = json!({"model": CLAUDE, "messages": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Count me"},
    ]})
    .to_string();
    let got = anthropic(&h, "/v1/messages/count_tokens", &[], &body).await;
    assert_eq!(got.json()["input_tokens"], 7 + 3 * 3);
    let s = h.one_span().await;
    assert_fields(
        &s,
        json!({
            "name": "count_tokens claude-sonnet-4-5", "operation_type": "count_tokens",
            "provider": "anthropic", "path": "/anthropic/v1/messages/count_tokens",
            "model": CLAUDE, "response_model": null, "response_id": null, "stream": 0,
            "http_status": 200, "status": "completed", "error_type": null,
            "finish_reason": null, "input_tokens": 7 + 3 * 3, "output_tokens": null,
            "cached_input_tokens": null, "cache_write_tokens": null, "tokens_estimated": 0,
        }),
    );
    // Anthropic does not bill token counting: no cost.
    assert_cost(&s, None);
}

// === 7. OpenAI-compatible providers by configuration alone ===

fn extra_route(c: &mut llmtap::config::Config, prefix: &str, provider: &str) {
    let upstream = c.routes[0].upstream.clone();
    c.routes.push(llmtap::config::RouteConfig {
        prefix: prefix.into(),
        upstream,
        format: llmtap::config::Format::Openai,
        strip_prefix: true,
        provider: Some(provider.into()),
        allow_insecure: false,
        connect_timeout_ms: None,
        first_byte_timeout_ms: None,
        idle_timeout_ms: None,
    });
}

#[tokio::test]
async fn groq_route_by_config() {
    let h = Harness::start_with(|c| extra_route(c, "/groq", "groq")).await;
    let model = "llama-3.3-70b-versatile";
    let body = json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]});
    let path = "/openai/v1/chat/completions";
    both(&h, &format!("/groq{path}"), path, &[], &body.to_string()).await;
    assert_eq!(h.mock.state.last_request().unwrap().uri, path);
    let s = h.one_span().await;
    let rmodel = "llama-3.3-70b-versatile-2024-07-18";
    assert_fields(
        &s,
        json!({
            "name": "chat llama-3.3-70b-versatile", "operation_type": "llm_call",
            "provider": "groq", "route": "/groq", "path": "/groq/openai/v1/chat/completions",
            "model": model, "response_model": rmodel, "response_id": "chatcmpl-mock",
            "stream": 0, "http_status": 200, "status": "completed", "finish_reason": "stop",
            "input_tokens": 7 + 3, "output_tokens": WORDS, "tokens_estimated": 0,
        }),
    );
    assert_cost(&s, Some(rmodel));
}

#[tokio::test]
async fn azure_route_takes_the_model_from_the_deployment() {
    let h = Harness::start_with(|c| extra_route(c, "/azure", "azure.ai.openai")).await;
    let key = "azure-SECRET-key-0123456789";
    let hdr = [("api-key", key)];
    let body = json!({"messages": [{"role": "user", "content": "Hi"}]}).to_string();
    let path = "/openai/deployments/my-gpt4o/chat/completions";
    let query = "?api-version=2024-10-21";
    let via = format!("/azure{path}{query}");
    both(&h, &via, &format!("{path}{query}"), &hdr, &body).await;
    let got = h.mock.state.last_request().unwrap();
    assert_eq!(got.uri, format!("{path}{query}").as_str());
    assert_eq!(got.headers["api-key"], key);
    let s = h.one_span().await;
    assert_fields(
        &s,
        json!({
            "name": "chat my-gpt4o", "operation_type": "llm_call",
            "provider": "azure.ai.openai", "route": "/azure", "path": format!("/azure{path}"),
            "model": "my-gpt4o", "response_model": GPT4O_MINI, "response_id": "chatcmpl-mock",
            "stream": 0, "http_status": 200, "status": "completed", "finish_reason": "stop",
            "input_tokens": 7 + 3, "output_tokens": WORDS, "tokens_estimated": 0,
        }),
    );
    assert_cost(&s, Some(GPT4O_MINI));
    let hash = s["api_key_hash"].as_str().unwrap();
    assert_eq!(hash.len(), 16);
    let row = s.to_string();
    assert!(!row.contains(key) && !row.contains("SECRET"), "{row}");
}

// === 8. Other paths ===

#[tokio::test]
async fn other_paths_get_models_and_audio_spans() {
    let h = Harness::start().await;
    let c = client();
    let direct = send(&c, request(Method::GET, &h.direct("/v1/models"), &[], "")).await;
    let via = send(&c, request(Method::GET, &h.url("/v1/models"), &[], "")).await;
    assert_eq!(via.status, StatusCode::OK);
    assert_eq!(via.body, direct.body);
    let speech = json!({"model": "gpt-4o-mini-tts", "input": "Hello", "voice": "alloy"});
    let got = openai(&h, "/v1/audio/speech", &[], &speech.to_string()).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    let spans = h.spans(2).await;
    assert_fields(
        &spans[0],
        json!({
            "name": "GET /v1/models", "operation_type": "models", "provider": "openai",
            "method": "GET", "path": "/v1/models", "model": null, "response_model": null,
            "stream": 0, "http_status": 200, "status": "completed", "error_type": null,
            "input_tokens": null, "output_tokens": null, "tokens_estimated": 0,
        }),
    );
    // Bodies of other paths are not parsed: no model, no tokens.
    assert_fields(
        &spans[1],
        json!({
            "name": "POST /v1/audio/speech", "operation_type": "audio", "method": "POST",
            "path": "/v1/audio/speech", "model": null, "http_status": 404,
            "status": "failed", "error_type": "invalid_request_error",
            "error_message": "mock: unknown path /v1/audio/speech",
            "input_tokens": null, "output_tokens": null,
        }),
    );
    for s in &spans {
        assert_cost(s, None);
        assert_ttft(s, false);
    }
}

// === 9. Gzip ===

#[tokio::test]
async fn gzip_responses_and_anthropic_streams() {
    let h = Harness::start().await;
    let hdr = [
        ("x-mock-scenario", "gzip"),
        ("accept-encoding", "gzip"),
        ("x-mock-words", "7"),
    ];
    let got = openai(&h, "/v1/responses", &hdr, &responses_body(true)).await;
    assert_eq!(got.headers["content-encoding"], "gzip");
    let got = anthropic(&h, "/v1/messages", &hdr, &messages_body(true, json!({}))).await;
    assert_eq!(got.headers["content-encoding"], "gzip");
    let spans = h.spans(2).await;
    assert_fields(
        &spans[0],
        responses_fields(true, "completed", json!("completed")),
    );
    assert_fields(
        &spans[1],
        messages_fields(true, "completed", json!("end_turn")),
    );
    for (s, input) in spans.iter().zip([RESP_P, ANT_P]) {
        assert_fields(
            s,
            json!({"input_tokens": input, "output_tokens": 7, "tokens_estimated": 0}),
        );
        assert_ttft(s, true);
    }
    assert_cost(&spans[0], Some(RESP_RMODEL));
    assert_cost(&spans[1], Some(CLAUDE));
}
