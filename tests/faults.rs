//! Upstream faults, end to end: a real `run` in front of hand-written
//! upstreams on loopback (refused, not TLS, unknown host, stalls, a reset, a
//! 10 MB body, a slow reader). Each test checks what the client gets, the
//! span, and that no connection or request is left open afterwards
//! (`llmtap_open_connections`, `llmtap_inflight_requests`,
//! `llmtap_upstream_connections` all back to 0).
//!
//! `LLMTAP_FAULTS_FULL=1` (scripts/faults.sh --full) makes the stalls longer
//! and the bodies bigger.

mod common;
mod mock;
mod raw;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{chat_body, client, request, Harness};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use raw::*;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A response read as far as it goes: the status, the body bytes received,
/// and the body error if it did not end cleanly.
struct Partial {
    status: StatusCode,
    body: Vec<u8>,
    error: Option<String>,
}

async fn fetch(url: &str, body: &str) -> Partial {
    let c = client();
    let req = request(
        Method::POST,
        url,
        &[("content-type", "application/json")],
        body.to_string(),
    );
    let resp = tokio::time::timeout(Duration::from_secs(30), c.request(req))
        .await
        .expect("no response head in 30 s")
        .expect("request failed");
    let status = resp.status();
    let mut b = resp.into_body();
    let mut got = Vec::new();
    let mut error = None;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), b.frame()).await {
            Err(_) => panic!("body stalled for 30 s"),
            Ok(None) => break,
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    got.extend_from_slice(&d);
                }
            }
            Ok(Some(Err(e))) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    Partial {
        status,
        body: got,
        error,
    }
}

fn error_code(p: &Partial) -> String {
    let v: Value = serde_json::from_slice(&p.body).expect("an OpenAI-style JSON error");
    assert!(v["error"]["message"].is_string(), "{v}");
    v["error"]["code"].as_str().unwrap().to_string()
}

async fn started(tweak: impl FnOnce(&mut llmtap::config::Config)) -> Harness {
    Harness::start_with(|c| {
        quick_pool(c);
        tweak(c);
    })
    .await
}

#[tokio::test]
async fn connection_refused_is_502_unreachable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let h =
        started(|c| add_route(c, "/dead", &format!("http://127.0.0.1:{port}"), None, None)).await;
    let p = fetch(
        &h.url("/dead/v1/chat/completions"),
        &chat_body(false, false),
    )
    .await;
    assert_eq!(p.status, StatusCode::BAD_GATEWAY);
    assert_eq!(error_code(&p), "upstream_unreachable");
    let s = h.one_span().await;
    assert_eq!(s["status"], "failed");
    assert_eq!(s["error_type"], "upstream_unreachable");
    assert_eq!(s["http_status"], 502);
    assert_nothing_leaked(&h).await;
}

#[tokio::test]
async fn tls_to_a_plain_tcp_server_is_502_tls_error() {
    // Answers the TLS ClientHello with plain HTTP.
    let up = RawUpstream::start(|mut s: TcpStream| async move {
        let mut buf = [0u8; 1024];
        let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
        let _ = s
            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await;
    })
    .await;
    let url = format!("https://{}", up.addr);
    let h = started(|c| add_route(c, "/tls", &url, None, None)).await;
    let p = fetch(&h.url("/tls/v1/chat/completions"), &chat_body(false, false)).await;
    assert_eq!(p.status, StatusCode::BAD_GATEWAY);
    assert_eq!(error_code(&p), "upstream_tls_error");
    let s = h.one_span().await;
    assert_eq!(s["status"], "failed");
    assert_eq!(s["error_type"], "upstream_tls_error");
    assert_eq!(s["http_status"], 502);
    assert_eq!(up.accepted(), 1);
    assert_nothing_leaked(&h).await;
}

