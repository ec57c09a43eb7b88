//! Trace structure end to end: explicit context from headers, and zero-code
//! stitching of agent loops and multi-turn chats (with tool-call spans)
//! through a real llmtap against the mock provider.

mod common;
mod mock;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use http::StatusCode;
use proptest::prelude::*;
use serde_json::{json, Value};

const TOOL_RESULT: &str = "18 C and sunny";

fn by_name<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

fn us(s: &Value, k: &str) -> i64 {
    s[k].as_i64().unwrap()
}

/// One OpenAI-style agent loop: question → tool call → tool result → answer
/// (streamed) → follow-up. `tag` keeps conversations apart.
async fn openai_agent_loop(h: &Harness, c: &HttpClient, tag: &str, call_id: &str, pause: Duration) {
    openai_agent_loop_with(h, c, tag, call_id, pause, "You are a helpful assistant.").await
}

async fn openai_agent_loop_with(
    h: &Harness,
    c: &HttpClient,
    tag: &str,
    call_id: &str,
    pause: Duration,
    system: &str,
) {
    let url = h.url("/v1/chat/completions");
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let mut messages = vec![
        json!({"role": "system", "content": system}),
        json!({"role": "user", "content": format!("What is the weather in Paris? ({tag})")}),
    ];
    // Turn 1: the model asks for a tool.
    let body = json!({"model": "gpt-4o-mini", "messages": messages, "tools": tools});
    let got = post(
        c,
        &url,
        &[
            ("x-mock-tool-call", "get_weather"),
            ("x-mock-call-id", call_id),
        ],
        &body.to_string(),
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    let reply = got.json()["choices"][0]["message"].clone();
    messages.push(reply);
    // The app runs the tool.
    tokio::time::sleep(pause).await;
    messages.push(json!({"role": "tool", "tool_call_id": call_id, "content": TOOL_RESULT}));
    // Turn 2: the answer, streamed.
    let body =
        json!({"model": "gpt-4o-mini", "messages": messages, "tools": tools, "stream": true});
    let got = post(c, &url, &[("x-mock-words", "6")], &body.to_string()).await;
    let mut answer = String::new();
    for line in String::from_utf8_lossy(&got.body).lines() {
        if let Some(data) = line.strip_prefix("data: ").filter(|d| *d != "[DONE]") {
            let chunk: Value = serde_json::from_str(data).unwrap();
            if let Some(t) = chunk["choices"][0]["delta"]["content"].as_str() {
                answer.push_str(t);
            }
        }
    }
    assert_eq!(answer, mock::reply_words(6).concat());
    messages.push(json!({"role": "assistant", "content": answer}));
    // Turn 3: a follow-up question.
    messages.push(json!({"role": "user", "content": "And tomorrow?"}));
    let body = json!({"model": "gpt-4o-mini", "messages": messages, "tools": tools});
    let got = post(c, &url, &[], &body.to_string()).await;
    assert_eq!(got.status, StatusCode::OK);
}

fn assert_agent_trace(spans: &[&Value], call_id: &str, min_tool_ms: f64) {
    let llm: Vec<&&Value> = spans
        .iter()
        .filter(|s| s["operation_type"] == "llm_call")
        .collect();
    let tools: Vec<&&Value> = spans
        .iter()
        .filter(|s| s["operation_type"] == "tool_call")
        .collect();
    assert_eq!(llm.len(), 3, "{spans:#?}");
    assert_eq!(tools.len(), 1, "{spans:#?}");
    let trace = &llm[0]["trace_id"];
    assert!(spans.iter().all(|s| &s["trace_id"] == trace), "one trace");
    let root = &llm[0]["span_id"];
    assert!(llm[0]["parent_span_id"].is_null());
    assert_eq!(&llm[1]["parent_span_id"], root);
    assert_eq!(&llm[2]["parent_span_id"], root);
    let conv = &llm[0]["conversation_id"];
    assert!(conv.is_string());
    assert!(spans.iter().all(|s| &s["conversation_id"] == conv));
    // The tool span: asked for by the first call, from its end to the arrival
    // of the request that carried the result.
    let t = tools[0];
    assert_eq!(t["name"], "execute_tool get_weather");
    assert_eq!(&t["parent_span_id"], root);
    assert_eq!(t["status"], "completed");
    assert_eq!(us(t, "start_time"), us(llm[0], "end_time"));
    assert_eq!(us(t, "end_time"), us(llm[1], "start_time"));
    assert!(t["duration_ms"].as_f64().unwrap() >= min_tool_ms, "{t}");
    assert_eq!(t["request_body"], mock::TOOL_ARGS);
    assert_eq!(t["response_body"], TOOL_RESULT);
    let props: Value = serde_json::from_str(t["properties"].as_str().unwrap()).unwrap();
    assert_eq!(props["gen_ai.tool.call.id"], call_id);
    // Order: by start time.
    assert!(us(llm[0], "start_time") < us(llm[1], "start_time"));
    assert!(us(llm[1], "start_time") < us(llm[2], "start_time"));
}

#[tokio::test]
async fn an_openai_agent_loop_is_one_trace_with_a_tool_span() {
    let h = Harness::start().await;
    let c = client();
    openai_agent_loop(&h, &c, "a", "call_A1", Duration::from_millis(150)).await;
    let spans = h.spans(4).await;
    let refs: Vec<&Value> = spans.iter().collect();
    assert_agent_trace(&refs, "call_A1", 150.0);

    // The hierarchy the API serves, from the real store.
    let store = h.store().await;
    let trace = store
        .trace(spans[0]["trace_id"].as_str().unwrap())
        .await
        .unwrap();
    let tree = llmtap::admin::hierarchy::assemble(trace).unwrap();
    assert_eq!(tree.roots.len(), 1);
    let root = &tree.roots[0];
    let kids: Vec<&str> = root.children.iter().map(|n| n.span.name.as_str()).collect();
    assert_eq!(
        kids,
        vec![
            "execute_tool get_weather",
            "chat gpt-4o-mini",
            "chat gpt-4o-mini"
        ]
    );
    assert_eq!(
        (
            tree.totals.llm_calls,
            tree.totals.tool_calls,
            tree.totals.span_count
        ),
        (3, 1, 4)
    );
    let tokens: i64 = spans
        .iter()
        .map(|s| s["output_tokens"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(tree.totals.output_tokens, tokens);
    assert!(tree.totals.cost_usd.unwrap() > 0.0);
}

/// Requests of 16 KiB or more are stitched off the request path (on a
/// blocking thread, finished by the exchange if the upstream answers
/// first): the same trace, parents and tool span as inline.
#[tokio::test]
async fn a_long_context_agent_loop_is_stitched_the_same_off_the_request_path() {
    let h = Harness::start().await;
    let c = client();
    let system = "You are a meticulous assistant. Follow every rule below.\n".repeat(700);
    assert!(system.len() > 32 * 1024);
    for (i, tag) in ["long-a", "long-b"].iter().enumerate() {
        let call_id = format!("call_L{i}");
        openai_agent_loop_with(&h, &c, tag, &call_id, Duration::from_millis(20), &system).await;
    }
    let spans = h.spans(8).await;
    let mut traces: Vec<&str> = spans
        .iter()
        .filter_map(|s| s["trace_id"].as_str())
        .collect();
    traces.sort();
    traces.dedup();
    assert_eq!(traces.len(), 2, "{spans:#?}");
    for (i, trace) in traces.iter().enumerate() {
        let one: Vec<&Value> = spans.iter().filter(|s| s["trace_id"] == *trace).collect();
        let call_id = one
            .iter()
            .find(|s| s["operation_type"] == "tool_call")
            .and_then(|s| serde_json::from_str::<Value>(s["properties"].as_str()?).ok())
            .and_then(|p| p["gen_ai.tool.call.id"].as_str().map(str::to_string))
            .unwrap_or_else(|| panic!("trace {i} has no tool span: {one:#?}"));
        assert_agent_trace(&one, &call_id, 20.0);
    }
}

#[tokio::test]
async fn two_interleaved_conversations_never_mix() {
    let h = Harness::start().await;
    let c = client();
    let (a, b) = tokio::join!(
        openai_agent_loop(&h, &c, "first", "call_X", Duration::from_millis(120)),
        openai_agent_loop(&h, &c, "second", "call_Y", Duration::from_millis(60)),
    );
    let _ = (a, b);
    let spans = h.spans(8).await;
    let mut traces: HashMap<String, Vec<&Value>> = HashMap::new();
    for s in &spans {
        traces
            .entry(s["trace_id"].as_str().unwrap().to_string())
            .or_default()
            .push(s);
    }
    assert_eq!(traces.len(), 2, "{spans:#?}");
    for spans in traces.values() {
        let tool = spans
            .iter()
            .find(|s| s["operation_type"] == "tool_call")
            .unwrap();
        let id = serde_json::from_str::<Value>(tool["properties"].as_str().unwrap()).unwrap()
            ["gen_ai.tool.call.id"]
            .clone();
        let min = if id == "call_X" { 120.0 } else { 60.0 };
        assert_agent_trace(spans, id.as_str().unwrap(), min);
    }
}

#[tokio::test]
async fn an_anthropic_agent_loop_is_one_trace_with_a_tool_span() {
    let h = Harness::start().await;
    let c = client();
    let url = h.url("/anthropic/v1/messages");
    let key = [("x-api-key", "sk-ant-test")];
    let mut messages = vec![json!({"role": "user", "content": "Weather in Paris?"})];
    // Turn 1, streamed: a tool_use block.
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 256, "system": "Be brief.", "messages": messages, "stream": true});
    let got = post(
        &c,
        &url,
        &[
            key[0],
            ("x-mock-tool-call", "get_weather"),
            ("x-mock-call-id", "toolu_P1"),
        ],
        &body.to_string(),
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    // The SDK sends the assistant's content blocks back as they were.
    messages.push(json!({"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_P1", "name": "get_weather", "input": {"city": "Paris"}}]}));
    tokio::time::sleep(Duration::from_millis(80)).await;
    messages.push(json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_P1", "content": TOOL_RESULT}]}));
    // Turn 2: the answer.
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 256, "system": "Be brief.", "messages": messages});
    let got = post(&c, &url, &key, &body.to_string()).await;
    let text = got.json()["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    messages.push(json!({"role": "assistant", "content": [{"type": "text", "text": text}]}));
    messages.push(json!({"role": "user", "content": "Thanks! And tomorrow?"}));
    // Turn 3: follow-up, streamed.
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 256, "system": "Be brief.", "messages": messages, "stream": true});
    post(&c, &url, &key, &body.to_string()).await;
    let spans = h.spans(4).await;
    let refs: Vec<&Value> = spans.iter().collect();
    let llm: Vec<&&Value> = refs
        .iter()
        .filter(|s| s["operation_type"] == "llm_call")
        .collect();
    assert_eq!(llm.len(), 3);
    assert!(
        refs.iter().all(|s| s["trace_id"] == llm[0]["trace_id"]),
        "{spans:#?}"
    );
    let tool = by_name(&spans, "execute_tool get_weather");
    assert_eq!(tool.len(), 1);
    assert_eq!(tool[0]["parent_span_id"], llm[0]["span_id"]);
    assert_eq!(tool[0]["response_body"], TOOL_RESULT);
    assert_eq!(us(tool[0], "end_time"), us(llm[1], "start_time"));
    assert!(tool[0]["duration_ms"].as_f64().unwrap() >= 80.0);
    assert_eq!(llm[2]["parent_span_id"], llm[0]["span_id"]);
}

