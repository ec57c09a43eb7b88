//! OTLP export: finished spans sent to an OpenTelemetry collector over
//! OTLP/HTTP (protobuf), beside the store or instead of it.
//!
//! Owns the exporter's bounded queue (a [`Queue`] of the redacted spans the
//! batcher's fan-out shares with the store, with span-count and byte
//! budgets, the oldest dropped and counted past either), its one background
//! loop (flush on `batch_size` queued or every `batch_interval_ms`), the
//! HTTP client
//! (plain http allowed: collectors usually run next to llmtap), retries with
//! backoff on 429/502/503/504 and connection errors (`Retry-After`
//! honoured), and the flush at shutdown under a deadline. `encode` builds
//! the protobuf; `messages` turns captured bodies into semconv messages.
//!
//! Must never: block or await on anything of the recorder's
//! ([`Exporter::offer_all`] is a short mutex push, called from the fan-out),
//! slow the store's writer (it has its own queue and task), or log/send a
//! secret (span records hold no keys, and reach it already redacted;
//! configured headers are sent, never logged).

pub mod encode;
pub mod messages;

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::{Compression, OtlpConfig, RouteConfig};
use crate::output::queue::{Queue, Throttle};
use crate::record::span::Span;

/// What can be wrong with the exporter's settings.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("{0:?} is not an http(s) URL")]
    Endpoint(String),
    #[error("header {0:?} is not a valid HTTP header")]
    Header(String),
}

/// Why one export attempt failed.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("collector answered {status}")]
    Status {
        status: StatusCode,
        retry_after: Option<Duration>,
    },
    #[error("connection: {0}")]
    Connect(String),
    #[error("timed out after {0} ms")]
    Timeout(u64),
    #[error("request: {0}")]
    Build(String),
}

impl SendError {
    fn retryable(&self) -> bool {
        match self {
            SendError::Status { status, .. } => matches!(status.as_u16(), 429 | 502 | 503 | 504),
            SendError::Connect(_) | SendError::Timeout(_) => true,
            SendError::Build(_) => false,
        }
    }
}

/// Counters for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans dropped from the full queue (oldest first).
    pub dropped: AtomicU64,
    /// Spans given up on: non-retryable answer, retries exhausted, or the
    /// shutdown deadline passed.
    pub failed: AtomicU64,
    /// Export requests that failed (each attempt, retried or not).
    pub request_errors: AtomicU64,
    /// Export requests sent that the collector accepted.
    pub requests: AtomicU64,
}

struct Shared {
    /// Redacted spans waiting for export, shared with the store's writer.
    queue: Queue<Arc<Span>>,
    stats: ExportStats,
    /// Spans of the batch being sent (counted failed if abandoned).
    in_flight: AtomicU64,
    batch_size: usize,
    dropping: Throttle,
}

/// The handle the batcher's fan-out holds. Cloning is cheap.
#[derive(Clone)]
pub struct Exporter {
    shared: Arc<Shared>,
}

impl Exporter {
    /// An exporter queue sized by `config`; `spawn` starts its loop.
    fn new(config: &OtlpConfig) -> Exporter {
        Exporter {
            shared: Arc::new(Shared {
                queue: Queue::new(
                    config.queue_max_spans,
                    config.queue_max_bytes,
                    config.batch_size,
                ),
                stats: ExportStats::default(),
                in_flight: AtomicU64::new(0),
                batch_size: config.batch_size,
                dropping: Throttle::default(),
            }),
        }
    }

    /// Queues redacted spans for export (each shared, not copied). Never
    /// waits.
    pub fn offer_all(&self, spans: &[Arc<Span>]) {
        let s = &self.shared;
        let dropped = s.queue.push_all(spans.iter().cloned());
        if dropped > 0 {
            s.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
            if s.dropping.ready(Duration::from_secs(10)) {
                tracing::warn!(
                    dropped_total = s.stats.dropped.load(Ordering::Relaxed),
                    "OTLP export queue full; dropping the oldest spans"
                );
            }
        }
    }

