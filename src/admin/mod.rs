//! Admin listener: health (`/healthz`, `/readyz`), `/metrics`, the query
//! API (`/api/…`, delegated to `api`) and the web UI (`/`, `/ui/…`,
//! delegated to `ui`).
//!
//! Serves on its own port (default 127.0.0.1:4001), never on the proxy's.
//! `/healthz`, `/readyz` and the UI's static files stay open (they hold no
//! data); `/api/` and `/metrics` ask for the admin token when one is
//! configured.

pub mod api;
pub mod hierarchy;
pub mod ui;

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::admin::api::{Api, ApiBody};
use crate::output::sink::SpanSink;
use crate::output::store::Store;
use crate::path::error::json_response;

/// How long `/readyz` waits for the store's round trip before it reports
/// the store unreachable.
const READY_PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// What the admin handlers can see.
pub struct Admin {
    pub store: Option<Store>,
    pub sink: Option<SpanSink>,
    pub queue_max_bytes: usize,
    /// Prometheus series (`/metrics`).
    pub metrics: Arc<crate::output::metrics::Metrics>,
    /// The recorder's state, for `/metrics` gauges (`None` with tracing off).
    pub recording: Option<Arc<crate::record::recording::Recording>>,
    /// The query API under `/api/`.
    pub api: Api,
    /// The OTLP exporter, for `/metrics`.
    pub exporter: Option<crate::output::otlp::Exporter>,
}

impl Admin {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<ApiBody> {
        let path = req.uri().path();
        if path == "/api" || path.starts_with("/api/") {
            return self.api.handle(&req).await;
        }
        if crate::admin::ui::is_ui_path(path) {
            return crate::admin::ui::serve(req.method(), path, req.headers()).map(Either::Left);
        }
        // Metrics describe the traffic (models, providers, volumes): behind
        // the token too when one is set. Health stays open for probes.
        if path == "/metrics" {
            if let Some(denied) = self.api.unauthorized(req.headers()) {
                return denied;
            }
        }
        self.health(req).await.map(Either::Left)
    }

    async fn health(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/healthz") => json_response(StatusCode::OK, Bytes::from_static(br#"{"status":"ok"}"#)),
            (&Method::GET, "/readyz") => self.readyz().await,
            (&Method::GET, "/metrics") => self.metrics(),
            _ => json_response(
                StatusCode::NOT_FOUND,
                Bytes::from_static(br#"{"error":{"message":"not found","type":"invalid_request_error","param":null,"code":"not_found"}}"#),
            ),
        }
    }

    fn metrics(&self) -> Response<Full<Bytes>> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut extra = crate::output::metrics::Extra::default();
        if let Some(sink) = &self.sink {
            (extra.queue_spans, extra.queue_bytes) = sink.depth();
            let s = sink.stats();
            extra.spans_enqueued = s.enqueued.load(Relaxed);
            extra.spans_written = s.written.load(Relaxed);
            extra.spans_dropped = s.dropped.load(Relaxed);
            extra.store_errors = s.store_errors.load(Relaxed);
            extra.batches = s.batches.load(Relaxed);
            extra.spans_sampled_out = s.sampled_out.load(Relaxed);
        }
        if let Some(e) = &self.exporter {
            let s = e.stats();
            extra.otlp = Some(crate::output::metrics::OtlpExtra {
                queue_spans: e.depth(),
                exported: s.exported.load(Relaxed),
                dropped: s.dropped.load(Relaxed),
                failed: s.failed.load(Relaxed),
                request_errors: s.request_errors.load(Relaxed),
            });
        }
        if let Some(rec) = &self.recording {
            extra.unknown_price = rec.pricing.unknown_count.load(Relaxed);
            extra.invalid_header_values = rec.context_stats.invalid_utf8.load(Relaxed);
            if let Some(index) = &rec.index {
                let (turns, _, calls) = index.sizes();
                extra.stitch_turns = turns;
                extra.stitch_pending_calls = calls;
            }
        }
        let mut resp = Response::new(Full::new(Bytes::from(self.metrics.render(&extra))));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        resp
    }

    async fn readyz(&self) -> Response<Full<Bytes>> {
        // The store is down when a round trip fails or when the writer's
        // last batch failed (a lock or a full disk refuses writes, not reads).
        let writes_failing = self.sink.as_ref().is_some_and(|s| {
            s.stats()
                .store_failing
                .load(std::sync::atomic::Ordering::Relaxed)
        });
        let store_ok = !writes_failing
            && match &self.store {
                // Bounded: a server that is down can hold a connection
                // attempt for the pool's acquire timeout (10 s), and a
                // readiness probe must answer well within its own.
                Some(store) => matches!(
                    tokio::time::timeout(READY_PING_TIMEOUT, store.ping()).await,
                    Ok(Ok(()))
                ),
                None => true,
            };
        let (depth, bytes) = self.sink.as_ref().map(SpanSink::depth).unwrap_or((0, 0));
        let queue_ok = bytes < self.queue_max_bytes;
        let ready = store_ok && queue_ok;
        let body = serde_json::json!({
            "ready": ready,
            "store": if self.api.store_none { "none" } else if store_ok { "ok" } else if writes_failing { "write_failing" } else { "unreachable" },
            "queue_spans": depth,
            "queue_bytes": bytes,
        });
        let status = if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json_response(status, Bytes::from(body.to_string()))
    }
}
