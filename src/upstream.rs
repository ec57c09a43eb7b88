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
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::UpstreamConfig;
use crate::error::ProxyError;

/// What the client sends upstream: the client's body, teed or not, or a
/// body llmtap read whole (only with `exact_stream_usage`).
pub type UpstreamBody = http_body_util::Either<
    http_body_util::Either<Incoming, crate::tee::Tee<Incoming, crate::observe::RequestObserver>>,
    http_body_util::Full<bytes::Bytes>,
>;

/// See the module docs.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, UpstreamBody>,
    first_byte_timeout: Duration,
    connect_timeout: Duration,
}

impl Upstream {
    pub fn new(config: &UpstreamConfig) -> Upstream {
        let connect_timeout = Duration::from_millis(config.connect_timeout_ms);
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
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_millis(config.pool_idle_timeout_ms))
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https);
        Upstream {
            client,
            first_byte_timeout: Duration::from_millis(config.first_byte_timeout_ms),
            connect_timeout,
        }
    }

    /// Sends a request and waits for the response head (bounded by the
    /// first-byte timeout). `label` names the upstream in errors.
    pub async fn send(
        &self,
        req: Request<UpstreamBody>,
        label: &str,
    ) -> Result<Response<Incoming>, ProxyError> {
        match tokio::time::timeout(self.first_byte_timeout, self.client.request(req)).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(classify(&e, label, self.connect_timeout)),
            Err(_) => Err(ProxyError::UpstreamTimeout {
                upstream: label.to_string(),
                after_ms: self.first_byte_timeout.as_millis() as u64,
                phase: "waiting for response headers",
            }),
        }
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
    if tls {
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

/// Prepares the client's headers for the upstream (in place).
pub fn request_headers(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    // The client library sets Host from the upstream URI.
    headers.remove(header::HOST);
    let ours: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-llmtap-"))
        .cloned()
        .collect();
    for name in ours {
        headers.remove(name);
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