    /// Spans waiting to be exported.
    pub fn depth(&self) -> usize {
        self.shared.queue.len()
    }

    pub fn stats(&self) -> &ExportStats {
        &self.shared.stats
    }

    /// No more spans will come: the loop flushes what is queued and exits.
    pub fn close(&self) {
        self.shared.queue.close();
    }

    /// Counts everything still queued as failed (the shutdown deadline
    /// passed) and empties the queue.
    pub fn abandon(&self) -> u64 {
        let n = self.shared.queue.clear() + self.shared.in_flight.swap(0, Ordering::SeqCst);
        self.shared.stats.failed.fetch_add(n, Ordering::Relaxed);
        n
    }
}

/// Everything the export loop needs, resolved from `OtlpConfig`.
pub struct Settings {
    pub url: Uri,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub timeout: Duration,
    pub gzip: bool,
    pub resource: encode::Resource,
    pub batch_interval: Duration,
    pub retry_max_elapsed: Duration,
    /// Route prefix → (`server.address`, `server.port`).
    pub servers: HashMap<String, (String, u16)>,
}

impl Settings {
    /// Resolves the config (already validated) and the routes' upstreams.
    pub fn new(config: &OtlpConfig, routes: &[RouteConfig]) -> Result<Settings, OtlpError> {
        let url_text = config.traces_url().unwrap_or_default();
        let url: Uri = url_text
            .parse()
            .map_err(|_| OtlpError::Endpoint(url_text.clone()))?;
        if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
            return Err(OtlpError::Endpoint(url_text));
        }
        let mut headers = Vec::new();
        for (k, v) in &config.headers {
            let name = HeaderName::from_bytes(k.trim().as_bytes())
                .map_err(|_| OtlpError::Header(k.clone()))?;
            let mut value =
                HeaderValue::from_str(v.trim()).map_err(|_| OtlpError::Header(k.clone()))?;
            value.set_sensitive(true);
            headers.push((name, value));
        }
        let mut attributes = vec![("service.name".to_string(), config.service_name.clone())];
        for (k, v) in &config.resource_attributes {
            if k != "service.name" {
                attributes.push((k.clone(), v.clone()));
            }
        }
        attributes.push(("telemetry.sdk.name".into(), "llmtap".into()));
        attributes.push(("telemetry.sdk.language".into(), "rust".into()));
        attributes.push((
            "telemetry.sdk.version".into(),
            env!("CARGO_PKG_VERSION").into(),
        ));
        let mut servers = HashMap::new();
        for r in routes {
            if let Ok(base) = crate::path::router::UpstreamBase::parse(&r.upstream, true) {
                let host = base.authority.host().trim_matches(['[', ']']).to_string();
                let port = base.authority.port_u16().unwrap_or(
                    if base.scheme == http::uri::Scheme::HTTP {
                        80
                    } else {
                        443
                    },
                );
                servers.insert(r.prefix.clone(), (host.clone(), port));
                servers.insert(
                    crate::config::normalize_prefix(&r.prefix).to_string(),
                    (host, port),
                );
            }
        }
        Ok(Settings {
            url,
            headers,
            timeout: Duration::from_millis(config.timeout_ms),
            gzip: config.compression == Compression::Gzip,
            resource: encode::Resource { attributes },
            batch_interval: Duration::from_millis(config.batch_interval_ms),
            retry_max_elapsed: Duration::from_millis(config.retry_max_elapsed_ms),
            servers,
        })
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

fn client(connect_timeout: Duration) -> HttpClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
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
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(2)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(https)
}

/// Creates the exporter and spawns its loop. Call inside a tokio runtime.
pub fn spawn(config: &OtlpConfig, settings: Settings) -> (Exporter, tokio::task::JoinHandle<()>) {
    let exporter = Exporter::new(config);
    // Logged without any userinfo the URL may carry.
    let url = &settings.url;
    tracing::info!(
        scheme = url.scheme_str().unwrap_or(""),
        host = url.host().unwrap_or(""),
        port = url.port_u16(),
        path = url.path(),
        gzip = settings.gzip,
        "OTLP trace export on"
    );
    let task = tokio::spawn(run(exporter.clone(), settings));
    (exporter, task)
}

