//! End-to-end tests of the request path: a real llmtap (`run`), the in-repo
//! mock provider, a real HTTP client, and spans read back from the real
//! SQLite file.

mod common;
mod mock;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use llmtap::record::tokens::{self, Encoding};
use serde_json::Value;

const KEY: &str = "sk-test-SECRET-0123456789";

fn is_hex(v: &Value, len: usize) -> bool {
    v.as_str()
        .is_some_and(|s| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// P = 7 + 3 × messages, as the mock reports.
const MOCK_PROMPT_TOKENS: i64 = 7 + 3 * 2;

#[tokio::test]
async fn json_response_bytes_are_identical_and_span_has_every_field() {
    let h = Harness::start().await;
    let c = client();
    let body = chat_body(false, false);
    let headers = [
        ("authorization", "Bearer sk-test-SECRET-0123456789"),
        ("x-mock-words", "5"),
        ("x-mock-cached", "3"),
    ];
    let direct = post(&c, &h.direct("/v1/chat/completions"), &headers, &body).await;
    let via = post(&c, &h.url("/v1/chat/completions"), &headers, &body).await;
    assert_eq!(via.status, StatusCode::OK);
    assert_eq!(via.body, direct.body, "response bytes differ");
    assert_eq!(
        via.headers.get("content-type"),
        direct.headers.get("content-type")
    );
    assert_eq!(
        via.headers.get("content-length"),
        direct.headers.get("content-length")
    );

    let s = h.one_span().await;
    assert!(is_hex(&s["trace_id"], 32), "{s}");
    assert!(is_hex(&s["span_id"], 16), "{s}");
    assert!(s["parent_span_id"].is_null());
    assert_eq!(s["name"], "chat gpt-4o-mini");
    assert_eq!(s["operation_type"], "llm_call");
    assert_eq!(s["provider"], "openai");
    assert_eq!(s["route"], "/v1");
    assert_eq!(s["method"], "POST");
    assert_eq!(s["path"], "/v1/chat/completions");
    assert_eq!(s["model"], "gpt-4o-mini");
    assert_eq!(s["response_model"], "gpt-4o-mini-2024-07-18");
    assert_eq!(s["response_id"], "chatcmpl-mock");
    assert_eq!(s["finish_reason"], "stop");
    assert_eq!(s["stream"], 0);
    assert_eq!(s["http_status"], 200);
    assert_eq!(s["status"], "completed");
    assert!(s["error_type"].is_null() && s["error_message"].is_null());
    assert_eq!(s["input_tokens"], MOCK_PROMPT_TOKENS);
    assert_eq!(s["output_tokens"], 5);
    assert_eq!(s["cached_input_tokens"], 3);
    assert_eq!(s["reasoning_tokens"], 0);
    assert_eq!(s["tokens_estimated"], 0);
    // Priced from the response model with the shipped table.
    let prices = llmtap::record::pricing::PriceTable::shipped().unwrap();
    let tokens = llmtap::record::pricing::TokenCounts {
        input: MOCK_PROMPT_TOKENS,
        output: 5,
        cached_input: 3,
        cache_write: 0,
        reasoning: 0,
    };
    let expected = prices.cost("gpt-4o-mini-2024-07-18", &tokens).unwrap();
    assert!(
        (s["cost_usd"].as_f64().unwrap() - expected).abs() < 1e-12,
        "{s}"
    );
    assert!(s["ttft_ms"].is_null(), "no TTFT for a non-streamed call");
    let (start, end) = (
        s["start_time"].as_i64().unwrap(),
        s["end_time"].as_i64().unwrap(),
    );
    assert!(end >= start && start > 1_700_000_000_000_000);
    assert!(s["duration_ms"].as_f64().unwrap() >= 0.0);
    assert!(is_hex(&s["api_key_hash"], 16));
    assert_eq!(s["request_body"].as_str().unwrap(), body);
    assert_eq!(
        s["response_body"].as_str().unwrap().as_bytes(),
        &via.body[..]
    );
    // The key itself is nowhere in the row.
    assert!(!s.to_string().contains(KEY));
}

#[tokio::test]
async fn request_bytes_and_headers_reach_the_upstream_unchanged() {
    let h = Harness::start().await;
    let c = client();
    // Odd spacing, key order, unicode and escapes: must arrive byte for byte.
    let body = "{ \"messages\":[{\"content\":\"h\u{e9}llo \\u00e9 \\\"q\\\"\",\"role\":\"user\"}],\n  \"model\" : \"gpt-4o-mini\" }";
    let via = post(
        &c,
        &h.url("/v1/chat/completions?api-version=1&x=%20y"),
        &[
            ("authorization", "Bearer sk-abc"),
            ("x-custom", "kept"),
            ("x-llmtap-session-id", "ours"),
            ("x-llmtap-property-team", "ours"),
        ],
        body,
    )
    .await;
    assert_eq!(via.status, StatusCode::OK);
    let got = h.mock.state.last_request().unwrap();
    assert_eq!(&got.body[..], body.as_bytes());
    assert_eq!(got.uri, "/v1/chat/completions?api-version=1&x=%20y");
    assert_eq!(got.headers["authorization"], "Bearer sk-abc");
    assert_eq!(got.headers["x-custom"], "kept");
    assert_eq!(got.headers["host"], h.mock.addr.to_string().as_str());
    assert!(got
        .headers
        .keys()
        .all(|k| !k.as_str().starts_with("x-llmtap-")));
    let s = h.one_span().await;
    // The query is never stored (it can carry keys).
    assert_eq!(s["path"], "/v1/chat/completions");
}

#[tokio::test]
async fn stream_bytes_identical_with_exact_usage_and_ttft() {
    let h = Harness::start().await;
    let c = client();
    let body = chat_body(true, true);
    let hdr = [("x-mock-words", "6")];
    let direct = post(&c, &h.direct("/v1/chat/completions"), &hdr, &body).await;
    let via = post(&c, &h.url("/v1/chat/completions"), &hdr, &body).await;
    assert_eq!(via.body, direct.body);
    assert_eq!(via.headers["content-type"], "text/event-stream");
    let s = h.one_span().await;
    assert_eq!(s["stream"], 1);
    assert_eq!(s["status"], "completed");
    assert_eq!(s["input_tokens"], MOCK_PROMPT_TOKENS);
    assert_eq!(s["output_tokens"], 6);
    assert_eq!(s["tokens_estimated"], 0);
    assert_eq!(s["response_id"], "chatcmpl-mock");
    assert_eq!(s["response_model"], "gpt-4o-mini-2024-07-18");
    assert_eq!(s["finish_reason"], "stop");
    let ttft = s["ttft_ms"].as_f64().expect("streamed call has a TTFT");
    assert!(ttft > 0.0 && ttft <= s["duration_ms"].as_f64().unwrap());
}

#[tokio::test]
async fn stream_without_usage_is_estimated_with_the_real_tokenizer() {
    let h = Harness::start().await;
    let c = client();
    let body = chat_body(true, false);
    let via = post(
        &c,
        &h.url("/v1/chat/completions"),
        &[("x-mock-words", "40")],
        &body,
    )
    .await;
    assert_eq!(via.status, StatusCode::OK);
    let s = h.one_span().await;
    let reply: String = mock::reply_words(40).concat();
    let expected_out = tokens::count(Encoding::O200k, &reply) as i64;
    let expected_in =
        llmtap::record::providers::openai::estimate_chat_input(body.as_bytes(), Encoding::O200k)
            .unwrap();
    assert_eq!(s["tokens_estimated"], 1);
    assert_eq!(s["output_tokens"], expected_out);
    assert_eq!(s["input_tokens"], expected_in);
    assert!(
        expected_out > 40,
        "the tokenizer splits w0..w39 into more than 40 tokens"
    );
}

#[tokio::test]
async fn gzip_bodies_pass_compressed_and_are_decoded_for_the_span() {
    let h = Harness::start().await;
    let c = client();
    let hdr = [
        ("x-mock-scenario", "gzip"),
        ("accept-encoding", "gzip"),
        ("x-mock-words", "7"),
    ];
    for stream in [false, true] {
        let body = chat_body(stream, true);
        let direct = post(&c, &h.direct("/v1/chat/completions"), &hdr, &body).await;
        let via = post(&c, &h.url("/v1/chat/completions"), &hdr, &body).await;
        assert_eq!(via.headers["content-encoding"], "gzip");
        assert_eq!(
            via.body, direct.body,
            "compressed bytes differ (stream={stream})"
        );
    }
    let spans = h.spans(2).await;
    for s in &spans {
        assert_eq!(s["status"], "completed", "{s}");
        assert_eq!(s["output_tokens"], 7, "{s}");
        assert_eq!(s["input_tokens"], MOCK_PROMPT_TOKENS);
        assert_eq!(s["tokens_estimated"], 0);
        // The captured body is the decoded text.
        assert!(s["response_body"]
            .as_str()
            .unwrap()
            .contains("chatcmpl-mock"));
    }
}

#[tokio::test]
async fn upstream_errors_pass_through_and_fail_the_span() {
    let h = Harness::start().await;
    let c = client();
    for code in [400u16, 429, 500, 503] {
        let hdr = [("x-mock-scenario", format!("error:{code}"))];
        let hdr: Vec<(&str, &str)> = hdr.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let direct = post(
            &c,
            &h.direct("/v1/chat/completions"),
            &hdr,
            &chat_body(false, false),
        )
        .await;
        let via = post(
            &c,
            &h.url("/v1/chat/completions"),
            &hdr,
            &chat_body(false, false),
        )
        .await;
        assert_eq!(via.status.as_u16(), code);
        assert_eq!(via.body, direct.body);
    }
    let spans = h.spans(4).await;
    let mut codes: Vec<i64> = spans
        .iter()
        .map(|s| s["http_status"].as_i64().unwrap())
        .collect();
    codes.sort();
    assert_eq!(codes, vec![400, 429, 500, 503]);
    for s in &spans {
        let code = s["http_status"].as_i64().unwrap();
        assert_eq!(s["status"], "failed");
        assert_eq!(s["error_type"], "mock_error");
        assert_eq!(s["error_message"], format!("mock error {code}"));
        assert!(s["input_tokens"].is_null() && s["output_tokens"].is_null());
    }
}

#[tokio::test]
async fn unreachable_upstream_is_a_502_naming_it() {
    // A port that was just free: nothing listens there.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let h = Harness::start_with(|c| c.routes[0].upstream = format!("http://{dead}")).await;
    let via = post(
        &client(),
        &h.url("/v1/chat/completions"),
        &[],
        &chat_body(false, false),
    )
    .await;
    assert_eq!(via.status, StatusCode::BAD_GATEWAY);
    let j = via.json();
    assert_eq!(j["error"]["code"], "upstream_unreachable");
    let msg = j["error"]["message"].as_str().unwrap();
    assert!(msg.contains(&dead.to_string()), "{msg}");
    let s = h.one_span().await;
    assert_eq!(s["status"], "failed");
    assert_eq!(s["http_status"], 502);
    assert_eq!(s["error_type"], "upstream_unreachable");
    assert!(s["error_message"]
        .as_str()
        .unwrap()
        .contains(&dead.to_string()));
    // The body was never read (no connection to send it on): no model.
    assert!(s["model"].is_null());
}

#[tokio::test]
async fn tls_failure_is_a_502() {
    // https to the mock, which speaks plain HTTP: the handshake fails.
    let h2 = Harness::start_with(|c| {
        c.routes[0].upstream = c.routes[0].upstream.replace("http://", "https://")
    })
    .await;
    let via = post(
        &client(),
        &h2.url("/v1/chat/completions"),
        &[],
        &chat_body(false, false),
    )
    .await;
    assert_eq!(via.status, StatusCode::BAD_GATEWAY);
    assert_eq!(via.json()["error"]["code"], "upstream_tls_error");
    let s = h2.one_span().await;
    assert_eq!(s["status"], "failed");
    assert_eq!(s["error_type"], "upstream_tls_error");
}

#[tokio::test]
async fn slow_headers_time_out_as_504() {
    let h = Harness::start_with(|c| c.upstream.first_byte_timeout_ms = 300).await;
    let started = Instant::now();
    let via = post(
        &client(),
        &h.url("/v1/chat/completions"),
        &[("x-mock-scenario", "delay-headers:3000")],
        &chat_body(false, false),
    )
    .await;
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert_eq!(via.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(via.json()["error"]["code"], "upstream_timeout");
    let s = h.one_span().await;
    assert_eq!(s["status"], "failed");
    assert_eq!(s["http_status"], 504);
    assert_eq!(s["error_type"], "upstream_timeout");
}

#[tokio::test]
async fn a_cut_stream_reaches_the_client_as_a_cut_and_keeps_tokens_seen() {
    let h = Harness::start().await;
    let c = client();
    // Role chunk + 3 word chunks, then the upstream connection breaks.
    let req = request(
        Method::POST,
        &h.url("/v1/chat/completions"),
        &[
            ("content-type", "application/json"),
            ("x-mock-scenario", "cut:4"),
            ("x-mock-words", "10"),
        ],
        chat_body(true, false),
    );
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut got = Vec::new();
    let mut errored = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => got.extend_from_slice(f.data_ref().map(|d| &d[..]).unwrap_or(b"")),
            Err(_) => {
                errored = true;
                break;
            }
        }
    }
    assert!(errored, "the client must see the cut, not a clean end");
    let text = String::from_utf8_lossy(&got);
    assert!(!text.contains("[DONE]"));
    let s = h.one_span().await;
    assert_eq!(s["status"], "failed");
    assert_eq!(s["error_type"], "upstream_stream_error");
    let seen: String = mock::reply_words(3).concat();
    assert_eq!(
        s["output_tokens"],
        tokens::count(Encoding::O200k, &seen) as i64
    );
    assert_eq!(s["tokens_estimated"], 1);
}

#[tokio::test]
async fn client_hang_up_cancels_the_span_and_closes_the_upstream_stream() {
    let h = Harness::start().await;
    let c = client();
    let req = request(
        Method::POST,
        &h.url("/v1/chat/completions"),
        &[
            ("content-type", "application/json"),
            ("x-mock-delay-ms", "50"),
            ("x-mock-words", "200"),
        ],
        chat_body(true, true),
    );
    let resp = c.request(req).await.unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(body);
    drop(c);
    let s = h.one_span().await;
    assert_eq!(s["status"], "cancelled");
    assert_eq!(s["error_type"], "client_disconnected");
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.mock.state.streams_dropped.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "upstream stream was never closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.mock.state.streams_completed.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn malformed_bodies_are_forwarded_untouched_and_recorded() {
    let h = Harness::start().await;
    let c = client();
    for scenario in ["malformed-json", "malformed-sse"] {
        let hdr = [("x-mock-scenario", scenario)];
        let direct = post(
            &c,
            &h.direct("/v1/chat/completions"),
            &hdr,
            &chat_body(true, false),
        )
        .await;
        let via = post(
            &c,
            &h.url("/v1/chat/completions"),
            &hdr,
            &chat_body(true, false),
        )
        .await;
        assert_eq!(via.body, direct.body, "{scenario}");
    }
    // A malformed request body: forwarded as is; the mock says 400.
    let bad = "{\"model\": \"gpt-4o-mini\", \"messages\": [";
    let via = post(&c, &h.url("/v1/chat/completions"), &[], bad).await;
    assert_eq!(via.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        &h.mock.state.last_request().unwrap().body[..],
        bad.as_bytes()
    );
    let spans = h.spans(3).await;
    assert_eq!(spans.len(), 3);
    // malformed-json: a 200 whose body cannot be parsed.
    assert_eq!(spans[0]["status"], "completed");
    assert!(spans[0]["response_id"].is_null());
    // malformed-sse: the one good chunk was read.
    assert_eq!(spans[1]["response_id"], "chatcmpl-x");
    assert_eq!(spans[2]["status"], "failed");
    assert_eq!(spans[2]["http_status"], 400);
    assert!(spans[2]["model"].is_null());
    assert_eq!(spans[2]["error_message"], "mock: invalid JSON body");
}

#[tokio::test]
async fn chunks_reach_the_client_as_they_are_produced() {
    let h = Harness::start().await;
    let c = client();
    let req = request(
        Method::POST,
        &h.url("/v1/chat/completions"),
        &[
            ("content-type", "application/json"),
            ("x-mock-delay-ms", "150"),
            ("x-mock-words", "4"),
        ],
        chat_body(true, false),
    );
    let resp = c.request(req).await.unwrap();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    let first_at = Instant::now();
    assert!(first.data_ref().unwrap().starts_with(b"data: "));
    assert!(
        h.mock.state.last_chunk_sent_at.lock().unwrap().is_none(),
        "last chunk already sent"
    );
    while body.frame().await.is_some() {}
    let last_sent = h
        .mock
        .state
        .last_chunk_sent_at
        .lock()
        .unwrap()
        .expect("stream finished");
    assert!(first_at < last_sent);
    assert!(last_sent - first_at >= Duration::from_millis(500));
}

#[tokio::test]
async fn unknown_path_is_a_404_naming_the_prefixes_and_never_proxied() {
    let h = Harness::start().await;
    let c = client();
    let got = send(
        &c,
        request(
            Method::GET,
            &h.url("/v2/models"),
            &[("host", "api.openai.com")],
            "",
        ),
    )
    .await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    let msg = got.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("/v1") && msg.contains("/anthropic"), "{msg}");
    assert_eq!(h.mock.state.request_count(), 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(read_spans(&h.db).await.is_empty());
}

#[tokio::test]
async fn other_paths_get_timing_spans_and_anthropic_prefix_is_stripped() {
    let h = Harness::start().await;
    let c = client();
    let got = send(&c, request(Method::GET, &h.url("/v1/models"), &[], "")).await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(got.json()["data"].is_array());
    let got = post(
        &c,
        &h.url("/anthropic/v1/messages"),
        &[("x-api-key", "sk-ant-x")],
        "{}",
    )
    .await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert_eq!(h.mock.state.last_request().unwrap().uri, "/v1/messages");
    let spans = h.spans(2).await;
    assert_eq!(spans[0]["operation_type"], "models");
    assert_eq!(spans[0]["name"], "GET /v1/models");
    assert_eq!(spans[0]["status"], "completed");
    assert_eq!(spans[1]["provider"], "anthropic");
    assert_eq!(spans[1]["route"], "/anthropic");
    assert_eq!(spans[1]["path"], "/anthropic/v1/messages");
    assert_eq!(spans[1]["status"], "failed");
}

#[tokio::test]
async fn http2_clients_are_served() {
    let h = Harness::start().await;
    let c = h2_client();
    let body = chat_body(true, true);
    let direct = post(&client(), &h.direct("/v1/chat/completions"), &[], &body).await;
    let via = post(&c, &h.url("/v1/chat/completions"), &[], &body).await;
    assert_eq!(via.status, StatusCode::OK);
    assert_eq!(via.body, direct.body);
    let s = h.one_span().await;
    assert_eq!(s["status"], "completed");
    assert_eq!(s["output_tokens"], 8);
}

#[tokio::test]
async fn tracing_off_is_a_plain_proxy_with_no_store() {
    let h = Harness::start_with(|c| c.tracing.enabled = false).await;
    let c = client();
    let body = chat_body(true, false);
    let direct = post(&c, &h.direct("/v1/chat/completions"), &[], &body).await;
    let via = post(&c, &h.url("/v1/chat/completions"), &[], &body).await;
    assert_eq!(via.body, direct.body);
    assert!(!h.db.exists(), "no database is created with tracing off");
    if h.on_postgres() {
        // The harness created the database; llmtap never connected to it.
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&h.database_url).await.unwrap();
        let tables: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(tables, 0, "no schema is created with tracing off");
    }
}

