//! The query API end to end: real traffic through llmtap to the mock
//! provider (chats, streams, errors, embeddings, Anthropic, a stitched
//! agent loop), then `/api/*` on the admin listener, checked against the
//! spans in the real store (SQLite, or PostgreSQL under scripts/pg_test.sh).

mod common;
mod mock;

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use serde_json::{json, Value};

async fn api(c: &HttpClient, h: &Harness, path: &str) -> Got {
    api_auth(c, h, path, None).await
}

async fn api_auth(c: &HttpClient, h: &Harness, path: &str, token: Option<&str>) -> Got {
    let url = format!("http://{}{}", h.admin, path);
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    send(c, request(Method::GET, &url, &headers, Bytes::new())).await
}

fn chat(tag: &str, model: &str, stream: bool) -> String {
    let mut v = json!({
        "model": model,
        "messages": [{"role": "user", "content": format!("Tell me about {tag}.")}],
    });
    if stream {
        v["stream"] = true.into();
        v["stream_options"] = json!({"include_usage": true});
    }
    v.to_string()
}

/// The traffic every test reads: 8 traces, 10 spans.
async fn seed(h: &Harness, c: &HttpClient) -> Vec<Value> {
    let url = h.url("/v1/chat/completions");
    // 1. A chat with context headers.
    let got = post(
        c,
        &url,
        &[
            ("x-mock-id", "chatcmpl-alpha"),
            ("x-llmtap-session-id", "sess-1"),
            ("x-llmtap-user-id", "user-1"),
            ("x-llmtap-conversation-id", "conv-1"),
            ("x-llmtap-property-team", "search"),
        ],
        &chat("alpha", "gpt-4o-mini", false),
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    // 2. A stream.
    let got = post(c, &url, &[], &chat("beta", "gpt-4o-mini", true)).await;
    assert_eq!(got.status, StatusCode::OK);
    // 3. Another model.
    post(
        c,
        &url,
        &[("x-mock-id", "chatcmpl-gamma")],
        &chat("gamma", "gpt-4o", false),
    )
    .await;
    // 4. An upstream error.
    let got = post(
        c,
        &url,
        &[("x-mock-scenario", "error:500")],
        &chat("delta", "gpt-4o", false),
    )
    .await;
    assert_eq!(got.status, StatusCode::INTERNAL_SERVER_ERROR);
    // 5. Embeddings.
    let body = json!({"model": "text-embedding-3-small", "input": "hello"}).to_string();
    post(c, &h.url("/v1/embeddings"), &[], &body).await;
    // 6. Anthropic.
    let body = json!({"model": "claude-3-5-haiku-latest", "max_tokens": 16,
        "messages": [{"role": "user", "content": "Hi, Claude."}]})
    .to_string();
    let got = post(
        c,
        &h.url("/anthropic/v1/messages"),
        &[("x-api-key", "sk-ant")],
        &body,
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    // 7. A stitched agent loop: tool call, then the tool's result.
    let mut messages = vec![json!({"role": "user", "content": "Weather in Paris? (loop)"})];
    let body = json!({"model": "gpt-4o-mini", "messages": messages});
    let got = post(
        c,
        &url,
        &[
            ("x-mock-tool-call", "get_weather"),
            ("x-mock-call-id", "call_api_1"),
        ],
        &body.to_string(),
    )
    .await;
    messages.push(got.json()["choices"][0]["message"].clone());
    tokio::time::sleep(Duration::from_millis(30)).await;
    messages.push(json!({"role": "tool", "tool_call_id": "call_api_1", "content": "18 C"}));
    let body = json!({"model": "gpt-4o-mini", "messages": messages});
    assert_eq!(
        post(c, &url, &[], &body.to_string()).await.status,
        StatusCode::OK
    );
    // 8. A slow stream.
    post(
        c,
        &url,
        &[("x-mock-delay-ms", "40"), ("x-mock-words", "5")],
        &chat("slow", "gpt-4o-mini", true),
    )
    .await;
    let spans = h.spans(10).await;
    assert_eq!(spans.len(), 10, "{spans:#?}");
    spans
}

/// Every page of `/api/traces?{query}`, walked by cursor.
async fn walk(c: &HttpClient, h: &Harness, query: &str, limit: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut path = format!("/api/traces?limit={limit}&{query}");
        if let Some(cur) = &cursor {
            path.push_str(&format!("&cursor={cur}"));
        }
        let got = api(c, h, &path).await;
        assert_eq!(
            got.status,
            StatusCode::OK,
            "{path}: {}",
            String::from_utf8_lossy(&got.body)
        );
        let page = got.json();
        let traces = page["traces"].as_array().unwrap();
        assert!(traces.len() <= limit);
        out.extend(traces.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return out,
        }
    }
    panic!("more than 1000 pages");
}

fn ids(traces: &[Value]) -> BTreeSet<String> {
    traces
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap().to_string())
        .collect()
}