const BACKOFF_START: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Longest `Retry-After` honoured.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(30);

async fn run(exporter: Exporter, settings: Settings) {
    let client = client(settings.timeout);
    let settings = Arc::new(settings);
    let shared = Arc::clone(&exporter.shared);
    loop {
        let closed = shared.queue.is_closed();
        let len = shared.queue.len();
        if len == 0 && closed {
            return;
        }
        if len < shared.batch_size && !closed {
            tokio::select! {
                _ = shared.queue.notified() => {}
                _ = tokio::time::sleep(settings.batch_interval) => {}
            }
        }
        let batch = shared.queue.take(shared.batch_size);
        if batch.is_empty() {
            continue;
        }
        let total = batch.len() as u64;
        shared.in_flight.store(total, Ordering::SeqCst);
        // Encoding and gzip are CPU work: on a blocking thread, off the
        // async workers that serve traffic.
        let (sh, st) = (Arc::clone(&shared), Arc::clone(&settings));
        let prepared = tokio::task::spawn_blocking(move || prepare(&sh, &st, batch)).await;
        let (body, n) = match prepared {
            Ok(p) => p,
            Err(error) => {
                // Only a panic gets here: the spans are lost.
                shared.stats.failed.fetch_add(total, Ordering::Relaxed);
                shared.in_flight.store(0, Ordering::SeqCst);
                tracing::error!(%error, spans = total, "Preparing an OTLP batch failed; spans dropped");
                continue;
            }
        };
        shared.in_flight.store(n, Ordering::SeqCst);
        export_with_retry(&client, &settings, &shared, Bytes::from(body), n).await;
        shared.in_flight.store(0, Ordering::SeqCst);
    }
}

/// Encodes and (maybe) compresses a batch of redacted spans: the request
/// body and the number of spans in it.
fn prepare(shared: &Shared, settings: &Settings, spans: Vec<Arc<Span>>) -> (Vec<u8>, u64) {
    let lookup = |route: &str| settings.servers.get(route).cloned();
    let mut body = Vec::with_capacity(spans.iter().map(|s| s.approx_bytes()).sum::<usize>());
    let skipped = encode::encode_request(&spans, &settings.resource, &lookup, &mut body);
    if skipped > 0 {
        shared
            .stats
            .failed
            .fetch_add(skipped as u64, Ordering::Relaxed);
    }
    let n = (spans.len() - skipped) as u64;
    if !settings.gzip {
        return (body, n);
    }
    match gzip(&body) {
        Ok(z) => (z, n),
        Err(error) => {
            tracing::warn!(%error, "gzip of an OTLP batch failed; sending it uncompressed");
            (body, n)
        }
    }
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(data)?;
    enc.finish()
}

