//! Smoke tests for the in-process mock provider in `tests/mock`.

mod mock;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use mock::{reply_words, MockProvider, MOCK_CREATED};

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>()
}

fn chat(mock: &MockProvider, body: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::post(format!("{}/v1/chat/completions", mock.url()))
        .header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

async fn send(c: &HttpClient, req: Request<Full<Bytes>>) -> (StatusCode, http::HeaderMap, Bytes) {
    let resp = c.request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

const ONE_MSG: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const STREAM: &str = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test]
async fn non_streaming_json() {
    let mock = MockProvider::start().await;
    let c = client();
    let (status, headers, body) = send(
        &c,
        chat(
            &mock,
            ONE_MSG,
            &[("x-mock-words", "3"), ("x-mock-cached", "2")],
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    assert!(headers.get("date").is_none());
    let expected = format!(
        r#"{{"id":"chatcmpl-mock","object":"chat.completion","created":{MOCK_CREATED},"model":"gpt-4o-mini-2024-07-18","choices":[{{"index":0,"message":{{"role":"assistant","content":"w0 w1 w2","refusal":null}},"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":10,"completion_tokens":3,"total_tokens":13,"prompt_tokens_details":{{"cached_tokens":2,"audio_tokens":0}},"completion_tokens_details":{{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}},"system_fingerprint":"fp_mock"}}"#
    );
    assert_eq!(std::str::from_utf8(&body).unwrap(), expected);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["usage"]["total_tokens"], 13);
    assert_eq!(reply_words(3).concat(), "w0 w1 w2");

    assert_eq!(mock.state.request_count(), 1);
    let r = mock.state.last_request().unwrap();
    assert_eq!(r.uri, "/v1/chat/completions");
    assert_eq!(r.body, ONE_MSG.as_bytes());
    assert_eq!(r.headers["x-mock-words"], "3");

    // Other routes.
    let models = Request::get(format!("{}/v1/models", mock.url()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = send(&c, models).await;
    assert_eq!(status, 200);
    assert!(body.starts_with(br#"{"object":"list""#));
    let unknown = Request::get(format!("{}/x", mock.url()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = send(&c, unknown).await;
    assert_eq!(status, 404);
    assert_eq!(
        &body[..],
        br#"{"error":{"message":"mock: unknown path /x","type":"invalid_request_error","param":null,"code":"unknown_path"}}"#
    );
    let (status, _, _) = send(&c, chat(&mock, "{nope", &[])).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn streaming_sse() {
    let mock = MockProvider::start().await;
    let (status, headers, body) = send(
        &client(),
        chat(
            &mock,
            STREAM,
            &[("x-mock-words", "3"), ("x-mock-delay-ms", "2")],
        ),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(headers.get("content-length").is_none());
    let text = std::str::from_utf8(&body).unwrap();
    // role + 3 words + stop + usage + [DONE]
    assert_eq!(text.matches("data: ").count(), 7);
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert!(text.contains(r#""delta":{"content":" w1"}"#));
    assert!(text.contains(r#""choices":[],"usage":{"prompt_tokens":10,"completion_tokens":3"#));
    assert_eq!(mock.state.streams_completed.load(Ordering::SeqCst), 1);
    assert!(mock.state.last_chunk_sent_at.lock().unwrap().is_some());
}

#[tokio::test]
async fn error_and_cut_scenarios() {
    let mock = MockProvider::start().await;
    let c = client();
    let (status, _, body) = send(
        &c,
        chat(&mock, ONE_MSG, &[("x-mock-scenario", "error:429")]),
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(
        &body[..],
        br#"{"error":{"message":"mock error 429","type":"mock_error","param":null,"code":"mock_429"}}"#
    );

    let resp = c
        .request(chat(&mock, STREAM, &[("x-mock-scenario", "cut:2")]))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut received = Vec::new();
    let failed = loop {
        match body.frame().await {
            Some(Ok(frame)) => received.extend_from_slice(&frame.into_data().unwrap()),
            Some(Err(_)) => break true,
            None => break false,
        }
    };
    assert!(failed, "cut body must end with an error");
    let text = String::from_utf8(received).unwrap();
    assert_eq!(text.matches("data: ").count(), 2, "{text}");
    assert_eq!(mock.state.streams_completed.load(Ordering::SeqCst), 0);
    assert_eq!(mock.state.streams_dropped.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn client_hangup_counts_dropped_stream() {
    let mock = MockProvider::start().await;
    let resp = client()
        .request(chat(
            &mock,
            STREAM,
            &[("x-mock-words", "50"), ("x-mock-delay-ms", "20")],
        ))
        .await
        .unwrap();
    let mut body = resp.into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);
    for _ in 0..200 {
        if mock.state.streams_dropped.load(Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(mock.state.streams_dropped.load(Ordering::SeqCst), 1);
    assert_eq!(mock.state.streams_completed.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn gzip_matches_plain() {
    use std::io::Read;
    let mock = MockProvider::start().await;
    let c = client();
    for body in [ONE_MSG, STREAM] {
        let (_, _, plain) = send(&c, chat(&mock, body, &[])).await;
        let (status, headers, gz) = send(
            &c,
            chat(
                &mock,
                body,
                &[("x-mock-scenario", "gzip"), ("accept-encoding", "gzip, br")],
            ),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(headers["content-encoding"], "gzip");
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, plain);
    }
}

#[tokio::test]
async fn http2_prior_knowledge() {
    let mock = MockProvider::start().await;
    let c = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let (status, _, body) = send(&c, chat(&mock, STREAM, &[])).await;
    assert_eq!(status, 200);
    assert!(body.ends_with(b"data: [DONE]\n\n"));
    assert_eq!(
        mock.state.last_request().unwrap().uri,
        "/v1/chat/completions"
    );
    assert!(mock.state.open_connections.load(Ordering::SeqCst) >= 1);
}

/// A `POST` to `path` on the mock.
fn post(
    mock: &MockProvider,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Request<Full<Bytes>> {
    let mut b =
        Request::post(format!("{}{path}", mock.url())).header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

/// SSE events as `(event name, parsed data)`; `[DONE]` becomes `Value::Null`.
fn sse_events(body: &[u8]) -> Vec<(Option<String>, serde_json::Value)> {
    let text = std::str::from_utf8(body).unwrap();
    assert!(text.ends_with("\n\n"), "{text}");
    text.split_terminator("\n\n")
        .map(|block| {
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_string());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = Some(if d == "[DONE]" {
                        serde_json::Value::Null
                    } else {
                        serde_json::from_str(d).unwrap()
                    });
                }
            }
            (name, data.expect("every event has data"))
        })
        .collect()
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap()
}

#[tokio::test]
async fn chat_extras() {
    let mock = MockProvider::start().await;
    let c = client();
    let n2 = r#"{"model":"gpt-4o-mini","n":2,"messages":[{"role":"user","content":"hi"}]}"#;
    let (_, _, body) = send(
        &c,
        chat(
            &mock,
            n2,
            &[("x-mock-words", "3"), ("x-mock-reasoning", "4")],
        ),
    )
    .await;
    let v = json(&body);
    assert_eq!(v["choices"].as_array().unwrap().len(), 2);
    assert_eq!(v["choices"][1]["index"], 1);
    assert_eq!(v["choices"][1]["message"]["content"], "w0 w1 w2");
    assert_eq!(v["usage"]["completion_tokens"], 3 * 2 + 4);
    assert_eq!(v["usage"]["total_tokens"], 10 + 10);
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"],
        4
    );

    // Streamed n=2: role + 3 words + finish per choice, interleaved.
    let n2s = r#"{"model":"gpt-4o-mini","n":2,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let (_, _, body) = send(&c, chat(&mock, n2s, &[("x-mock-words", "3")])).await;
    let ev = sse_events(&body);
    assert_eq!(ev.len(), 2 * 5 + 2);
    let indexes: Vec<u64> = ev[..10]
        .iter()
        .map(|(_, d)| d["choices"][0]["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
    assert_eq!(ev[3].1["choices"][0]["delta"]["content"], "w0");
    assert_eq!(ev[9].1["choices"][0]["finish_reason"], "stop");
    assert_eq!(ev[10].1["usage"]["completion_tokens"], 6);
    assert!(ev[11].1.is_null());

    // Tool call, non-streamed and streamed.
    let tool = [("x-mock-tool-call", "get_weather"), ("x-mock-words", "50")];
    let (_, _, body) = send(&c, chat(&mock, ONE_MSG, &tool)).await;
    let v = json(&body);
    let choice = &v["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert!(choice["message"]["content"].is_null());
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["id"], "call_mock_0");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], mock::TOOL_ARGS);
    assert_eq!(v["usage"]["completion_tokens"], 9);
    let (_, _, body) = send(&c, chat(&mock, STREAM, &tool)).await;
    let ev = sse_events(&body);
    assert_eq!(ev.len(), 1 + 5 + 1 + 1 + 1);
    let delta = &ev[0].1["choices"][0]["delta"];
    assert_eq!(delta["tool_calls"][0]["function"]["name"], "get_weather");
    let args: String = ev[1..6]
        .iter()
        .map(|(_, d)| {
            d["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(args, r#"{"city":"Paris"}"#);
    assert_eq!(ev[6].1["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(ev[7].1["usage"]["completion_tokens"], 9);

    // Refusal.
    let refusal = [("x-mock-scenario", "refusal")];
    let (_, _, body) = send(&c, chat(&mock, ONE_MSG, &refusal)).await;
    let v = json(&body);
    assert!(v["choices"][0]["message"]["content"].is_null());
    assert_eq!(
        v["choices"][0]["message"]["refusal"],
        "I can't help with that."
    );
    assert_eq!(v["usage"]["completion_tokens"], 6);
    let (_, _, body) = send(&c, chat(&mock, STREAM, &refusal)).await;
    let ev = sse_events(&body);
    assert_eq!(ev.len(), 1 + 2 + 1 + 1 + 1);
    assert_eq!(
        ev[2].1["choices"][0]["delta"]["refusal"],
        " help with that."
    );

    // choices-null: the usage chunk has "choices":null.
    let (_, _, body) = send(
        &c,
        chat(
            &mock,
            STREAM,
            &[("x-mock-scenario", "choices-null"), ("x-mock-words", "2")],
        ),
    )
    .await;
    let ev = sse_events(&body);
    assert!(ev[4].1["choices"].is_null());
    assert_eq!(ev[4].1["usage"]["completion_tokens"], 2);

    // stream-error: role, first word, error event, end without [DONE].
    let (status, _, body) = send(
        &c,
        chat(&mock, STREAM, &[("x-mock-scenario", "stream-error")]),
    )
    .await;
    assert_eq!(status, 200);
    let ev = sse_events(&body);
    assert_eq!(ev.len(), 3);
    assert_eq!(ev[1].1["choices"][0]["delta"]["content"], "w0");
    assert_eq!(ev[2].1["error"]["type"], "server_error");
}

#[tokio::test]
async fn responses_api() {
    let mock = MockProvider::start().await;
    let c = client();
    let path = "/v1/responses";
    let two_items = r#"{"model":"gpt-4o-mini","input":[{"role":"user","content":"hi"},{"role":"user","content":"again"}]}"#;
    let hdr = [
        ("x-mock-words", "3"),
        ("x-mock-cached", "2"),
        ("x-mock-reasoning", "5"),
    ];
    let (status, _, body) = send(&c, post(&mock, path, two_items, &hdr)).await;
    assert_eq!(status, 200);
    let v = json(&body);
    assert_eq!(v["id"], "resp_mock");
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "completed");
    assert_eq!(v["created_at"], MOCK_CREATED);
    assert_eq!(v["model"], "gpt-4o-mini-2024-07-18");
    assert_eq!(v["output"][0]["content"][0]["text"], "w0 w1 w2");
    let u = &v["usage"];
    assert_eq!(u["input_tokens"], 7 + 3 * 2);
    assert_eq!(u["input_tokens_details"]["cached_tokens"], 2);
    assert_eq!(u["output_tokens"], 3 + 5);
    assert_eq!(u["output_tokens_details"]["reasoning_tokens"], 5);
    assert_eq!(u["total_tokens"], 13 + 8);

    // Streamed text.
    let streamed = r#"{"model":"gpt-4o-mini","input":"hi","stream":true}"#;
    let (_, headers, body) = send(&c, post(&mock, path, streamed, &hdr[..1])).await;
    assert_eq!(headers["content-type"], "text/event-stream");
    let ev = sse_events(&body);
    let kinds: Vec<&str> = ev.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
    for (k, (name, data)) in ev.iter().enumerate() {
        assert_eq!(data["type"].as_str(), name.as_deref());
        assert_eq!(data["sequence_number"], k);
    }
    assert!(ev[0].1["response"]["usage"].is_null());
    assert_eq!(ev[0].1["response"]["status"], "in_progress");
    assert_eq!(ev[5].1["delta"], " w1");
    assert_eq!(ev[7].1["text"], "w0 w1 w2");
    assert_eq!(ev[10].1["response"]["usage"]["input_tokens"], 10);
    assert_eq!(ev[10].1["response"]["usage"]["output_tokens"], 3);

    // Streamed tool call.
    let tool = [("x-mock-tool-call", "get_weather")];
    let (_, _, body) = send(&c, post(&mock, path, streamed, &tool)).await;
    let ev = sse_events(&body);
    assert_eq!(ev.len(), 2 + 1 + 5 + 1 + 1 + 1);
    assert_eq!(ev[2].1["item"]["type"], "function_call");
    assert_eq!(ev[2].1["item"]["arguments"], "");
    let args: String = ev[3..8]
        .iter()
        .map(|(_, d)| d["delta"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(args, mock::TOOL_ARGS);
    assert_eq!(ev[8].1["type"], "response.function_call_arguments.done");
    let done = &ev[10].1["response"];
    assert_eq!(done["output"][0]["name"], "get_weather");
    assert_eq!(done["output"][0]["call_id"], "call_mock_0");
    assert_eq!(done["usage"]["output_tokens"], 9);

    // incomplete / response-failed / stream-error.
    let (_, _, body) = send(
        &c,
        post(&mock, path, streamed, &[("x-mock-scenario", "incomplete")]),
    )
    .await;
    let ev = sse_events(&body);
    let last = &ev.last().unwrap().1;
    assert_eq!(last["type"], "response.incomplete");
    assert_eq!(last["response"]["status"], "incomplete");
    assert_eq!(
        last["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    assert_eq!(last["response"]["usage"]["output_tokens"], 8);
    let (_, _, body) = send(
        &c,
        post(
            &mock,
            path,
            streamed,
            &[("x-mock-scenario", "response-failed")],
        ),
    )
    .await;
    let ev = sse_events(&body);
    assert_eq!(ev.len(), 3);
    assert_eq!(ev[2].1["response"]["status"], "failed");
    assert_eq!(ev[2].1["response"]["error"]["code"], "server_error");
    assert!(ev[2].1["response"]["usage"].is_null());
    let (_, _, body) = send(
        &c,
        post(
            &mock,
            path,
            streamed,
            &[("x-mock-scenario", "stream-error")],
        ),
    )
    .await;
    let ev = sse_events(&body);
    assert_eq!(ev.len(), 6);
    assert_eq!(ev[5].0.as_deref(), Some("error"));
    assert_eq!(ev[5].1["code"], "server_error");
    assert_eq!(ev[5].1["sequence_number"], 5);
}

#[tokio::test]
async fn embeddings_api() {
    let mock = MockProvider::start().await;
    let c = client();
    let (status, _, body) = send(
        &c,
        post(
            &mock,
            "/v1/embeddings",
            r#"{"model":"text-embedding-3-large","input":["a","b"]}"#,
            &[],
        ),
    )
    .await;
    assert_eq!(status, 200);
    let v = json(&body);
    assert_eq!(v["model"], "text-embedding-3-large");
    assert_eq!(v["usage"]["prompt_tokens"], 2 * 2 + 3);
    assert_eq!(v["usage"]["total_tokens"], 7);
    assert_eq!(v["data"][1]["index"], 1);
    let floats: Vec<f64> = v["data"][1]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(floats, [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]);

    let (_, _, body) = send(
        &c,
        post(
            &mock,
            "/v1/embeddings",
            r#"{"input":"a","encoding_format":"base64"}"#,
            &[],
        ),
    )
    .await;
    let v = json(&body);
    assert_eq!(v["model"], "text-embedding-3-small");
    assert_eq!(v["usage"]["total_tokens"], 5);
    let b64 = v["data"][0]["embedding"].as_str().unwrap();
    let bytes: Vec<u8> = mock::embedding_vector(0)
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    assert_eq!(b64, mock::base64_encode(&bytes));
    assert_eq!(b64.len(), 44);
    assert_eq!(mock::base64_encode(b"foobar"), "Zm9vYmFy");
    assert_eq!(mock::base64_encode(b"fooba"), "Zm9vYmE=");
    assert_eq!(mock::base64_encode(b"foob"), "Zm9vYg==");
}

#[tokio::test]
async fn legacy_completions() {
    let mock = MockProvider::start().await;
    let c = client();
    let path = "/v1/completions";
    let (status, _, body) = send(
        &c,
        post(
            &mock,
            path,
            r#"{"model":"gpt-3.5-turbo-instruct","prompt":"hi"}"#,
            &[("x-mock-words", "4")],
        ),
    )
    .await;
    assert_eq!(status, 200);
    let v = json(&body);
    assert_eq!(v["id"], "cmpl-mock");
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["model"], "gpt-3.5-turbo-instruct-2024-07-18");
    assert_eq!(v["choices"][0]["text"], "w0 w1 w2 w3");
    assert_eq!(v["usage"]["completion_tokens"], 4);
    assert_eq!(v["usage"]["total_tokens"], 9);

    let (_, _, body) = send(
        &c,
        post(
            &mock,
            path,
            r#"{"prompt":"hi","stream":true}"#,
            &[("x-mock-words", "4")],
        ),
    )
    .await;
    let ev = sse_events(&body);
    assert_eq!(ev.len(), 4 + 1 + 1);
    assert_eq!(ev[1].1["choices"][0]["text"], " w1");
    assert_eq!(ev[4].1["choices"][0]["finish_reason"], "stop");
    assert!(ev[5].1.is_null());
}

#[tokio::test]
async fn anthropic_messages() {
    let mock = MockProvider::start().await;
    let c = client();
    let path = "/v1/messages";
    let req =
        r#"{"model":"claude-x","max_tokens":100,"messages":[{"role":"user","content":"hi"}]}"#;
    let hdr = [
        ("x-mock-words", "3"),
        ("x-mock-cached", "4"),
        ("x-mock-cache-write", "6"),
    ];
    let (status, _, body) = send(&c, post(&mock, path, req, &hdr)).await;
    assert_eq!(status, 200);
    assert_eq!(
        std::str::from_utf8(&body).unwrap(),
        r#"{"id":"msg_mock","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"w0 w1 w2"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":10,"cache_creation_input_tokens":6,"cache_read_input_tokens":4,"output_tokens":3}}"#
    );

    let stream = r#"{"model":"claude-x","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let (_, _, body) = send(&c, post(&mock, path, stream, &hdr)).await;
    let ev = sse_events(&body);
    let kinds: Vec<&str> = ev.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    for (name, data) in &ev {
        assert_eq!(data["type"].as_str(), name.as_deref());
    }
    let start_usage = &ev[0].1["message"]["usage"];
    assert_eq!(start_usage["input_tokens"], 10);
    assert_eq!(start_usage["cache_creation_input_tokens"], 6);
    assert_eq!(start_usage["cache_read_input_tokens"], 4);
    assert_eq!(start_usage["output_tokens"], 1);
    assert_eq!(ev[4].1["delta"]["text"], " w1");
    assert_eq!(ev[7].1["usage"]["output_tokens"], 3);
    assert_eq!(ev[7].1["delta"]["stop_reason"], "end_turn");

    // Thinking + tool call.
    let tool = [
        ("x-mock-tool-call", "get_weather"),
        ("x-mock-thinking", "1"),
    ];
    let (_, _, body) = send(&c, post(&mock, path, req, &tool)).await;
    let v = json(&body);
    assert_eq!(v["content"][0]["type"], "thinking");
    assert_eq!(v["content"][0]["signature"], "sig_mock");
    assert_eq!(v["content"][1]["type"], "tool_use");
    assert_eq!(v["content"][1]["input"]["city"], "Paris");
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["usage"]["output_tokens"], 9);
    let (_, _, body) = send(&c, post(&mock, path, stream, &tool)).await;
    let ev = sse_events(&body);
    // start, thinking (start, ping, 2 deltas, stop), tool (start, 5, stop), delta, stop
    assert_eq!(ev.len(), 1 + 5 + 7 + 2);
    assert_eq!(ev[3].1["delta"]["thinking"], mock::THINKING_TEXT);
    assert_eq!(ev[4].1["delta"]["signature"], mock::THINKING_SIGNATURE);
    assert_eq!(ev[6].1["content_block"]["input"], serde_json::json!({}));
    let partial: String = ev[7..12]
        .iter()
        .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(partial, mock::TOOL_ARGS);
    assert_eq!(ev[12].1["index"], 1);
    assert_eq!(ev[13].1["usage"]["output_tokens"], 9);

    // stream-error, errors, count_tokens, a body without messages.
    let (_, _, body) = send(
        &c,
        post(&mock, path, stream, &[("x-mock-scenario", "stream-error")]),
    )
    .await;
    let ev = sse_events(&body);
    assert_eq!(ev.len(), 5);
    assert_eq!(ev[4].0.as_deref(), Some("error"));
    assert_eq!(ev[4].1["error"]["type"], "overloaded_error");
    for (code, kind) in [
        ("429", "rate_limit_error"),
        ("529", "overloaded_error"),
        ("500", "api_error"),
        ("400", "invalid_request_error"),
    ] {
        let scenario = format!("error:{code}");
        let (status, _, body) = send(
            &c,
            post(
                &mock,
                "/anthropic/v1/messages",
                req,
                &[("x-mock-scenario", &scenario)],
            ),
        )
        .await;
        assert_eq!(status.as_str(), code);
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            format!(
                r#"{{"type":"error","error":{{"type":"{kind}","message":"mock error {code}"}}}}"#
            )
        );
    }
    let (status, _, body) = send(&c, post(&mock, "/v1/messages/count_tokens", req, &[])).await;
    assert_eq!(status, 200);
    assert_eq!(&body[..], br#"{"input_tokens":10}"#);
    let (status, _, _) = send(&c, post(&mock, path, "{}", &[])).await;
    assert_eq!(status, 404);
    let (status, _, body) = send(&c, post(&mock, path, "{nope", &[])).await;
    assert_eq!(status, 400);
    assert_eq!(json(&body)["error"]["type"], "invalid_request_error");
}
