//! Upstream client: the pooled HTTP client that talks to providers, and the
//! header rules for what crosses llmtap in each direction.
//!
//! HTTPS goes through rustls (platform roots, or the bundled Mozilla roots
//! when the platform has none) with HTTP/1.1 or HTTP/2 chosen by ALPN; plain
//! HTTP is allowed only where the router allowed it (loopback, or a route
//! marked `allow_insecure`). Hop-by-hop headers are dropped, `Host` is set to
//! the upstream, `x-llmtap-*` headers stay with llmtap; every other header,
//! credentials included, passes untouched. Bodies stream both ways.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Limited;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::config::UpstreamConfig;
use crate::output::metrics::{GaugeGuard, Traffic};
use crate::path::error::{ProxyError, IDLE_TIMEOUT};
use crate::path::router::Timeouts;

/// The client's body as read by llmtap: capped at `limits.max_body_bytes`
/// (a chunked upload that grows past it fails, and the upstream call with
/// it).
pub type ClientBody = Limited<Incoming>;

/// What the client sends upstream: the client's body, teed or not, or a
/// body llmtap read whole (only with `exact_stream_usage`).
pub type UpstreamBody = http_body_util::Either<
    http_body_util::Either<
        ClientBody,
        crate::path::tee::Tee<ClientBody, crate::record::request::RequestObserver>,
    >,
    http_body_util::Full<bytes::Bytes>,
>;

/// The body boxed: hyper's client hands each request to its connection
/// through a channel whose every block holds 32 requests inline, so a
/// 240-byte body made that block ~15 KB per upstream connection (heaptrack,
/// 1,000 concurrent streams: 14.9 MB); boxed it is half that.
type Pool = Client<Counting<HttpsConnector<HttpConnector>>, Box<UpstreamBody>>;

/// See the module docs.
#[derive(Clone)]
pub struct Upstream {
    /// One pooled client per distinct connect timeout (usually one): the
    /// connect timeout belongs to the connector.
    clients: Arc<[(Duration, Pool)]>,
}

impl Upstream {
    /// Builds the client(s). `connect_timeouts` lists the routes' connect
    /// timeouts; `[upstream]`'s own is always included.
    pub fn new(
        config: &UpstreamConfig,
        connect_timeouts: impl IntoIterator<Item = Duration>,
        traffic: Arc<Traffic>,
    ) -> Upstream {
        let mut timeouts: Vec<Duration> = connect_timeouts.into_iter().collect();
        timeouts.push(Duration::from_millis(config.connect_timeout_ms));
        timeouts.sort();
        timeouts.dedup();
        let clients = timeouts
            .into_iter()
            .map(|t| (t, build_client(config, t, Arc::clone(&traffic))))
            .collect::<Vec<_>>();
        Upstream {
            clients: clients.into(),
        }
    }

    fn client(&self, connect: Duration) -> Option<&Pool> {
        self.clients
            .iter()
            .find(|(t, _)| *t == connect)
            .or_else(|| self.clients.first())
            .map(|(_, c)| c)
    }

    /// Sends a request and waits for the response head (bounded by the
    /// route's first-byte timeout, which includes connecting). `label` names
    /// the upstream in errors.
    pub async fn send(
        &self,
        req: Request<UpstreamBody>,
        label: &str,
        timeouts: &Timeouts,
    ) -> Result<Response<Incoming>, ProxyError> {
        let Some(client) = self.client(timeouts.connect) else {
            // `new` always builds at least the default client.
            return Err(ProxyError::Upstream {
                upstream: label.to_string(),
                reason: "no upstream client".into(),
            });
        };
        match tokio::time::timeout(timeouts.first_byte, client.request(req.map(Box::new))).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(classify(&e, label, timeouts.connect)),
            Err(_) => Err(ProxyError::UpstreamTimeout {
                upstream: label.to_string(),
                after_ms: timeouts.first_byte.as_millis() as u64,
                phase: "waiting for response headers",
            }),
        }
    }
}