/// A self-signed certificate for `localhost` / 127.0.0.1 (P-256, valid
/// until 2126), made once with openssl for this test: no CA trusts it.
const SELF_SIGNED_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBmzCCAUGgAwIBAgIUDuigVi2ZM6VH4FSzyBU5bvQSit0wCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyNDEzNDcxMFoYDzIxMjYxMDMx
MTM0NzEwWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAQ3TcOaOjA5A0gki0kRnSo2Nu4lceeiyz3ArarIgN+0NxslBx+VYmSo
9jf0qeJOk62Cmw/RJj5gIf1IfulnrCtCo28wbTAdBgNVHQ4EFgQU8a+kTFXCGjEq
is0RoMPAiVjqUx0wHwYDVR0jBBgwFoAU8a+kTFXCGjEqis0RoMPAiVjqUx0wDwYD
VR0TAQH/BAUwAwEB/zAaBgNVHREEEzARgglsb2NhbGhvc3SHBH8AAAEwCgYIKoZI
zj0EAwIDSAAwRQIhAJ2T5qdLHXqCyiUCbGd6xtye5raAFTSb64wRai3tvbXEAiBD
FPr1yYap8BzdB+Sbl860UQrUWOhopTcLQT19ZSjYGQ==
-----END CERTIFICATE-----
";
/// Its key (PKCS#8). A throwaway test key; it protects nothing.
const SELF_SIGNED_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgaVG0F6srr7n2uD+G
uHNvNkGV2HbbpeATpiLvGcRSuPehRANCAAQ3TcOaOjA5A0gki0kRnSo2Nu4lceei
yz3ArarIgN+0NxslBx+VYmSo9jf0qeJOk62Cmw/RJj5gIf1IfulnrCtC
-----END PRIVATE KEY-----
";

#[tokio::test]
async fn tls_to_a_self_signed_server_is_502_tls_error() {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let cert = CertificateDer::from_pem_slice(SELF_SIGNED_CERT.as_bytes()).unwrap();
    let key = PrivateKeyDer::from_pem_slice(SELF_SIGNED_KEY.as_bytes()).unwrap();
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let handshakes = Arc::new(AtomicUsize::new(0));
    let done = Arc::clone(&handshakes);
    let up = RawUpstream::start(move |s: TcpStream| {
        let (acceptor, done) = (acceptor.clone(), Arc::clone(&done));
        async move {
            // The handshake fails on the client's side (unknown issuer).
            if acceptor.accept(s).await.is_ok() {
                done.fetch_add(1, Ordering::SeqCst);
            }
        }
    })
    .await;
    let url = format!("https://{}", up.addr);
    let h = started(|c| add_route(c, "/selfsigned", &url, None, None)).await;
    let p = fetch(
        &h.url("/selfsigned/v1/chat/completions"),
        &chat_body(false, false),
    )
    .await;
    assert_eq!(p.status, StatusCode::BAD_GATEWAY);
    assert_eq!(error_code(&p), "upstream_tls_error");
    let msg = String::from_utf8_lossy(&p.body).to_string();
    assert!(msg.to_lowercase().contains("certificate"), "{msg}");
    let s = h.one_span().await;
    assert_eq!(s["status"], "failed");
    assert_eq!(s["error_type"], "upstream_tls_error");
    assert_eq!(s["http_status"], 502);
    assert_eq!(up.accepted(), 1);
    assert_eq!(handshakes.load(Ordering::SeqCst), 0);
    assert_nothing_leaked(&h).await;
}

#[tokio::test]
async fn unknown_host_is_502_unreachable() {
    // `.invalid` never resolves (RFC 6761). Where no resolver answers at
    // all, the first-byte timeout answers instead (504).
    let h = started(|c| {
        add_route(
            c,
            "/nxdomain",
            "https://llmtap-fault-test.invalid",
            Some(8_000),
            None,
        )
    })
    .await;
    let p = fetch(
        &h.url("/nxdomain/v1/chat/completions"),
        &chat_body(false, false),
    )
    .await;
    let code = error_code(&p);
    let s = h.one_span().await;
    assert_eq!(s["status"], "failed");
    match p.status {
        StatusCode::BAD_GATEWAY => {
            assert_eq!(code, "upstream_unreachable");
            assert_eq!(s["error_type"], "upstream_unreachable");
        }
        StatusCode::GATEWAY_TIMEOUT => assert_eq!(s["error_type"], "upstream_timeout"),
        other => panic!("unexpected status {other}"),
    }
    assert_nothing_leaked(&h).await;
}