#[tokio::test]
async fn different_api_keys_never_join() {
    let h = Harness::start().await;
    let c = client();
    let url = h.url("/v1/chat/completions");
    let first = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let got = post(
        &c,
        &url,
        &[("authorization", "Bearer sk-one")],
        &first.to_string(),
    )
    .await;
    let reply = got.json()["choices"][0]["message"]["content"].clone();
    let next = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": reply}, {"role": "user", "content": "more"}]});
    post(
        &c,
        &url,
        &[("authorization", "Bearer sk-two")],
        &next.to_string(),
    )
    .await;
    post(
        &c,
        &url,
        &[("authorization", "Bearer sk-one")],
        &next.to_string(),
    )
    .await;
    let spans = h.spans(3).await;
    assert_ne!(
        spans[1]["trace_id"], spans[0]["trace_id"],
        "another key must not join"
    );
    assert_eq!(
        spans[2]["trace_id"], spans[0]["trace_id"],
        "the same key joins"
    );
}

#[tokio::test]
async fn traceparent_puts_the_span_in_the_callers_trace_and_wins_over_stitching() {
    let h = Harness::start().await;
    let c = client();
    let url = h.url("/v1/chat/completions");
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let body = chat_body(false, false);
    post(
        &c,
        &url,
        &[("traceparent", tp), ("tracestate", "congo=t61rcWkgMzE")],
        &body,
    )
    .await;
    // Malformed: ignored, never an error.
    let got = post(&c, &url, &[("traceparent", "00-not-a-trace-01")], &body).await;
    assert_eq!(got.status, StatusCode::OK);
    let spans = h.spans(2).await;
    assert_eq!(spans[0]["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(spans[0]["parent_span_id"], "b7ad6b7169203331");
    let props: Value = serde_json::from_str(spans[0]["properties"].as_str().unwrap()).unwrap();
    assert_eq!(props["tracestate"], "congo=t61rcWkgMzE");
    assert_ne!(spans[1]["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    assert!(spans[1]["parent_span_id"].is_null());
    // traceparent is forwarded (it is the caller's, not ours).
    assert!(h.mock.state.requests.lock().unwrap()[0]
        .headers
        .contains_key("traceparent"));
}

#[tokio::test]
async fn context_headers_fill_the_span_and_ours_are_not_forwarded() {
    let h = Harness::start().await;
    let c = client();
    let url = h.url("/v1/chat/completions");
    let body = json!({"model": "gpt-4o-mini", "user": "body-user", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    post(
        &c,
        &url,
        &[
            ("x-llmtap-session-id", "sess-1"),
            ("x-llmtap-user-id", "header-user"),
            ("x-llmtap-conversation-id", "conv-42"),
            ("x-llmtap-trace-name", "checkout flow"),
            ("x-llmtap-property-team", "payments"),
        ],
        &body,
    )
    .await;
    post(
        &c,
        &url,
        &[
            ("helicone-session-id", "h-sess"),
            ("helicone-session-path", "/trip/plan"),
            ("helicone-session-name", "Trip"),
            ("helicone-property-env", "prod"),
        ],
        &body,
    )
    .await;
    let spans = h.spans(2).await;
    let s = &spans[0];
    assert_eq!(s["session_id"], "sess-1");
    assert_eq!(
        s["user_id"], "header-user",
        "a header wins over the body's user"
    );
    assert_eq!(s["conversation_id"], "conv-42");
    let props: Value = serde_json::from_str(s["properties"].as_str().unwrap()).unwrap();
    assert_eq!(props["team"], "payments");
    assert_eq!(props["llmtap.trace_name"], "checkout flow");
    let s = &spans[1];
    assert_eq!(s["session_id"], "h-sess");
    assert_eq!(
        s["user_id"], "body-user",
        "the body's user when no header names one"
    );
    let props: Value = serde_json::from_str(s["properties"].as_str().unwrap()).unwrap();
    assert_eq!(props["env"], "prod");
    assert_eq!(props["llmtap.session_path"], "/trip/plan");
    let reqs = h.mock.state.requests.lock().unwrap();
    assert!(reqs[0]
        .headers
        .keys()
        .all(|k| !k.as_str().starts_with("x-llmtap-")));
    assert_eq!(
        reqs[1].headers["helicone-session-id"], "h-sess",
        "Helicone's headers pass as they came"
    );
}

#[tokio::test]
async fn a_tool_call_whose_result_never_comes_is_cancelled_after_the_ttl() {
    let h = Harness::start_with(|c| c.stitching.ttl_secs = 1).await;
    let c = client();
    let body =
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "weather?"}]})
            .to_string();
    post(
        &c,
        &h.url("/v1/chat/completions"),
        &[
            ("x-mock-tool-call", "get_weather"),
            ("x-mock-call-id", "call_lost"),
        ],
        &body,
    )
    .await;
    let spans = h.spans(2).await;
    let tool = by_name(&spans, "execute_tool get_weather");
    assert_eq!(tool.len(), 1);
    assert_eq!(tool[0]["status"], "cancelled");
    assert_eq!(tool[0]["error_type"], "tool_result_missing");
    assert_eq!(tool[0]["parent_span_id"], spans[0]["span_id"]);
}

#[tokio::test]
async fn stitching_can_be_turned_off() {
    let h = Harness::start_with(|c| c.stitching.enabled = false).await;
    let c = client();
    openai_agent_loop(&h, &c, "off", "call_off", Duration::from_millis(1)).await;
    let spans = h.spans(3).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let spans_again = read_spans(&h.db).await;
    assert_eq!(spans_again.len(), 3, "no tool span with stitching off");
    let traces: std::collections::HashSet<&str> = spans
        .iter()
        .map(|s| s["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(traces.len(), 3);
}

// === property: key order and whitespace do not matter ===

/// A message as JSON text with its keys in the given order and the content's
/// words separated by the given whitespace.
fn message_json(
    role: &str,
    words: &[String],
    seps: &[&str],
    order: &[usize],
    tool_call_id: Option<&str>,
) -> String {
    let mut content = String::new();
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            content.push_str(seps[i % seps.len()]);
        }
        content.push_str(w);
    }
    let mut fields = vec![
        format!("\"role\" : {}", serde_json::to_string(role).unwrap()),
        format!("\"content\":{}", serde_json::to_string(&content).unwrap()),
    ];
    if let Some(id) = tool_call_id {
        fields.push(format!("\"tool_call_id\":\"{id}\""));
    }
    let ordered: Vec<&String> = order.iter().filter_map(|&i| fields.get(i)).collect();
    let rest: Vec<&String> = fields.iter().filter(|f| !ordered.contains(f)).collect();
    format!(
        "{{ {} }}",
        ordered
            .into_iter()
            .chain(rest)
            .cloned()
            .collect::<Vec<_>>()
            .join(" ,\n ")
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn stitching_keys_ignore_key_order_and_whitespace(
        words in proptest::collection::vec("[a-zA-Z0-9.,!?]{1,8}", 1..12),
        order_a in Just(vec![0usize, 1, 2]).prop_shuffle(),
        order_b in Just(vec![0usize, 1, 2]).prop_shuffle(),
        sep_a in proptest::collection::vec(prop::sample::select(vec![" ", "  ", "\n", " \t ", "\r\n"]), 1..4),
        sep_b in proptest::collection::vec(prop::sample::select(vec![" ", "  ", "\n", " \t ", "\r\n"]), 1..4),
    ) {
        let build = |order: &[usize], seps: &[&str]| {
            let msgs = [
                message_json("user", &words, seps, order, None),
                message_json("assistant", &words, seps, order, None),
                message_json("tool", &words, seps, order, Some("call_1")),
            ];
            format!("{{\"messages\": [{}], \"model\":\"m\"}}", msgs.join(","))
        };
        let a = build(&order_a, &sep_a);
        let b = build(&order_b, &sep_b);
        let ca = llmtap::record::providers::conversation(llmtap::record::providers::Endpoint::Chat, a.as_bytes()).unwrap();
        let cb = llmtap::record::providers::conversation(llmtap::record::providers::Endpoint::Chat, b.as_bytes()).unwrap();
        let seed = llmtap::record::stitch::seed(Some("k"), "/v1");
        prop_assert_eq!(ca.chains(seed), cb.chains(seed));
        // The result's text is kept as sent; the call ids must match.
        let ids = |c: &llmtap::record::stitch::Conversation| c.results.iter().map(|r| r.call_id.clone()).collect::<Vec<_>>();
        prop_assert_eq!(ids(&ca), ids(&cb));
        // And a change of a word does change the key.
        let mut other = words.clone();
        other[0].push('x');
        let msgs = [message_json("user", &other, &sep_a, &order_a, None)];
        let c = format!("{{\"messages\": [{}]}}", msgs.join(","));
        let cc = llmtap::record::providers::conversation(llmtap::record::providers::Endpoint::Chat, c.as_bytes()).unwrap();
        prop_assert_ne!(cc.chains(seed)[0], ca.chains(seed)[0]);
    }
}