fn build_client(config: &UpstreamConfig, connect_timeout: Duration, traffic: Arc<Traffic>) -> Pool {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match builder.with_native_roots() {
        Ok(b) => b,
        Err(error) => {
            tracing::debug!(%error, "No platform TLS roots; using the bundled Mozilla roots");
            hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots()
        }
    };
    let https = builder
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_millis(config.pool_idle_timeout_ms))
        .pool_max_idle_per_host(config.pool_max_idle_per_host)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(Counting {
            inner: https,
            traffic,
        })
}

// === impl Counting ===

/// A connector that counts the connections it made while they are open
/// (`llmtap_upstream_connections`).
#[derive(Clone)]
pub struct Counting<C> {
    inner: C,
    traffic: Arc<Traffic>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<C> tower_service::Service<Uri> for Counting<C>
where
    C: tower_service::Service<Uri>,
    C::Future: Send + 'static,
    C::Response: Send + 'static,
{
    type Response = CountedIo<C::Response>;
    type Error = C::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let traffic = Arc::clone(&self.traffic);
        Box::pin(async move {
            let io = connecting.await?;
            Ok(CountedIo {
                io,
                _open: GaugeGuard::new(&traffic, |t| &t.upstream_connections),
            })
        })
    }
}

/// An upstream connection, counted until dropped.
pub struct CountedIo<T> {
    io: T,
    _open: GaugeGuard,
}

impl<T: Connection> Connection for CountedIo<T> {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for CountedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for CountedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

// === impl IdleTimeout ===

/// Why a response body ended early, as the client's connection sees it.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The upstream's body failed (reset, malformed framing, ...).
    #[error(transparent)]
    Upstream(hyper::Error),
    /// The upstream sent nothing for the idle timeout. The message starts
    /// with [`IDLE_TIMEOUT`]: that is how the span gets its `error_type`.
    #[error("{IDLE_TIMEOUT}: no data from the upstream for {0} ms")]
    Idle(u64),
}