#[tokio::test]
async fn stall_before_headers_is_504_timeout() {
    let stall = if full() { 5_000 } else { 400 };
    // Reads the request, then says nothing (until the test ends).
    let up = RawUpstream::start(|mut s: TcpStream| async move {
        let _ = read_request(&mut s).await;
        tokio::time::sleep(Duration::from_secs(120)).await;
    })
    .await;
    let url = up.url();
    let h = started(|c| add_route(c, "/stall", &url, Some(stall), None)).await;
    let t = Instant::now();
    let p = fetch(
        &h.url("/stall/v1/chat/completions"),
        &chat_body(false, false),
    )
    .await;
    assert_eq!(p.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(error_code(&p), "upstream_timeout");
    assert!(t.elapsed() >= Duration::from_millis(stall));
    let s = h.one_span().await;
    assert_eq!(s["status"], "failed");
    assert_eq!(s["error_type"], "upstream_timeout");
    assert_eq!(s["http_status"], 504);
    // The stalled upstream connection was closed, not pooled.
    assert_nothing_leaked(&h).await;
}

/// Sends a streamed chat head and two content events, then `then`.
async fn two_events(s: &mut TcpStream) -> bool {
    if read_request(s).await.is_none() {
        return false;
    }
    let mut out = chunked_head("text/event-stream", "");
    out.extend(chunk(&chat_event("Hello")));
    out.extend(chunk(&chat_event(" world")));
    s.write_all(&out).await.is_ok()
}

#[tokio::test]
async fn stall_mid_stream_is_cut_by_the_idle_timeout() {
    let idle = if full() { 3_000 } else { 300 };
    let up = RawUpstream::start(|mut s: TcpStream| async move {
        if two_events(&mut s).await {
            tokio::time::sleep(Duration::from_secs(120)).await;
        }
    })
    .await;
    let url = up.url();
    let h = started(|c| add_route(c, "/idle", &url, None, Some(idle))).await;
    let p = fetch(&h.url("/idle/v1/chat/completions"), &chat_body(true, false)).await;
    assert_eq!(p.status, StatusCode::OK);
    // The client sees the events that came, then an error: never a clean end.
    let text = String::from_utf8_lossy(&p.body);
    assert!(text.contains("Hello") && text.contains(" world"), "{text}");
    assert!(p.error.is_some(), "the cut stream ended cleanly");
    let s = h.one_span().await;
    assert_eq!(s["status"], "failed");
    assert_eq!(s["error_type"], "idle_timeout");
    assert_eq!(s["http_status"], 200);
    assert!(
        s["error_message"]
            .as_str()
            .unwrap()
            .contains(&format!("{idle} ms")),
        "{s}"
    );
    // Tokens seen before the cut are kept (estimated: no usage came).
    assert!(s["output_tokens"].as_i64().unwrap_or(0) >= 2, "{s}");
    assert_eq!(s["tokens_estimated"], 1);
    assert_eq!(metric(&h, "llmtap_idle_timeouts_total").await, 1.0);
    assert_nothing_leaked(&h).await;
}

#[tokio::test]
async fn a_slow_but_steady_stream_is_not_cut() {
    // Frames 150 ms apart with a 400 ms idle timeout, for longer in total
    // than the idle timeout: only silence counts, never total duration.
    let up = RawUpstream::start(|mut s: TcpStream| async move {
        if !two_events(&mut s).await {
            return;
        }
        for i in 0..8 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            if s.write_all(&chunk(&chat_event(&format!(" w{i}"))))
                .await
                .is_err()
            {
                return;
            }
        }
        let _ = s.write_all(&chunk(b"data: [DONE]\n\n")).await;
        let _ = s.write_all(b"0\r\n\r\n").await;
    })
    .await;
    let url = up.url();
    let h = started(|c| add_route(c, "/steady", &url, None, Some(400))).await;
    let p = fetch(
        &h.url("/steady/v1/chat/completions"),
        &chat_body(true, false),
    )
    .await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.error.is_none(), "{:?}", p.error);
    assert!(String::from_utf8_lossy(&p.body).ends_with("data: [DONE]\n\n"));
    let s = h.one_span().await;
    assert_ne!(s["error_type"], "idle_timeout", "{s}");
    assert_eq!(metric(&h, "llmtap_idle_timeouts_total").await, 0.0);
    assert_nothing_leaked(&h).await;
}