async fn export_with_retry(
    client: &HttpClient,
    settings: &Settings,
    shared: &Shared,
    body: Bytes,
    spans: u64,
) {
    let first = Instant::now();
    let mut backoff = BACKOFF_START;
    loop {
        match send(client, settings, body.clone()).await {
            Ok(()) => {
                shared.stats.exported.fetch_add(spans, Ordering::Relaxed);
                shared.stats.requests.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(spans, "Exported span batch");
                return;
            }
            Err(error) => {
                shared.stats.request_errors.fetch_add(1, Ordering::Relaxed);
                let closing = shared.queue.is_closed();
                let wait = match &error {
                    SendError::Status {
                        retry_after: Some(d),
                        ..
                    } => (*d).min(RETRY_AFTER_MAX),
                    _ => backoff,
                };
                // At shutdown the caller's deadline bounds the retries (it
                // abandons this task); otherwise `retry_max_elapsed` does.
                if !error.retryable()
                    || (!closing && first.elapsed() + wait > settings.retry_max_elapsed)
                {
                    shared.stats.failed.fetch_add(spans, Ordering::Relaxed);
                    tracing::warn!(%error, spans, "OTLP export failed; batch dropped");
                    return;
                }
                tracing::debug!(%error, spans, retry_in_ms = wait.as_millis() as u64, "OTLP export failed; will retry");
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

async fn send(client: &HttpClient, settings: &Settings, body: Bytes) -> Result<(), SendError> {
    let mut req = Request::post(settings.url.clone())
        .header(CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(body))
        .map_err(|e| SendError::Build(e.to_string()))?;
    if settings.gzip {
        req.headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    for (k, v) in &settings.headers {
        req.headers_mut().insert(k.clone(), v.clone());
    }
    let timeout_ms = settings.timeout.as_millis() as u64;
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            SendError::Connect(msg)
        })?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // Read the (small) answer so the connection can be reused.
        let _ = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
            .collect()
            .await;
        if status.is_success() {
            Ok(())
        } else {
            Err(SendError::Status {
                status,
                retry_after,
            })
        }
    };
    match tokio::time::timeout(settings.timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(SendError::Timeout(timeout_ms)),
    }
}

// === environment helpers (used by `config`) ===

/// Parses a W3C-baggage-style list `k1=v1,k2=v2` with percent-decoded keys
/// and values, as `OTEL_EXPORTER_OTLP_HEADERS` and
/// `OTEL_RESOURCE_ATTRIBUTES` use. Empty entries are skipped; an entry
/// without `=` is an error naming it.
pub fn parse_kv_list(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for entry in text.split(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let (k, v) = entry.split_once('=').ok_or_else(|| {
            format!(
                "entry {:?} has no '='",
                entry.split(':').next().unwrap_or("")
            )
        })?;
        let k = percent_decode(k.trim())?;
        if k.is_empty() {
            return Err("an entry has an empty key".into());
        }
        out.push((k, percent_decode(v.trim())?));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "a bad %-escape".to_string())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a %-escape that is not UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_lists_are_percent_decoded() {
        let v =
            parse_kv_list(" api-key=a%20b%3Dc , x-team=ml,,service.namespace=prod%2Cus ").unwrap();
        assert_eq!(
            v,
            vec![
                ("api-key".to_string(), "a b=c".to_string()),
                ("x-team".to_string(), "ml".to_string()),
                ("service.namespace".to_string(), "prod,us".to_string()),
            ]
        );
        assert!(parse_kv_list("novalue").is_err());
        assert!(parse_kv_list("k=%zz").is_err());
        assert_eq!(parse_kv_list("").unwrap(), vec![]);
    }

    #[test]
    fn queue_drops_oldest_past_the_count_budget() {
        let e = Exporter::new(&OtlpConfig {
            queue_max_spans: 3,
            batch_size: 100,
            ..OtlpConfig::default()
        });
        let spans: Vec<Arc<Span>> = (0..5).map(|_| Arc::new(Span::start(0))).collect();
        let ids: Vec<String> = spans.iter().map(|s| s.span_id.clone()).collect();
        e.offer_all(&spans[..2]);
        e.offer_all(&spans[2..]);
        assert_eq!(e.depth(), 3);
        assert_eq!(e.stats().dropped.load(Ordering::Relaxed), 2);
        // Shared, not copied: the caller's span and the queue's are one.
        assert_eq!(Arc::strong_count(&spans[4]), 2);
        assert_eq!(Arc::strong_count(&spans[0]), 1, "dropped");
        let kept: Vec<String> = e
            .shared
            .queue
            .take(10)
            .into_iter()
            .map(|s| s.span_id.clone())
            .collect();
        assert_eq!(kept, ids[2..]);
        assert_eq!(e.abandon(), 0);
    }

    #[test]
    fn only_some_failures_are_retried() {
        let st = |c: u16| SendError::Status {
            status: StatusCode::from_u16(c).unwrap(),
            retry_after: None,
        };
        for c in [429, 502, 503, 504] {
            assert!(st(c).retryable(), "{c}");
        }
        for c in [400, 401, 404, 413, 500] {
            assert!(!st(c).retryable(), "{c}");
        }
        assert!(SendError::Connect("refused".into()).retryable());
    }
}
