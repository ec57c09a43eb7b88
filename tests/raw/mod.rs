//! Helpers for the fault and hostile-input suites: hand-written upstreams on
//! raw TCP (so a test controls every byte, stall and reset), llmtap's
//! `/metrics` gauges, and bounded waits.
//!
//! Everything binds `127.0.0.1:0`; every wait is bounded.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use llmtap::config::{Config, Format, RouteConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::common::Harness;

/// `LLMTAP_FAULTS_FULL=1`: longer stalls and bigger sizes.
pub fn full() -> bool {
    std::env::var("LLMTAP_FAULTS_FULL").is_ok_and(|v| v == "1")
}

/// A TCP server whose connections are handed to a test's function.
pub struct RawUpstream {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl RawUpstream {
    pub async fn start<F, Fut>(serve: F) -> RawUpstream
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream));
            }
        });
        RawUpstream {
            addr,
            accepted,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request (head, and a `Content-Length` body) from a raw
/// connection; `None` if the peer closed first. Bounded by the peer.
pub async fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((head, body))
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// One chunk of a chunked body.
pub fn chunk(data: &[u8]) -> Vec<u8> {
    let mut v = format!("{:x}\r\n", data.len()).into_bytes();
    v.extend_from_slice(data);
    v.extend_from_slice(b"\r\n");
    v
}

/// A chunked response head with extra header lines (each ending in \r\n).
pub fn chunked_head(content_type: &str, extra: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n{extra}\r\n"
    )
    .into_bytes()
}

/// An OpenAI chat chunk event carrying `text`.
pub fn chat_event(text: &str) -> Vec<u8> {
    format!(
        "data: {{\"id\":\"chatcmpl-raw\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{}}},\"finish_reason\":null}}]}}\n\n",
        serde_json::Value::from(text)
    )
    .into_bytes()
}

/// Adds a route `prefix` → `upstream` (OpenAI format, prefix stripped), with
/// optional timeouts.
pub fn add_route(
    c: &mut Config,
    prefix: &str,
    upstream: &str,
    first_byte_ms: Option<u64>,
    idle_ms: Option<u64>,
) {
    c.routes.push(RouteConfig {
        prefix: prefix.into(),
        upstream: upstream.into(),
        format: Format::Openai,
        strip_prefix: true,
        provider: None,
        allow_insecure: false,
        connect_timeout_ms: None,
        first_byte_timeout_ms: first_byte_ms,
        idle_timeout_ms: idle_ms,
    });
}

/// Test defaults for these suites: pooled upstream connections close soon,
/// so "no connection left" can be checked.
pub fn quick_pool(c: &mut Config) {
    c.upstream.pool_idle_timeout_ms = 200;
}

/// Reads the admin listener's `/metrics` and returns `name`'s value.
pub async fn metric(h: &Harness, name: &str) -> f64 {
    let mut s = TcpStream::connect(h.admin).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("/metrics did not answer in 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name).then(|| v.trim().parse::<f64>().ok())?
        })
        .unwrap_or_else(|| panic!("no metric {name} in /metrics"))
}

/// Waits (bounded, 10 s) until no client connection, request in flight or
/// upstream connection is left: nothing leaked.
pub async fn assert_nothing_leaked(h: &Harness) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let conns = metric(h, "llmtap_open_connections").await;
        let inflight = metric(h, "llmtap_inflight_requests").await;
        let upstream = metric(h, "llmtap_upstream_connections").await;
        if conns == 0.0 && inflight == 0.0 && upstream == 0.0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "leaked after 10 s: open_connections={conns} inflight_requests={inflight} upstream_connections={upstream}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends raw bytes to llmtap on a new connection and reads until it closes
/// (bounded). Returns what was read, or the bytes read before an error.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return out,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!("llmtap kept the connection open for 10 s"),
        }
    }
}

/// The status code of a raw HTTP/1 response.
pub fn status_of(resp: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(&resp[..resp.len().min(64)]);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