#[tokio::test]
async fn reset_mid_stream_is_cut_and_failed() {
    let up = RawUpstream::start(|mut s: TcpStream| async move {
        if two_events(&mut s).await {
            tokio::time::sleep(Duration::from_millis(50)).await;
            // RST instead of FIN.
            let _ = s.set_zero_linger();
            drop(s);
        }
    })
    .await;
    let url = up.url();
    let h = started(|c| add_route(c, "/reset", &url, None, None)).await;
    let p = fetch(
        &h.url("/reset/v1/chat/completions"),
        &chat_body(true, false),
    )
    .await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&p.body).contains(" world"));
    assert!(p.error.is_some(), "the reset stream ended cleanly");
    let s = h.one_span().await;
    assert_eq!(s["status"], "failed");
    assert_eq!(s["error_type"], "upstream_stream_error");
    assert_eq!(s["http_status"], 200);
    assert!(s["output_tokens"].as_i64().unwrap_or(0) >= 2, "{s}");
    assert_nothing_leaked(&h).await;
}

/// A deterministic body of `n` bytes (not compressible to nothing, not
/// valid JSON past the parse cap).
fn big_body(n: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(n);
    let mut x: u32 = 0x1234_5678;
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push(b'a' + (x % 26) as u8);
    }
    v
}

#[tokio::test]
async fn ten_megabyte_response_passes_byte_for_byte() {
    let size = if full() { 100 << 20 } else { 10 << 20 };
    let body = Arc::new(big_body(size));
    let b = Arc::clone(&body);
    let up = RawUpstream::start(move |mut s: TcpStream| {
        let b = Arc::clone(&b);
        async move {
            if read_request(&mut s).await.is_none() {
                return;
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                b.len()
            );
            let _ = s.write_all(head.as_bytes()).await;
            let _ = s.write_all(&b).await;
        }
    })
    .await;
    let url = up.url();
    let h = started(|c| add_route(c, "/big", &url, None, None)).await;
    let p = fetch(&h.url("/big/v1/chat/completions"), &chat_body(false, false)).await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(p.error.is_none());
    assert_eq!(p.body.len(), body.len());
    assert!(p.body == *body, "bytes differ");
    let s = h.one_span().await;
    assert_eq!(s["http_status"], 200);
    // The observer kept a capped copy: max_capture_bytes and a marker.
    let captured = s["response_body"].as_str().unwrap();
    assert!(captured.len() < 64 * 1024 + 100, "{}", captured.len());
    assert!(
        captured.ends_with(&format!("[truncated {} bytes]", size - 64 * 1024)),
        "{}",
        &captured[captured.len() - 40..]
    );
    assert_nothing_leaked(&h).await;
}

