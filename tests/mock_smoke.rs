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