/// The traces with a span for which `pred` holds, from the stored rows.
fn expect(spans: &[Value], pred: impl Fn(&Value) -> bool) -> BTreeSet<String> {
    spans
        .iter()
        .filter(|s| pred(s))
        .map(|s| s["trace_id"].as_str().unwrap().to_string())
        .collect()
}

fn error_param(got: &Got) -> String {
    assert_eq!(
        got.status,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&got.body)
    );
    let v = got.json();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["code"], "invalid_parameter");
    v["error"]["param"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn traces_paginate_filter_and_summarise() {
    let h = Harness::start().await;
    let c = client();
    let spans = seed(&h, &c).await;
    let all_traces: BTreeSet<String> = expect(&spans, |_| true);
    assert_eq!(all_traces.len(), 8);

    // Pagination: every trace exactly once, newest first, across pages.
    let full = walk(&c, &h, "", 500).await;
    assert_eq!(ids(&full), all_traces);
    assert_eq!(full.len(), 8);
    for w in full.windows(2) {
        let a = (
            w[0]["start_time_us"].as_i64().unwrap(),
            w[0]["trace_id"].as_str().unwrap(),
        );
        let b = (
            w[1]["start_time_us"].as_i64().unwrap(),
            w[1]["trace_id"].as_str().unwrap(),
        );
        assert!(a > b, "newest first: {a:?} then {b:?}");
    }
    for limit in [1, 3] {
        let paged = walk(&c, &h, "", limit).await;
        let order: Vec<&Value> = paged.iter().map(|t| &t["trace_id"]).collect();
        let want: Vec<&Value> = full.iter().map(|t| &t["trace_id"]).collect();
        assert_eq!(order, want, "limit {limit}");
    }
    let first = api(&c, &h, "/api/traces").await.json();
    assert_eq!(first["limit"], 50);
    assert!(first["next_cursor"].is_null());

    // The agent loop's row.
    let tool = spans
        .iter()
        .find(|s| s["operation_type"] == "tool_call")
        .unwrap();
    let loop_trace = tool["trace_id"].as_str().unwrap();
    let row = full.iter().find(|t| t["trace_id"] == loop_trace).unwrap();
    let in_loop: Vec<&Value> = spans
        .iter()
        .filter(|s| s["trace_id"] == loop_trace)
        .collect();
    assert_eq!(in_loop.len(), 3);
    let root = in_loop
        .iter()
        .find(|s| s["parent_span_id"].is_null())
        .unwrap();
    assert_eq!(row["name"], root["name"]);
    assert_eq!(row["root_span_id"], root["span_id"]);
    assert_eq!(row["span_count"], 3);
    assert_eq!(
        (row["llm_calls"].as_i64(), row["tool_calls"].as_i64()),
        (Some(2), Some(1))
    );
    assert_eq!(row["status"], "completed");
    assert_eq!(row["models"], json!(["gpt-4o-mini"]));
    let tokens: i64 = in_loop
        .iter()
        .map(|s| s["input_tokens"].as_i64().unwrap_or(0) + s["output_tokens"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(row["total_tokens"], tokens);
    let end = in_loop
        .iter()
        .map(|s| s["end_time"].as_i64().unwrap())
        .max()
        .unwrap();
    assert_eq!(row["end_time_us"], end);
    assert_eq!(row["start_time_us"], root["start_time"]);
    let cost: f64 = in_loop.iter().filter_map(|s| s["cost_usd"].as_f64()).sum();
    assert!((row["cost_usd"].as_f64().unwrap() - cost).abs() < 1e-12);
    // The first chat's row carries its context.
    let alpha = spans
        .iter()
        .find(|s| s["response_id"] == "chatcmpl-alpha")
        .unwrap();
    let row = full
        .iter()
        .find(|t| t["trace_id"] == alpha["trace_id"])
        .unwrap();
    assert_eq!(
        (row["session_id"].as_str(), row["user_id"].as_str()),
        (Some("sess-1"), Some("user-1"))
    );
    assert_eq!(row["conversation_id"], "conv-1");
    // The failed call's trace is failed.
    let failed = spans.iter().find(|s| s["status"] == "failed").unwrap();
    let row = full
        .iter()
        .find(|t| t["trace_id"] == failed["trace_id"])
        .unwrap();
    assert_eq!(
        (row["status"].as_str(), row["error_count"].as_i64()),
        (Some("failed"), Some(1))
    );

    // Each filter against the stored rows (any span of the trace matches).
    let f = |k: &'static str, v: &'static str| move |s: &Value| s[k] == v;
    let ms = |s: &Value| s["duration_ms"].as_f64().unwrap();
    let slow = spans.iter().map(ms).fold(0.0, f64::max);
    let cases: Vec<(String, BTreeSet<String>)> = vec![
        (
            "status=failed".into(),
            expect(&spans, f("status", "failed")),
        ),
        (
            "status=completed,cancelled".into(),
            expect(&spans, |s| s["status"] != "failed"),
        ),
        (
            "operation_type=embedding".into(),
            expect(&spans, f("operation_type", "embedding")),
        ),
        (
            "operation_type=tool_call".into(),
            expect(&spans, f("operation_type", "tool_call")),
        ),
        ("model=gpt-4o".into(), expect(&spans, f("model", "gpt-4o"))),
        (
            "model=gpt-4o&model=text-embedding-3-small".into(),
            expect(&spans, |s| {
                s["model"] == "gpt-4o" || s["model"] == "text-embedding-3-small"
            }),
        ),
        (
            "provider=anthropic".into(),
            expect(&spans, f("provider", "anthropic")),
        ),
        (
            "session_id=sess-1".into(),
            expect(&spans, f("session_id", "sess-1")),
        ),
        (
            "user_id=user-1".into(),
            expect(&spans, f("user_id", "user-1")),
        ),
        (
            "conversation_id=conv-1".into(),
            expect(&spans, f("conversation_id", "conv-1")),
        ),
        (
            "property=team:search".into(),
            expect(&spans, |s| {
                s["properties"]
                    .as_str()
                    .is_some_and(|p| p.contains("\"team\":\"search\""))
            }),
        ),
        ("property=team:other".into(), BTreeSet::new()),
        (
            "property=gen_ai.tool.name:get_weather".into(),
            expect(&spans, f("operation_type", "tool_call")),
        ),
        (
            "q=ALPHA".into(),
            expect(&spans, f("response_id", "chatcmpl-alpha")),
        ),
        (
            "q=mock+error+500".into(),
            expect(&spans, f("status", "failed")),
        ),
        ("q=%25".into(), BTreeSet::new()),
        ("q=chatcmpl_alpha".into(), BTreeSet::new()),
        (
            format!("min_duration_ms={}", slow - 0.001),
            expect(&spans, |s| ms(s) >= slow - 0.001),
        ),
        (
            format!("max_duration_ms={}", slow / 2.0),
            expect(&spans, |s| ms(s) <= slow / 2.0),
        ),
        (
            "model=gpt-4o&status=completed".into(),
            expect(&spans, |s| {
                s["model"] == "gpt-4o" && s["status"] == "completed"
            }),
        ),
    ];
    for (query, want) in cases {
        assert!(
            !want.is_empty() || query.contains("other") || query.starts_with("q="),
            "{query}: vacuous"
        );
        for limit in [2, 500] {
            let got = walk(&c, &h, &query, limit).await;
            assert_eq!(ids(&got), want, "{query} (limit {limit})");
            assert_eq!(got.len(), want.len(), "{query}: each trace once");
        }
    }

    // Time range: the traces that start within it.
    let starts: Vec<(i64, String)> = full
        .iter()
        .map(|t| {
            (
                t["start_time_us"].as_i64().unwrap(),
                t["trace_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let (from, to) = (starts[5].0, starts[1].0);
    let want: BTreeSet<String> = starts
        .iter()
        .filter(|(t, _)| *t >= from && *t < to)
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(want.len(), 4);
    let got = walk(&c, &h, &format!("from={from}&to={to}"), 2).await;
    assert_eq!(ids(&got), want);
    // The same range in RFC 3339 (whole seconds around it: a superset).
    let rfc = |us: i64, up: bool| {
        let secs = us.div_euclid(1_000_000) + i64::from(up);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        )
    };
    let got = walk(
        &c,
        &h,
        &format!("from={}&to={}", rfc(from, false), rfc(to, true)),
        500,
    )
    .await;
    assert!(ids(&got).is_superset(&want));
    let got = walk(
        &c,
        &h,
        &format!("from={}", rfc(starts[0].0 + 1_000_000, true)),
        500,
    )
    .await;
    assert!(got.is_empty());
}

/// (year, month, day) of days since 1970-01-01.
fn civil(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[tokio::test]
async fn trace_hierarchy_and_span_with_bodies() {
    let h = Harness::start().await;
    let c = client();
    let spans = seed(&h, &c).await;
    let tool = spans
        .iter()
        .find(|s| s["operation_type"] == "tool_call")
        .unwrap();
    let trace_id = tool["trace_id"].as_str().unwrap();

    let got = api(&c, &h, &format!("/api/traces/{trace_id}")).await;
    assert_eq!(got.status, StatusCode::OK);
    let t = got.json();
    assert_eq!(t["trace_id"], trace_id);
    assert_eq!(t["totals"]["span_count"], 3);
    assert_eq!(t["totals"]["tool_calls"], 1);
    let roots = t["roots"].as_array().unwrap();
    assert_eq!(roots.len(), 1);
    let kids: Vec<&str> = roots[0]["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["span"]["operation_type"].as_str().unwrap())
        .collect();
    assert_eq!(kids, vec!["tool_call", "llm_call"]);
    assert_eq!(roots[0]["children"][0]["span"]["span_id"], tool["span_id"]);
    assert!(
        roots[0]["span"]["request_body"].is_null(),
        "bodies only on request"
    );
    let with = api(&c, &h, &format!("/api/traces/{trace_id}?bodies=true"))
        .await
        .json();
    assert!(with["roots"][0]["span"]["request_body"]
        .as_str()
        .unwrap()
        .contains("Weather in Paris"));

    let got = api(&c, &h, "/api/traces/00000000000000000000000000000001").await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert_eq!(got.json()["error"]["code"], "not_found");

    // One span, with its bodies, as stored.
    let alpha = spans
        .iter()
        .find(|s| s["response_id"] == "chatcmpl-alpha")
        .unwrap();
    let got = api(
        &c,
        &h,
        &format!("/api/spans/{}", alpha["span_id"].as_str().unwrap()),
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    let s = got.json();
    for (api_key, db_key) in [
        ("span_id", "span_id"),
        ("trace_id", "trace_id"),
        ("name", "name"),
        ("model", "model"),
        ("input_tokens", "input_tokens"),
        ("output_tokens", "output_tokens"),
        ("cost_usd", "cost_usd"),
        ("properties", "properties"),
        ("request_body", "request_body"),
        ("response_body", "response_body"),
        ("start_time_us", "start_time"),
        ("status", "status"),
    ] {
        assert_eq!(s[api_key], alpha[db_key], "{api_key}");
    }
    assert!(s["response_body"]
        .as_str()
        .unwrap()
        .contains("chatcmpl-alpha"));
    let got = api(&c, &h, "/api/spans/ffffffffffffffff").await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert_eq!(got.json()["error"]["type"], "invalid_request_error");
}

/// A stored span's answer carries its conversation, read from its bodies
/// by the providers' parsers: a chat, a stream, an Anthropic message, the
/// agent loop's tool result; a trace with bodies carries them per span.
#[tokio::test]
async fn spans_carry_their_messages() {
    let h = Harness::start().await;
    let c = client();
    let spans = seed(&h, &c).await;
    let answer = |pick: &dyn Fn(&Value) -> bool| {
        let s = spans.iter().find(|s| pick(s)).unwrap();
        let path = format!("/api/spans/{}", s["span_id"].as_str().unwrap());
        let (c, h) = (&c, &h);
        async move {
            let got = api(c, h, &path).await;
            assert_eq!(got.status, StatusCode::OK);
            let reply: Value =
                serde_json::from_str(got.json()["response_body"].as_str().unwrap_or("null"))
                    .unwrap_or(Value::Null);
            (got.json()["messages"].clone(), reply)
        }
    };
    // A whole chat: the user's question, the assistant's reply as sent.
    let (m, reply) = answer(&|s| s["response_id"] == "chatcmpl-alpha").await;
    assert_eq!(
        m["input"],
        json!([{"role": "user", "parts": [{"type": "text", "content": "Tell me about alpha."}]}])
    );
    assert_eq!(
        m["output"],
        json!([{"role": "assistant",
                "parts": [{"type": "text", "content": reply["choices"][0]["message"]["content"]}],
                "finish_reason": "stop"}])
    );
    // A stream: the deltas joined.
    let (m, _) =
        answer(&|s| s["stream"] == 1 && s["request_body"].as_str().unwrap().contains("beta")).await;
    let text = m["output"][0]["parts"][0]["content"].as_str().unwrap();
    assert!(!text.is_empty(), "{m}");
    assert_eq!(m["output"][0]["finish_reason"], "stop");
    // Anthropic.
    let (m, reply) = answer(&|s| s["provider"] == "anthropic").await;
    assert_eq!(m["input"][0]["parts"][0]["content"], "Hi, Claude.");
    assert_eq!(
        m["output"][0]["parts"][0]["content"],
        reply["content"][0]["text"]
    );
    // An upstream error: shown as an error message.
    let (m, _) = answer(&|s| s["http_status"] == 500).await;
    assert_eq!(m["output"][0]["role"], "error", "{m}");
    // The agent loop's second turn: the tool call and its result.
    let (m, _) = answer(&|s| {
        s["operation_type"] == "llm_call"
            && s["request_body"].as_str().unwrap().contains("call_api_1")
    })
    .await;
    let parts: Vec<&Value> = m["input"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["parts"].as_array().unwrap())
        .collect();
    assert!(
        parts.contains(&&json!({"type": "tool_call", "id": "call_api_1",
        "name": "get_weather", "arguments": {"city": "Paris"}})),
        "{m}"
    );
    assert!(
        parts.contains(&&json!({"type": "tool_call_response",
        "id": "call_api_1", "response": "18 C"})),
        "{m}"
    );
    // The tool span: its call and result.
    let (m, _) = answer(&|s| s["operation_type"] == "tool_call").await;
    assert_eq!(m["input"][0]["parts"][0]["name"], "get_weather");
    assert_eq!(m["output"][0]["parts"][0]["response"], "18 C");
    // A trace with bodies: every span carries them; without, none does.
    let tool = spans
        .iter()
        .find(|s| s["operation_type"] == "tool_call")
        .unwrap();
    let trace_id = tool["trace_id"].as_str().unwrap();
    let t = api(&c, &h, &format!("/api/traces/{trace_id}?bodies=true"))
        .await
        .json();
    let root = &t["roots"][0];
    assert_eq!(
        root["span"]["messages"]["input"][0]["parts"][0]["content"],
        "Weather in Paris? (loop)"
    );
    assert_eq!(
        root["children"][0]["span"]["messages"]["output"][0]["parts"][0]["response"],
        "18 C"
    );
    let t = api(&c, &h, &format!("/api/traces/{trace_id}")).await.json();
    assert!(t["roots"][0]["span"].get("messages").is_none(), "{t}");
}

#[tokio::test]
async fn live_shows_a_stream_while_it_runs() {
    let h = Harness::start().await;
    let c = client();
    assert_eq!(api(&c, &h, "/api/live").await.json()["spans"], json!([]));
    let url = h.url("/v1/chat/completions");
    let body = chat("live", "gpt-4o-mini", true);
    let c2 = c.clone();
    let slow = tokio::spawn(async move {
        post(
            &c2,
            &url,
            &[("x-mock-delay-ms", "150"), ("x-mock-words", "6")],
            &body,
        )
        .await
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    let entry = loop {
        let live = api(&c, &h, "/api/live").await.json();
        // Listed at once; the model follows when the request body is read.
        if let Some(s) = live["spans"].as_array().and_then(|a| a.first()) {
            assert_eq!(live["in_flight"], 1);
            if s["model"] == "gpt-4o-mini" {
                break s.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no live span with its model within 5 s: {live}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(entry["status"], "running");
    assert_eq!(entry["operation_type"], "llm_call");
    assert_eq!(entry["path"], "/v1/chat/completions");
    assert!(entry["elapsed_ms"].as_f64().unwrap() >= 0.0);
    let got = slow.await.unwrap();
    assert_eq!(got.status, StatusCode::OK);
    let stored = h.one_span().await;
    assert_eq!(stored["span_id"], entry["span_id"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let live = api(&c, &h, "/api/live").await.json();
        if live["spans"] == json!([]) {
            assert_eq!(live["in_flight"], 0);
            break;
        }
        assert!(Instant::now() < deadline, "live span not removed: {live}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn stats_agree_with_the_spans() {
    let h = Harness::start().await;
    let c = client();
    let spans = seed(&h, &c).await;
    let requests: Vec<&Value> = spans
        .iter()
        .filter(|s| s["operation_type"] != "tool_call")
        .collect();
    let start = spans
        .iter()
        .map(|s| s["start_time"].as_i64().unwrap())
        .min()
        .unwrap();
    let (from, to) = (start - 3_600_000_000, start + 3_600_000_000);
    for bucket in ["60s", "5m", "1h", "1d"] {
        let got = api(
            &c,
            &h,
            &format!("/api/stats?from={from}&to={to}&bucket={bucket}"),
        )
        .await;
        assert_eq!(
            got.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&got.body)
        );
        let st = got.json();
        let t = &st["totals"];
        assert_eq!(t["requests"], requests.len(), "{bucket}");
        assert_eq!(st["tool_calls"], 1);
        let failed = requests.iter().filter(|s| s["status"] == "failed").count();
        assert_eq!(t["errors"], failed);
        assert!(
            (t["error_rate"].as_f64().unwrap() - failed as f64 / requests.len() as f64).abs()
                < 1e-12
        );
        let sum = |k: &str| {
            requests
                .iter()
                .map(|s| s[k].as_i64().unwrap_or(0))
                .sum::<i64>()
        };
        assert_eq!(t["input_tokens"], sum("input_tokens"));
        assert_eq!(t["output_tokens"], sum("output_tokens"));
        assert_eq!(t["cached_input_tokens"], sum("cached_input_tokens"));
        let cost: f64 = requests.iter().filter_map(|s| s["cost_usd"].as_f64()).sum();
        assert!((t["cost_usd"].as_f64().unwrap() - cost).abs() < 1e-12);
        let durations: Vec<f64> = requests
            .iter()
            .map(|s| s["duration_ms"].as_f64().unwrap())
            .collect();
        let avg = durations.iter().sum::<f64>() / durations.len() as f64;
        assert!((t["latency_ms"]["avg"].as_f64().unwrap() - avg).abs() < 1e-9);
        let max = durations.iter().cloned().fold(0.0, f64::max);
        // (The stored rows are read through SQLite's JSON, 15 digits.)
        assert!((t["latency_ms"]["max"].as_f64().unwrap() - max).abs() < 1e-9);
        // Percentiles are estimated within a bin (a factor of 2^(1/3)).
        let mut sorted = durations.clone();
        sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let p50 = sorted[sorted.len().div_ceil(2) - 1];
        let est = t["latency_ms"]["p50"].as_f64().unwrap();
        assert!(
            est >= p50 / 1.26 - 1.0 && est <= p50 * 1.26 + 1.0,
            "p50 {est} vs {p50}"
        );
        assert!(t["latency_ms"]["p99"].as_f64().unwrap() <= max + 1e-9);
        let streams = requests.iter().filter(|s| s["ttft_ms"].is_number()).count();
        assert_eq!(t["ttft_ms"]["count"], streams);
        // By status, by model and over time add up to the totals.
        let by_status: i64 = st["by_status"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["requests"].as_i64().unwrap())
            .sum();
        assert_eq!(by_status, requests.len() as i64);
        let models = st["by_model"].as_array().unwrap();
        let gpt4o = models.iter().find(|m| m["model"] == "gpt-4o").unwrap();
        assert_eq!(
            (gpt4o["requests"].as_i64(), gpt4o["errors"].as_i64()),
            (Some(2), Some(1))
        );
        assert_eq!(gpt4o["error_rate"], 0.5);
        let mini: i64 = requests
            .iter()
            .filter(|s| s["model"] == "gpt-4o-mini")
            .map(|s| s["output_tokens"].as_i64().unwrap_or(0))
            .sum();
        let m = models.iter().find(|m| m["model"] == "gpt-4o-mini").unwrap();
        assert_eq!(m["output_tokens"], mini);
        let series = st["series"].as_array().unwrap();
        let n = (st["to_us"].as_i64().unwrap() - st["from_us"].as_i64().unwrap())
            / st["bucket_us"].as_i64().unwrap();
        assert_eq!(series.len() as i64, n);
        let over_time: i64 = series.iter().map(|p| p["requests"].as_i64().unwrap()).sum();
        assert_eq!(over_time, requests.len() as i64);
        let tokens: i64 = series
            .iter()
            .map(|p| p["input_tokens"].as_i64().unwrap())
            .sum();
        assert_eq!(tokens, sum("input_tokens"));
    }
    // Defaults: the last 24 hours, a bucket picked for the range.
    let st = api(&c, &h, "/api/stats").await.json();
    assert_eq!(st["totals"]["requests"], requests.len());
    assert_eq!(st["bucket"], "5m");
    // An empty range.
    let st = api(&c, &h, "/api/stats?from=2000-01-01&to=2000-01-02&bucket=1h")
        .await
        .json();
    assert_eq!(st["totals"]["requests"], 0);
    assert!(st["totals"]["cost_usd"].is_null());
    assert_eq!(st["series"].as_array().unwrap().len(), 24);
}

#[tokio::test]
async fn export_streams_json_and_ndjson() {
    let h = Harness::start().await;
    let c = client();
    let spans = seed(&h, &c).await;
    // Plus enough spans written straight to the store for several pages.
    let store = h.store().await;
    let bulk: Vec<llmtap::record::span::Span> = (0..1234)
        .map(|i| {
            let mut s = llmtap::record::span::Span::start(1_600_000_000_000_000 + i / 3);
            s.name = "chat bulk".into();
            s.operation_type = "llm_call".into();
            s.provider = "openai".into();
            s.model = Some("bulk-model".into());
            s.status = llmtap::record::span::SpanStatus::Completed;
            s.request_body = Some(format!("{{\"i\":{i}}}"));
            s
        })
        .collect();
    store.write_spans(&bulk).await.unwrap();
    store.close().await;
    let total = spans.len() + bulk.len();

    let got = api(&c, &h, "/api/export").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.headers["content-type"], "application/json");
    assert_eq!(
        got.headers["content-disposition"],
        "attachment; filename=\"llmtap-export.json\""
    );
    let all: Vec<Value> = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(all.len(), total);
    let unique: HashSet<&str> = all.iter().map(|s| s["span_id"].as_str().unwrap()).collect();
    assert_eq!(unique.len(), total);
    for w in all.windows(2) {
        let key = |s: &Value| {
            (
                s["start_time_us"].as_i64().unwrap(),
                s["span_id"].as_str().unwrap().to_string(),
            )
        };
        assert!(key(&w[0]) < key(&w[1]), "oldest first");
    }
    let b = all.iter().find(|s| s["model"] == "bulk-model").unwrap();
    assert!(b["request_body"].as_str().unwrap().starts_with("{\"i\":"));

    let got = api(
        &c,
        &h,
        "/api/export?format=ndjson&model=gpt-4o-mini&bodies=false",
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.headers["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = String::from_utf8(got.body.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let want: BTreeSet<&str> = spans
        .iter()
        .filter(|s| s["model"] == "gpt-4o-mini")
        .map(|s| s["span_id"].as_str().unwrap())
        .collect();
    let got_ids: BTreeSet<&str> = lines
        .iter()
        .map(|s| s["span_id"].as_str().unwrap())
        .collect();
    assert_eq!(got_ids, want);
    assert!(lines.iter().all(|s| s["request_body"].is_null()));

    // Export filters are span-level: the failed span alone, not its trace.
    let got = api(&c, &h, "/api/export?status=failed").await;
    let failed: Vec<Value> = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["error_message"], "mock error 500");
    let empty: Vec<Value> =
        serde_json::from_slice(&api(&c, &h, "/api/export?model=nope").await.body).unwrap();
    assert!(empty.is_empty());

    // The trace list pages over the bulk traces too, each once.
    let listed = walk(&c, &h, "model=bulk-model", 500).await;
    assert_eq!(listed.len(), bulk.len());
    let listed = walk(&c, &h, "", 333).await;
    assert_eq!(listed.len(), bulk.len() + 8);
    assert_eq!(ids(&listed).len(), bulk.len() + 8);
}

#[tokio::test]
async fn bad_parameters_are_400s_naming_them() {
    let h = Harness::start().await;
    let c = client();
    for (path, param) in [
        ("/api/traces?modle=x", "modle"),
        ("/api/traces?from=yesterday", "from"),
        ("/api/traces?to=2024-13-01T00:00:00Z", "to"),
        ("/api/traces?from=2024-01-02&to=2024-01-01", "to"),
        ("/api/traces?cursor=zz", "cursor"),
        ("/api/traces?cursor=74313a313a", "cursor"),
        ("/api/traces?limit=0", "limit"),
        ("/api/traces?limit=501", "limit"),
        ("/api/traces?status=running", "status"),
        ("/api/traces?min_duration_ms=fast", "min_duration_ms"),
        ("/api/traces?property=novalue", "property"),
        ("/api/traces?user_id=a&user_id=b", "user_id"),
        ("/api/stats?bucket=7s", "bucket"),
        (
            "/api/stats?from=2020-01-01&to=2024-01-01&bucket=60s",
            "bucket",
        ),
        ("/api/stats?from=tomorrow", "from"),
        ("/api/stats?model=x", "model"),
        ("/api/export?format=xml", "format"),
        ("/api/export?limit=5", "limit"),
        ("/api/export?bodies=maybe", "bodies"),
        ("/api/spans/abc?x=1", "x"),
        ("/api/live?limit=-1", "limit"),
        ("/api/traces/abc?bodies=2", "bodies"),
    ] {
        let got = api(&c, &h, path).await;
        assert_eq!(error_param(&got), param, "{path}");
        let msg = got.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(msg.contains(param), "{path}: {msg}");
    }
    let got = api(&c, &h, "/api/nothing").await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    let url = format!("http://{}/api/traces", h.admin);
    let got = send(&c, request(Method::DELETE, &url, &[], Bytes::new())).await;
    assert_eq!(got.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(got.headers["allow"], "GET");
}

#[tokio::test]
async fn a_configured_token_guards_the_api_but_not_health() {
    let h = Harness::start_with(|c| c.admin_token = "t0k3n-for-tests".into()).await;
    let c = client();
    let got = api(&c, &h, "/api/traces").await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED);
    assert_eq!(got.json()["error"]["code"], "invalid_admin_token");
    assert!(got.headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    for wrong in ["t0k3n-for-test", "t0k3n-for-testz", "T0K3N-FOR-TESTS", ""] {
        let got = api_auth(&c, &h, "/api/traces", Some(wrong)).await;
        assert_eq!(got.status, StatusCode::UNAUTHORIZED, "{wrong:?}");
    }
    // Even unknown paths and bad parameters answer 401 first.
    assert_eq!(
        api(&c, &h, "/api/nope").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api(&c, &h, "/api/traces?bad=1").await.status,
        StatusCode::UNAUTHORIZED
    );
    let got = api_auth(&c, &h, "/api/traces", Some("t0k3n-for-tests")).await;
    assert_eq!(got.status, StatusCode::OK);
    // /metrics is guarded by the same token.
    let got = api_auth(&c, &h, "/metrics", None).await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED);
    assert_eq!(got.json()["error"]["type"], "authentication_error");
    let got = api_auth(&c, &h, "/metrics", Some("t0k3n-for-testz")).await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED);
    let got = api_auth(&c, &h, "/metrics", Some("t0k3n-for-tests")).await;
    assert_eq!(got.status, StatusCode::OK);
    let got = api_auth(&c, &h, "/api/stats", Some("t0k3n-for-tests")).await;
    assert_eq!(got.status, StatusCode::OK);
    let healthz = send(
        &c,
        request(
            Method::GET,
            &format!("http://{}/healthz", h.admin),
            &[],
            Bytes::new(),
        ),
    )
    .await;
    assert_eq!(healthz.status, StatusCode::OK);
}

#[tokio::test]
async fn start_up_refuses_an_open_admin_listener_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llmtap"))
        .current_dir(dir.path())
        .env("LLMTAP_ADMIN_LISTEN", "0.0.0.0:0")
        .env("LLMTAP_LISTEN", "127.0.0.1:0")
        .env_remove("LLMTAP_ADMIN_TOKEN")
        .env_remove("LLMTAP_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("admin_token"), "{stderr}");
    // Refused before anything was opened.
    assert!(!dir.path().join("data").exists());
}