#[tokio::test]
async fn slow_reader_holds_the_upstream_back() {
    // The upstream writes a large streamed body as fast as it can and counts
    // what the socket accepted. The client reads one frame and stops: with
    // backpressure end to end the upstream stalls after a bounded amount
    // (socket buffers + hyper's buffers), far below the body's size.
    let total: usize = if full() { 1 << 30 } else { 128 << 20 };
    let piece = Bytes::from(vec![b'x'; 64 * 1024]);
    let written = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let (w, f) = (Arc::clone(&written), Arc::clone(&finished));
    let up = RawUpstream::start(move |mut s: TcpStream| {
        let (w, f, piece) = (Arc::clone(&w), Arc::clone(&f), piece.clone());
        async move {
            if read_request(&mut s).await.is_none() {
                return;
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {total}\r\n\r\n"
            );
            if s.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let mut sent = 0;
            while sent < total {
                if s.write_all(&piece).await.is_err() {
                    return;
                }
                sent += piece.len();
                w.store(sent as u64, Ordering::SeqCst);
            }
            f.fetch_add(1, Ordering::SeqCst);
        }
    })
    .await;
    let url = up.url();
    // A short idle timeout: the reader's pause (longer than it) must not
    // count as upstream silence.
    let h = started(|c| add_route(c, "/slow", &url, None, Some(700))).await;
    let c = client();
    let req = request(Method::GET, &h.url("/slow/v1/files/x/content"), &[], "");
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    let mut read = first.len();
    // Wait (bounded) until the upstream stops making progress.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = written.load(Ordering::SeqCst);
    let mut still = 0;
    while still < 5 {
        assert!(Instant::now() < deadline, "upstream never stalled");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = written.load(Ordering::SeqCst);
        if now == last {
            still += 1;
        } else {
            still = 0;
            last = now;
        }
    }
    eprintln!(
        "slow reader: upstream stalled after {} bytes of {total} ({} read by the client)",
        last, read
    );
    assert!(
        last < 48 << 20,
        "the upstream got {last} bytes ahead of a reader that read {read}"
    );
    assert_eq!(finished.load(Ordering::SeqCst), 0);
    // While it waits, the gauges show it.
    assert_eq!(metric(&h, "llmtap_inflight_requests").await, 1.0);
    assert_eq!(metric(&h, "llmtap_upstream_connections").await, 1.0);
    assert_eq!(metric(&h, "llmtap_open_connections").await, 1.0);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Reading on lets the upstream finish: every byte arrives.
    while let Some(f) = tokio::time::timeout(Duration::from_secs(30), body.frame())
        .await
        .expect("stalled")
    {
        let f = f.unwrap_or_else(|e| panic!("cut after {read} bytes: {e}"));
        read += f.into_data().map(|d| d.len()).unwrap_or(0);
    }
    assert_eq!(read, total);
    assert_eq!(finished.load(Ordering::SeqCst), 1);
    assert_eq!(metric(&h, "llmtap_idle_timeouts_total").await, 0.0);
    drop(body);
    drop(c);
    let s = h.one_span().await;
    assert_eq!(s["status"], "completed");
    assert_nothing_leaked(&h).await;
}

#[tokio::test]
async fn client_hanging_up_mid_stream_closes_the_upstream() {
    // The upstream streams forever (one event every 20 ms); the client
    // reads a little and hangs up.
    let up = RawUpstream::start(|mut s: TcpStream| async move {
        if !two_events(&mut s).await {
            return;
        }
        for i in 0..3000 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if s.write_all(&chunk(&chat_event(&format!(" w{i}"))))
                .await
                .is_err()
            {
                return;
            }
        }
    })
    .await;
    let url = up.url();
    let h = started(|c| add_route(c, "/forever", &url, None, None)).await;
    {
        let c = client();
        let req = request(
            Method::POST,
            &h.url("/forever/v1/chat/completions"),
            &[("content-type", "application/json")],
            chat_body(true, false),
        );
        let resp = c.request(req).await.unwrap();
        let mut body = resp.into_body();
        let _ = body.frame().await;
        let _ = body.frame().await;
    }
    let s = h.one_span().await;
    assert_eq!(s["status"], "cancelled");
    assert_eq!(s["error_type"], "client_disconnected");
    assert_nothing_leaked(&h).await;
}

#[tokio::test]
async fn with_tracing_off_the_idle_timeout_and_gauges_still_hold() {
    // No tee, no span: the idle timeout and the counting are on the path
    // itself.
    let up = RawUpstream::start(|mut s: TcpStream| async move {
        if two_events(&mut s).await {
            tokio::time::sleep(Duration::from_secs(120)).await;
        }
    })
    .await;
    let url = up.url();
    let h = started(|c| {
        c.tracing.enabled = false;
        add_route(c, "/idle", &url, None, Some(300));
    })
    .await;
    let p = fetch(&h.url("/idle/v1/chat/completions"), &chat_body(true, false)).await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&p.body).contains(" world"));
    assert!(p.error.is_some(), "the cut stream ended cleanly");
    assert_eq!(metric(&h, "llmtap_idle_timeouts_total").await, 1.0);
    assert_nothing_leaked(&h).await;
    assert!(!h.db.exists(), "tracing off wrote a store");
}
