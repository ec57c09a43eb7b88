//! Hostile input, end to end: requests (huge headers and bodies, invalid
//! UTF-8 and JSON, JSON nested 100,000 deep, slowloris, HTTP/2 floods),
//! upstream responses (garbage SSE, gzip and zstd bombs, an endless line,
//! deeply nested JSON), CORS, and attempts to make llmtap connect anywhere
//! but a configured upstream (SSRF / open proxy).
//!
//! Bounded memory is shown through counters, never timing: what the
//! observer decoded (the capture's truncation count), what reached the
//! upstream, the connection gauges back to 0.

mod common;
mod mock;
mod raw;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{chat_body, client, post, request, send, Harness};
use http::{Method, Request, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use raw::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn started(tweak: impl FnOnce(&mut llmtap::config::Config)) -> Harness {
    Harness::start_with(|c| {
        quick_pool(c);
        tweak(c);
    })
    .await
}

// === Requests ===

#[tokio::test]
async fn huge_request_headers_get_431_and_nothing_is_forwarded() {
    let h = started(|_| {}).await;
    let big = "a".repeat(100 * 1024);
    let req =
        format!("GET /v1/models HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\nconnection: close\r\n\r\n");
    let resp = raw_exchange(h.addr, req.as_bytes()).await;
    assert_eq!(status_of(&resp), 431, "{}", String::from_utf8_lossy(&resp));
    // Many small headers adding up past the limit: the same.
    let many: String = (0..3000)
        .map(|i| format!("x-h{i}: {}\r\n", "b".repeat(30)))
        .collect();
    let req = format!("GET /v1/models HTTP/1.1\r\nhost: x\r\n{many}connection: close\r\n\r\n");
    let resp = raw_exchange(h.addr, req.as_bytes()).await;
    assert_eq!(status_of(&resp), 431);
    assert_eq!(h.mock.state.request_count(), 0);
    // HTTP/2: the header list is over SETTINGS_MAX_HEADER_LIST_SIZE; the
    // stream is refused (or answered 431), never forwarded.
    let c = common::h2_client();
    let req = request(Method::GET, &h.url("/v1/models"), &[("x-big", &big)], "");
    if let Ok(resp) = c.request(req).await {
        assert!(resp.status().is_client_error(), "{}", resp.status());
    }
    drop(c);
    assert_eq!(h.mock.state.request_count(), 0);
    // And llmtap is fine.
    let got = send(
        &client(),
        request(Method::GET, &h.url("/v1/models"), &[], ""),
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_nothing_leaked(&h).await;
}

#[tokio::test]
async fn declared_body_over_the_limit_gets_413_before_the_upstream() {
    let h = started(|c| c.limits.max_body_bytes = 1 << 20).await;
    let body = "x".repeat((1 << 20) + 1);
    let got = post(&client(), &h.url("/v1/chat/completions"), &[], &body).await;
    assert_eq!(got.status, StatusCode::PAYLOAD_TOO_LARGE);
    let v = got.json();
    assert_eq!(v["error"]["code"], "request_too_large");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(
        h.mock.state.request_count(),
        0,
        "the upstream was contacted"
    );
    let s = h.one_span().await;
    assert_eq!(s["status"], "failed");
    assert_eq!(s["error_type"], "request_too_large");
    assert_eq!(s["http_status"], 413);
    assert_eq!(metric(&h, "llmtap_request_body_too_large_total").await, 1.0);
    // Exactly at the limit passes (the mock answers 400: not JSON).
    let body = "x".repeat(1 << 20);
    let got = post(&client(), &h.url("/v1/chat/completions"), &[], &body).await;
    assert_eq!(got.status, StatusCode::BAD_REQUEST);
    assert_eq!(h.mock.state.last_request().unwrap().body.len(), 1 << 20);
    assert_nothing_leaked(&h).await;
}

/// A body of `left` bytes in 64 KiB frames with no declared length (sent
/// chunked).
struct Chunks {
    left: usize,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(64 * 1024);
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'y'; n])))))
    }
    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[tokio::test]