pin_project! {
    /// The upstream's response body with an idle timeout: frames pass
    /// through untouched; when the upstream sends nothing for `idle` while
    /// the consumer waits, the body fails (the client's stream is cut, as
    /// on an upstream reset) and the upstream body is dropped (its
    /// connection closed). One timer per response, reset (not reallocated)
    /// each time llmtap starts waiting for a frame; time the consumer spends
    /// not reading (a slow client) does not count.
    pub struct IdleTimeout<B> {
        #[pin]
        inner: B,
        #[pin]
        sleep: Sleep,
        idle: Duration,
        waiting: bool,
        done: bool,
        traffic: Arc<Traffic>,
    }
}

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, idle: Duration, traffic: Arc<Traffic>) -> IdleTimeout<B> {
        IdleTimeout {
            inner,
            sleep: tokio::time::sleep(idle),
            idle,
            waiting: false,
            done: false,
            traffic,
        }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes, Error = hyper::Error>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut this = self.project();
        if *this.done {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *this.waiting = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                *this.done = true;
                Poll::Ready(Some(Err(BodyError::Upstream(e))))
            }
            Poll::Ready(None) => {
                *this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if !*this.waiting {
                    *this.waiting = true;
                    let now = Instant::now();
                    // A configured idle time past what `Instant` can add is
                    // "a year": never, in practice.
                    let deadline = now
                        .checked_add(*this.idle)
                        .unwrap_or(now + Duration::from_secs(365 * 86_400));
                    this.sleep.as_mut().reset(deadline);
                }
                match this.sleep.poll(cx) {
                    Poll::Ready(()) => {
                        *this.done = true;
                        this.traffic.idle_timeouts.fetch_add(1, Ordering::Relaxed);
                        Poll::Ready(Some(Err(BodyError::Idle(this.idle.as_millis() as u64))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Turns a client error into the error the caller sees.
fn classify(
    e: &hyper_util::client::legacy::Error,
    label: &str,
    connect_timeout: Duration,
) -> ProxyError {
    let upstream = label.to_string();
    let mut reason = e.to_string();
    let mut tls = false;
    let mut timed_out = false;
    let mut source: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(s) = source {
        reason.push_str(": ");
        reason.push_str(&s.to_string());
        if s.downcast_ref::<rustls::Error>().is_some() {
            tls = true;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            let (is_tls, is_timeout) = inspect_io(io);
            tls |= is_tls;
            timed_out |= is_timeout;
        }
        source = s.source();
    }
    if too_large(e) {
        // The proxy fills in the configured limit.
        ProxyError::BodyTooLarge {
            declared: None,
            limit: 0,
        }
    } else if tls {
        ProxyError::UpstreamTls { upstream, reason }
    } else if timed_out && e.is_connect() {
        ProxyError::UpstreamTimeout {
            upstream,
            after_ms: connect_timeout.as_millis() as u64,
            phase: "connecting",
        }
    } else if e.is_connect() {
        ProxyError::UpstreamConnect { upstream, reason }
    } else {
        ProxyError::Upstream { upstream, reason }
    }
}

/// True when the request failed because the client's body went past
/// `limits.max_body_bytes` (a chunked upload).
fn too_large(e: &hyper_util::client::legacy::Error) -> bool {
    let mut source: Option<&(dyn StdError + 'static)> = e.source();
    let mut depth = 0;
    while let Some(s) = source {
        if s.downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            return true;
        }
        depth += 1;
        if depth > 16 {
            break;
        }
        source = s.source();
    }
    false
}

/// Looks through nested `io::Error`s (whose `source()` skips a level) for
/// a rustls error or a timeout.
fn inspect_io(io: &std::io::Error) -> (bool, bool) {
    let mut tls = false;
    let mut timed_out = io.kind() == std::io::ErrorKind::TimedOut;
    let mut inner = io.get_ref();
    let mut depth = 0;
    while let Some(e) = inner {
        if e.downcast_ref::<rustls::Error>().is_some() {
            tls = true;
        }
        match e.downcast_ref::<std::io::Error>() {
            Some(next) if depth < 8 => {
                timed_out |= next.kind() == std::io::ErrorKind::TimedOut;
                inner = next.get_ref();
                depth += 1;
            }
            _ => break,
        }
    }
    (tls, timed_out)
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// plus `proxy-*` credentials meant for a proxy. `Host` is handled apart.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of these: one pass over the names decides
    // whether any removal (each a hash lookup) is needed.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    // Names listed in `Connection` are hop-by-hop too.
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// A name `strip_hop_by_hop` removes unless `Connection` lists it (which
/// only a message that has a `Connection` header can do).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || matches!(name.as_str(), "keep-alive" | "proxy-connection")
}

/// Prepares the client's headers for the upstream (in place).
pub fn request_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    // The client library sets Host from the upstream URI.
    headers.remove(header::HOST);
    let ours = |k: &HeaderName| k.as_str().starts_with("x-llmtap-");
    if headers.keys().any(ours) {
        let names: Vec<HeaderName> = headers.keys().filter(|k| ours(k)).cloned().collect();
        for name in names {
            headers.remove(name);
        }
    }
}

/// Prepares the upstream's headers for the client (in place).
pub fn response_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_header_rules() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer sk-x".parse().unwrap());
        h.insert("host", "localhost:4000".parse().unwrap());
        h.insert("connection", "keep-alive, x-custom-hop".parse().unwrap());
        h.insert("x-custom-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("transfer-encoding", "chunked".parse().unwrap());
        h.insert("x-llmtap-session-id", "s".parse().unwrap());
        h.insert("x-stainless-lang", "python".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        request_headers(&mut h);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            vec!["authorization", "content-type", "x-stainless-lang"]
        );
    }
}