#[tokio::test]
async fn a_thousand_requests_make_a_thousand_exact_spans() {
    let h = Harness::start().await;
    let c = client();
    let mut tasks = tokio::task::JoinSet::new();
    let url = h.url("/v1/chat/completions");
    for i in 0..1000usize {
        let c = c.clone();
        let url = url.clone();
        tasks.spawn(async move {
            let words = (i % 17 + 1).to_string();
            let stream = i % 2 == 0;
            let got = post(
                &c,
                &url,
                &[("x-mock-words", &words)],
                &chat_body(stream, true),
            )
            .await;
            assert_eq!(got.status, StatusCode::OK);
        });
        if tasks.len() >= 32 {
            tasks.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let spans = h.spans(1000).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let spans_again = read_spans(&h.db).await;
    assert_eq!(spans_again.len(), 1000);
    let out: i64 = spans
        .iter()
        .map(|s| s["output_tokens"].as_i64().unwrap())
        .sum();
    let expected: i64 = (0..1000).map(|i| (i % 17 + 1) as i64).sum();
    assert_eq!(out, expected);
    assert!(spans.iter().all(|s| s["status"] == "completed"
        && s["tokens_estimated"] == 0
        && s["input_tokens"] == MOCK_PROMPT_TOKENS));
    let ids: std::collections::HashSet<&str> = spans
        .iter()
        .map(|s| s["span_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1000);
}

#[tokio::test]
async fn shutdown_drains_open_streams_and_writes_their_spans() {
    let mut h = Harness::start_with(|c| c.tracing.batch_interval_ms = 60_000).await;
    let c = client();
    let req = request(
        Method::POST,
        &h.url("/v1/chat/completions"),
        &[
            ("content-type", "application/json"),
            ("x-mock-delay-ms", "100"),
            ("x-mock-words", "5"),
        ],
        chat_body(true, true),
    );
    let resp = c.request(req).await.unwrap();
    let reader =
        tokio::spawn(async move { resp.into_body().collect().await.map(|b| b.to_bytes()) });
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.stop().await;
    let body: Bytes = reader
        .await
        .unwrap()
        .expect("the open stream finished cleanly");
    assert!(String::from_utf8_lossy(&body).ends_with("data: [DONE]\n\n"));
    // The batch interval is a minute: only the shutdown flush can have written it.
    let spans = read_spans(&h.db).await;
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0]["status"], "completed");
    // And no new connections are accepted.
    assert!(tokio::net::TcpStream::connect(h.addr).await.is_err());
}

#[tokio::test]
async fn admin_healthz_answers() {
    let h = Harness::start().await;
    let got = send(
        &client(),
        request(Method::GET, &format!("http://{}/healthz", h.admin), &[], ""),
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json()["status"], "ok");
    let got = send(
        &client(),
        request(Method::GET, &format!("http://{}/readyz", h.admin), &[], ""),
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json()["ready"], true);
}

#[tokio::test]
async fn exact_stream_usage_asks_for_usage_and_hides_it_from_the_client() {
    let h = Harness::start_with(|c| c.tracing.exact_stream_usage = true).await;
    let c = client();
    let body = chat_body(true, false);
    let hdr = [("x-mock-words", "9"), ("accept-encoding", "gzip")];
    // Direct, the client's request as it is: no usage chunk, no "usage":null.
    let direct = post(
        &c,
        &h.direct("/v1/chat/completions"),
        &[("x-mock-words", "9")],
        &body,
    )
    .await;
    assert!(!String::from_utf8_lossy(&direct.body).contains("usage"));
    let via = post(&c, &h.url("/v1/chat/completions"), &hdr, &body).await;
    assert_eq!(via.status, StatusCode::OK);
    assert_eq!(
        via.body, direct.body,
        "the client must get what it would have got"
    );
    // The provider was asked for usage (and for an uncompressed stream).
    let sent = h.mock.state.last_request().unwrap();
    let sent_json: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(sent_json["stream_options"]["include_usage"], true);
    assert_eq!(
        sent.headers["content-length"],
        sent.body.len().to_string().as_str()
    );
    assert_eq!(sent.headers["accept-encoding"], "identity");
    let s = h.one_span().await;
    assert_eq!(s["tokens_estimated"], 0);
    assert_eq!(s["output_tokens"], 9);
    assert_eq!(s["input_tokens"], MOCK_PROMPT_TOKENS);
    // The span keeps the client's request as the client sent it.
    assert_eq!(s["request_body"].as_str().unwrap(), body);

    // A request that already asks for usage, or does not stream, is untouched.
    for b in [chat_body(true, true), chat_body(false, false)] {
        let direct = post(&c, &h.direct("/v1/chat/completions"), &[], &b).await;
        let via = post(&c, &h.url("/v1/chat/completions"), &[], &b).await;
        assert_eq!(via.body, direct.body);
        assert_eq!(&h.mock.state.last_request().unwrap().body[..], b.as_bytes());
    }
}

#[tokio::test]
async fn metrics_count_requests_tokens_and_the_writer() {
    let h = Harness::start().await;
    let c = client();
    for _ in 0..3 {
        post(
            &c,
            &h.url("/v1/chat/completions"),
            &[("x-mock-words", "5")],
            &chat_body(false, false),
        )
        .await;
    }
    post(
        &c,
        &h.url("/v1/chat/completions"),
        &[("x-mock-scenario", "error:429")],
        &chat_body(false, false),
    )
    .await;
    h.spans(4).await;
    let got = send(
        &c,
        request(Method::GET, &format!("http://{}/metrics", h.admin), &[], ""),
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert!(got.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(got.body.to_vec()).unwrap();
    let series = "gen_ai_provider_name=\"openai\",gen_ai_request_model=\"gpt-4o-mini\",llmtap_operation_type=\"llm_call\"";
    assert!(
        text.contains(&format!(
            "llmtap_requests_total{{{series},status=\"completed\"}} 3"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "llmtap_requests_total{{{series},status=\"failed\"}} 1"
        )),
        "{text}"
    );
    // Output tokens: three observations of 5, all in the le="16" bucket.
    assert!(
        text.contains(&format!(
            "gen_ai_client_token_usage_bucket{{{series},gen_ai_token_type=\"output\",le=\"16\"}} 3"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "gen_ai_client_token_usage_sum{{{series},gen_ai_token_type=\"output\"}} 15"
        )),
        "{text}"
    );
    assert!(text.contains("llmtap_spans_written_total 4"), "{text}");
    assert!(text.contains("llmtap_spans_dropped_total 0"));
    // llmtap's own time: one observation per exchange, each well under the
    // top bucket (0.1 s) on any machine that runs these tests.
    assert!(
        text.contains("llmtap_added_latency_seconds_count 4"),
        "{text}"
    );
    assert!(
        text.contains("llmtap_added_latency_seconds_bucket{le=\"0.1\"} 4"),
        "{text}"
    );
    // Every sample line is `name{labels} value` with a numeric value.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
}