async fn chunked_body_growing_past_the_limit_is_cut() {
    let h = started(|c| c.limits.max_body_bytes = 1 << 20).await;
    let c: Client<_, Chunks> = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(h.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(Chunks { left: 8 << 20 })
        .unwrap();
    // llmtap answers 413, or the connection is closed under the upload.
    match tokio::time::timeout(Duration::from_secs(20), c.request(req))
        .await
        .expect("no answer in 20 s")
    {
        Ok(resp) => assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE),
        Err(e) => eprintln!("upload cut: {e}"),
    }
    drop(c);
    let s = h.one_span().await;
    assert_eq!(s["status"], "failed");
    assert_eq!(s["error_type"], "request_too_large");
    assert_eq!(metric(&h, "llmtap_request_body_too_large_total").await, 1.0);
    // The mock never got a whole body of more than the limit.
    if let Some(r) = h.mock.state.last_request() {
        assert!(r.body.len() <= 1 << 20, "{}", r.body.len());
    }
    assert_nothing_leaked(&h).await;
}

/// Sends `body` to the chat endpoint; the mock must receive exactly it.
async fn forwarded_untouched(h: &Harness, body: Vec<u8>) -> common::Got {
    let got = send(
        &client(),
        request(
            Method::POST,
            &h.url("/v1/chat/completions"),
            &[("content-type", "application/json")],
            body.clone(),
        ),
    )
    .await;
    let seen = h.mock.state.last_request().expect("not forwarded");
    assert!(seen.body == body, "the body was changed on the way");
    got
}

#[tokio::test]
async fn invalid_utf8_invalid_json_and_deep_json_are_forwarded_untouched() {
    let h = started(|_| {}).await;
    let mut invalid_utf8 =
        br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":""#.to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe, 0xc3, 0x28, 0xa0, 0xa1]);
    invalid_utf8.extend_from_slice(br#""}]}"#);
    let invalid_json = br#"{"model":"gpt-4o-mini","messages":[{"role":"user",,,"#.to_vec();
    let depth = 100_000;
    let mut deep = br#"{"model":"gpt-4o-mini","messages":"#.to_vec();
    deep.extend(std::iter::repeat_n(b'[', depth));
    deep.extend(std::iter::repeat_n(b']', depth));
    deep.push(b'}');
    let mut deep_objects = Vec::new();
    for _ in 0..depth {
        deep_objects.extend_from_slice(br#"{"a":"#);
    }
    deep_objects.extend_from_slice(b"1");
    deep_objects.extend(std::iter::repeat_n(b'}', depth));
    let bodies = [invalid_utf8, invalid_json, deep, deep_objects];
    for body in &bodies {
        let got = forwarded_untouched(&h, body.clone()).await;
        // The provider decides: the mock answers 400 to what it cannot parse.
        assert_eq!(got.status, StatusCode::BAD_REQUEST);
    }
    let spans = h.spans(bodies.len()).await;
    assert_eq!(spans.len(), bodies.len());
    for s in &spans {
        assert_eq!(s["http_status"], 400);
        assert_eq!(s["status"], "failed");
    }
    assert_nothing_leaked(&h).await;
}

#[tokio::test]
async fn deep_json_and_garbage_from_the_upstream_reach_the_client_untouched() {
    let depth = 100_000;
    let mut deep = Vec::new();
    deep.extend(std::iter::repeat_n(b'[', depth));
    deep.extend(std::iter::repeat_n(b']', depth));
    let mut garbage = Vec::with_capacity(2 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while garbage.len() < 2 << 20 {
        x ^= x << 7;
        x ^= x >> 9;
        // Bytes of every kind, with SSE's own markers mixed in.
        match x % 11 {
            0 => garbage.extend_from_slice(b"\ndata: "),
            1 => garbage.extend_from_slice(b"\r\n\r\n"),
            2 => garbage.extend_from_slice(b"data: {\"choices\":[{\"delta\":"),
            3 => garbage.push(0),
            _ => garbage.push((x >> 24) as u8),
        }
    }
    // An endless line: 20 MB without a newline.
    let endless = {
        let mut v = b"data: ".to_vec();
        v.extend(std::iter::repeat_n(
            b'a',
            if full() { 200 << 20 } else { 20 << 20 },
        ));
        v
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("application/json", deep.clone()),
        ("text/event-stream", {
            let mut v = b"data: ".to_vec();
            v.extend_from_slice(&deep);
            v.extend_from_slice(b"\n\n");
            v
        }),
        ("text/event-stream", garbage),
        ("text/event-stream", endless),
    ];
    let cases = Arc::new(cases);
    let served = Arc::clone(&cases);
    let up = RawUpstream::start(move |mut s: TcpStream| {
        let served = Arc::clone(&served);
        async move {
            while let Some((head, _)) = read_request(&mut s).await {
                let i: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("x-case: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                let (ct, body) = &served[i];
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {ct}\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                if s.write_all(head.as_bytes()).await.is_err() || s.write_all(body).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let url = up.url();
    let h = started(|c| add_route(c, "/raw", &url, None, None)).await;
    let c = client();
    for (i, (_, body)) in cases.iter().enumerate() {
        let got = send(
            &c,
            request(
                Method::POST,
                &h.url("/raw/v1/chat/completions"),
                &[
                    ("content-type", "application/json"),
                    ("x-case", &i.to_string()),
                ],
                chat_body(i > 0, false),
            ),
        )
        .await;
        assert_eq!(got.status, StatusCode::OK);
        assert!(got.body == *body, "case {i}: bytes differ");
    }
    drop(c);
    let spans = h.spans(cases.len()).await;
    assert_eq!(spans.len(), cases.len());
    for s in &spans {
        assert_eq!(s["http_status"], 200);
        // What was captured is capped whatever came: 64 KiB of the body,
        // stored as text (an invalid byte becomes U+FFFD, 3 bytes).
        let captured = s["response_body"].as_str().unwrap_or("");
        assert!(captured.len() < 3 * 64 * 1024 + 100, "{}", captured.len());
    }
    assert_nothing_leaked(&h).await;
}

/// `n` bytes of zeros compressed by `member`, as many concatenated gzip
/// members / zstd frames (both formats allow it), without compressing `n`
/// bytes here.
fn bomb(n: usize, member: impl Fn(&[u8]) -> Vec<u8>) -> Vec<u8> {
    let one = member(&vec![0u8; 1 << 20]);
    let mut out = Vec::with_capacity(one.len() * (n >> 20));
    for _ in 0..(n >> 20) {
        out.extend_from_slice(&one);
    }
    out
}

#[tokio::test]
async fn gzip_and_zstd_bombs_pass_untouched_and_decoding_is_capped() {
    use std::io::Write;
    // The observer decodes at most 256 MiB of a body (observe.rs).
    let cap: usize = 256 << 20;
    let n = if full() { 4 << 30 } else { 300 << 20 };
    let gz = bomb(n, |plain| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(plain).unwrap();
        e.finish().unwrap()
    });
    let zs = bomb(n, |plain| zstd::stream::encode_all(plain, 19).unwrap());
    let cases = Arc::new(vec![("gzip", gz), ("zstd", zs)]);
    let served = Arc::clone(&cases);
    let up = RawUpstream::start(move |mut s: TcpStream| {
        let served = Arc::clone(&served);
        async move {
            while let Some((head, _)) = read_request(&mut s).await {
                let i = usize::from(head.contains("x-case: 1"));
                let (enc, body) = &served[i];
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: {enc}\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                if s.write_all(head.as_bytes()).await.is_err() || s.write_all(body).await.is_err() {
                    return;
                }
            }
        }
    })
    .await;
    let url = up.url();
    let h = started(|c| add_route(c, "/bomb", &url, None, None)).await;
    let c = client();
    for (i, (enc, body)) in cases.iter().enumerate() {
        let got = send(
            &c,
            request(
                Method::POST,
                &h.url("/bomb/v1/chat/completions"),
                &[
                    ("content-type", "application/json"),
                    ("accept-encoding", enc),
                    ("x-case", &i.to_string()),
                ],
                chat_body(false, false),
            ),
        )
        .await;
        assert_eq!(got.status, StatusCode::OK);
        assert_eq!(got.headers["content-encoding"], *enc);
        assert!(got.body == *body, "{enc}: compressed bytes differ");
        eprintln!(
            "{enc} bomb: {} bytes on the wire, expanding to {n}",
            body.len()
        );
    }
    drop(c);
    let spans = h.spans(2).await;
    for s in &spans {
        assert_eq!(s["http_status"], 200);
        // The capture says how much the observer decoded before giving up:
        // "…[truncated N bytes]" with 64 KiB kept.
        let captured = s["response_body"].as_str().unwrap();
        let n_trunc: usize = captured
            .rsplit("[truncated ")
            .next()
            .and_then(|t| t.strip_suffix(" bytes]"))
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no truncation marker: …{}",
                    &captured[captured.len() - 60..]
                )
            });
        let decoded = n_trunc + 64 * 1024;
        eprintln!("observer decoded {decoded} bytes of {n}");
        assert!(decoded <= cap, "decoded {decoded} > cap {cap}");
        assert!(decoded < n);
    }
    assert_nothing_leaked(&h).await;
}

#[tokio::test]
async fn slowloris_connections_are_closed_and_do_not_block_others() {
    let h = started(|c| c.limits.header_read_timeout_ms = 500).await;
    let slow = if full() { 200 } else { 20 };
    let mut conns = Vec::new();
    for _ in 0..slow {
        let mut s = TcpStream::connect(h.addr).await.unwrap();
        s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        conns.push(s);
    }
    // Trickle a header byte now and then; meanwhile normal requests work.
    let trickle = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut closed = vec![false; conns.len()];
        while closed.iter().any(|c| !c) {
            assert!(
                Instant::now() < deadline,
                "slow connections still open after 10 s"
            );
            for (i, s) in conns.iter_mut().enumerate() {
                if closed[i] {
                    continue;
                }
                if s.write_all(b"x").await.is_err() {
                    closed[i] = true;
                    continue;
                }
                let mut buf = [0u8; 256];
                if let Ok(r) =
                    tokio::time::timeout(Duration::from_millis(5), s.read(&mut buf)).await
                {
                    // Closed (0 or an error), or a 408 before closing.
                    if matches!(r, Ok(0) | Err(_)) {
                        closed[i] = true;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let c = client();
    for _ in 0..5 {
        let got = send(&c, request(Method::GET, &h.url("/v1/models"), &[], "")).await;
        assert_eq!(got.status, StatusCode::OK);
    }
    drop(c);
    trickle.await.unwrap();
    assert_eq!(h.mock.state.request_count(), 5);
    assert_nothing_leaked(&h).await;
}

/// The listener picks HTTP/1 or HTTP/2 by peeking at a connection's first
/// bytes. A client that sends nothing is closed after the head timeout;
/// one whose first bytes arrive piecemeal gets the protocol it speaks,
/// with none of its bytes lost to the peek.
#[tokio::test]
async fn the_first_bytes_pick_the_protocol_however_they_arrive() {
    let h = started(|c| c.limits.header_read_timeout_ms = 500).await;
    // Silent: closed after the timeout, without a response.
    let mut silent = TcpStream::connect(h.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("a silent connection is still open after 10 s");
    assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    // HTTP/1 whose first byte ("P", as the HTTP/2 preface begins) comes
    // alone: answered as HTTP/1, the byte included.
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(b"P").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let body = chat_body(false, false);
    let rest = format!(
        "OST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(rest.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut resp))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status_of(&resp), 200, "{}", String::from_utf8_lossy(&resp));
    // The HTTP/2 preface split in two: llmtap answers with its SETTINGS
    // frame (an HTTP/1 codec would answer 400).
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(&preface[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.write_all(&preface[10..]).await.unwrap();
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    s.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head[3], 4, "not an HTTP/2 SETTINGS frame: {head:?}");
    drop(s);
    drop(silent);
    assert_eq!(h.mock.state.request_count(), 1);
    assert_nothing_leaked(&h).await;
}

#[tokio::test]
async fn h2_many_streams_and_rapid_resets_leave_nothing_behind() {
    let h = started(|c| c.limits.h2_max_concurrent_streams = 16).await;
    let tcp = TcpStream::connect(h.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn_task = tokio::spawn(conn);
    // 1. Many streams at once on one connection. Streams opened before the
    // client has the server's SETTINGS past the 16th are refused
    // (REFUSED_STREAM, safe to retry); after them, the client holds the
    // rest back and all are answered.
    let mut first = client.clone().ready().await.unwrap();
    let (resp, _) = first
        .send_request(Request::get("http://x/v1/models").body(()).unwrap(), true)
        .unwrap();
    assert_eq!(resp.await.unwrap().status(), StatusCode::OK);
    let streams = if full() { 5_000 } else { 500 };
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..streams {
        let mut c = client.clone();
        tasks.spawn(async move {
            c = c.ready().await?;
            let req = Request::get("http://x/v1/models").body(()).unwrap();
            let (resp, _) = c.send_request(req, true)?;
            let resp = resp.await?;
            let mut body = resp.into_body();
            while let Some(d) = body.data().await {
                let d = d?;
                let _ = body.flow_control().release_capacity(d.len());
            }
            Ok::<_, h2::Error>(())
        });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok(()) => ok += 1,
            Err(e) => eprintln!("stream: {e}"),
        }
    }
    assert_eq!(ok, streams);
    // 2. Rapid reset: open streams and cancel them at once (CVE-2023-44487).
    let resets = if full() { 100_000 } else { 5_000 };
    let mut sent = 0;
    let mut next = Some(client.clone());
    for _ in 0..resets {
        let Some(c0) = next.take() else { break };
        let mut c = match c0.ready().await {
            Ok(c) => c,
            Err(_) => break, // GOAWAY: the guard closed the connection.
        };
        let req = Request::post("http://x/v1/chat/completions")
            .header("x-mock-delay-ms", "50")
            .body(())
            .unwrap();
        match c.send_request(req, false) {
            Ok((resp, mut stream)) => {
                stream.send_reset(h2::Reason::CANCEL);
                drop(resp);
                sent += 1;
            }
            Err(_) => break,
        }
        next = Some(c);
    }
    drop(next);
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(10), conn_task).await;
    let forwarded = h.mock.state.request_count();
    eprintln!("h2: {streams} streams answered; {sent} streams reset, {} requests reached the upstream in all", forwarded);
    // A fresh connection is served normally.
    let got = send(
        &common::h2_client(),
        request(Method::GET, &h.url("/v1/models"), &[], ""),
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_nothing_leaked(&h).await;
}

// === CORS ===

#[tokio::test]
async fn cors_is_closed_on_the_admin_listener_and_untouched_on_the_proxy() {
    let up = RawUpstream::start(|mut s: TcpStream| async move {
        while read_request(&mut s).await.is_some() {
            let body = r#"{"object":"list","data":[]}"#;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\naccess-control-allow-origin: https://app.example\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            if s.write_all(head.as_bytes()).await.is_err() {
                return;
            }
        }
    })
    .await;
    let url = up.url();
    let h = started(|c| add_route(c, "/cors", &url, None, None)).await;
    let c = client();
    let origin = ("origin", "https://evil.example");
    let admin = |p: &str| format!("http://{}{p}", h.admin);
    for path in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/traces",
        "/api/live",
        "/nope",
    ] {
        for method in [Method::GET, Method::OPTIONS] {
            let got = send(
                &c,
                request(
                    method.clone(),
                    &admin(path),
                    &[
                        origin,
                        ("access-control-request-method", "GET"),
                        ("access-control-request-headers", "authorization"),
                    ],
                    "",
                ),
            )
            .await;
            let cors: Vec<&str> = got
                .headers
                .keys()
                .map(|k| k.as_str())
                .filter(|k| k.starts_with("access-control-"))
                .collect();
            assert!(cors.is_empty(), "{method} {path}: {cors:?}");
        }
    }
    // The proxy adds none of its own (the mock sends none)...
    for method in [Method::GET, Method::OPTIONS] {
        let got = send(&c, request(method, &h.url("/v1/models"), &[origin], "")).await;
        assert!(
            !got.headers
                .keys()
                .any(|k| k.as_str().starts_with("access-control-")),
            "{:?}",
            got.headers
        );
    }
    // ...and passes the upstream's untouched.
    let got = send(
        &c,
        request(Method::GET, &h.url("/cors/v1/models"), &[origin], ""),
    )
    .await;
    assert_eq!(
        got.headers["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(
        got.headers
            .get_all("access-control-allow-origin")
            .iter()
            .count(),
        1
    );
    drop(c);
    assert_nothing_leaked(&h).await;
}

// === SSRF / open proxy ===

#[tokio::test]
async fn no_header_uri_or_path_makes_llmtap_connect_elsewhere() {
    // The canary counts every connection it gets: it must get none.
    let canary = RawUpstream::start(|mut s: TcpStream| async move {
        let _ = read_request(&mut s).await;
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\ncanary")
            .await;
    })
    .await;
    let h = started(|_| {}).await;
    let evil = canary.addr.to_string();
    let c = client();
    // Steering headers: the request still goes to the configured upstream.
    let forwarded_for = format!("for=1.2.3.4;host={evil}");
    let headers: Vec<Vec<(&str, &str)>> = vec![
        vec![("host", evil.as_str())],
        vec![("x-forwarded-host", evil.as_str())],
        vec![("x-forwarded-for", "127.0.0.1")],
        vec![("forwarded", forwarded_for.as_str())],
        vec![("x-forwarded-proto", "http"), ("x-forwarded-port", "1")],
        vec![
            ("x-original-url", "http://evil.example/"),
            ("x-rewrite-url", "/x"),
        ],
    ];
    for hs in &headers {
        let got = send(&c, request(Method::GET, &h.url("/v1/models"), hs, "")).await;
        assert_eq!(got.status, StatusCode::OK, "{hs:?}");
        assert_ne!(&got.body[..], b"canary");
    }
    let mut expected = headers.len();
    assert_eq!(h.mock.state.request_count(), expected);
    // Absolute-form target naming the canary: only the path counts.
    let req = format!(
        "GET http://{evil}/v1/models HTTP/1.1\r\nhost: {evil}\r\nconnection: close\r\n\r\n"
    );
    let resp = raw_exchange(h.addr, req.as_bytes()).await;
    assert_eq!(status_of(&resp), 200);
    assert!(!String::from_utf8_lossy(&resp).contains("canary"));
    expected += 1;
    assert_eq!(h.mock.state.request_count(), expected);
    // CONNECT, and paths that try to leave the route: no route, 404 (or
    // 400 from the HTTP parser), nothing forwarded anywhere.
    for target in [
        format!("CONNECT {evil} HTTP/1.1\r\nhost: {evil}\r\nconnection: close\r\n\r\n"),
        format!("GET //{evil}/v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
        "GET /%2e%2e/v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_string(),
        "GET /admin/../v1x HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_string(),
        format!("GET @{evil}/v1/models HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"),
    ] {
        let resp = raw_exchange(h.addr, target.as_bytes()).await;
        let status = status_of(&resp);
        assert!(matches!(status, 400 | 404 | 0), "{target:?}: {status}");
    }
    assert_eq!(h.mock.state.request_count(), expected);
    // `/v1/../admin` matches the /v1 route: it goes (unnormalized, as sent)
    // to the configured upstream and nowhere else.
    let resp = raw_exchange(
        h.addr,
        b"GET /v1/../admin HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&resp), 404);
    expected += 1;
    assert_eq!(h.mock.state.request_count(), expected);
    assert_eq!(
        h.mock.state.last_request().unwrap().uri.path(),
        "/v1/../admin"
    );
    // HTTP/2 with an :authority naming the canary.
    let tcp = TcpStream::connect(h.addr).await.unwrap();
    let (client2, conn) = h2::client::handshake(tcp).await.unwrap();
    let conn_task = tokio::spawn(conn);
    let mut c2 = client2.clone().ready().await.unwrap();
    let req = Request::get(format!("http://{evil}/v1/models"))
        .body(())
        .unwrap();
    let (resp, _) = c2.send_request(req, true).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut got = Vec::new();
    while let Some(d) = body.data().await {
        got.extend_from_slice(&d.unwrap());
    }
    assert_ne!(&got[..], b"canary");
    drop((c2, client2, body));
    let _ = tokio::time::timeout(Duration::from_secs(5), conn_task).await;
    expected += 1;
    assert_eq!(h.mock.state.request_count(), expected);
    drop(c);
    assert_eq!(
        canary.accepted(),
        0,
        "llmtap connected to a host no route names"
    );
    assert_nothing_leaked(&h).await;
}
