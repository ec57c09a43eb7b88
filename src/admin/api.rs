//! API: the JSON query API under `/api/` on the admin listener — routing,
//! the bearer-token check, parameter parsing and the responses (JSON, or a
//! streamed export).
//!
//! Owns the HTTP side only: the SQL lives in `store` (`query.rs`,
//! `rollup.rs`), exchanges in flight in `live`. Every bad parameter is a 400
//! naming it. It must never be served on the proxy's port, never compare
//! the token in time that depends on its content, and never build an
//! export in memory (pages of [`EXPORT_PAGE`] spans go through a bounded
//! channel).
//!
//! | path | answer |
//! | --- | --- |
//! | `GET /api/traces` | one row per trace, newest first, filters, cursor |
//! | `GET /api/traces/{trace_id}` | the trace hierarchy |
//! | `GET /api/spans/{span_id}` | one span with its bodies and `messages` |
//! | `GET /api/live` | exchanges in flight |
//! | `GET /api/stats` | requests, errors, latency, tokens, cost (rollups) |
//! | `GET /api/export` | matching spans, JSON or NDJSON, streamed |

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{Either, Full};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::output::store::{
    Bucket, SpanFilter, SpanKey, StatsQuery, Store, StoreError, TraceKey, TraceQuery, MAX_BUCKETS,
};
use crate::record::live::Live;
use crate::record::span::Span;

/// Default and largest page of `/api/traces`.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;
/// Spans read per store round trip by an export.
pub const EXPORT_PAGE: usize = 500;
/// Chunks (about 64 KiB each) an export may have waiting for the client.
const EXPORT_CHANNEL: usize = 8;
const EXPORT_CHUNK: usize = 64 * 1024;
/// Most parameters in one query string.
const MAX_PARAMS: usize = 64;
/// Longest id accepted in a path.
const MAX_ID: usize = 128;
/// `/api/stats` range when `from` is not given.
const DEFAULT_STATS_RANGE_US: i64 = 24 * 3_600_000_000;

/// The body of every admin response: whole JSON, or a streamed export.
pub type ApiBody = Either<Full<Bytes>, ExportBody>;

/// What the API can answer with, and the error body it gets.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    InvalidParam { param: String, message: String },
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("no such API path: {0}")]
    NoRoute(String),
    #[error("missing or invalid admin token (send Authorization: Bearer TOKEN)")]
    Unauthorized,
    #[error("method {0} not allowed: the query API is read-only (GET)")]
    MethodNotAllowed(String),
    #[error("tracing is disabled: there is no span store to query")]
    NoStore,
    #[error("store = \"none\": spans are only exported (OTLP), there is no span store to query")]
    StoreNone,
    #[error("store error: {0}")]
    Store(#[from] StoreError),
}

impl ApiError {
    fn invalid(param: &str, message: impl Into<String>) -> ApiError {
        ApiError::InvalidParam {
            param: param.to_string(),
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidParam { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound { .. } | ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NoStore | ApiError::StoreNone => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidParam { .. } => "invalid_parameter",
            ApiError::NotFound { .. } | ApiError::NoRoute(_) => "not_found",
            ApiError::Unauthorized => "invalid_admin_token",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::NoStore => "tracing_disabled",
            ApiError::StoreNone => "no_store",
            ApiError::Store(_) => "store_error",
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "authentication_error",
            ApiError::NoStore | ApiError::StoreNone | ApiError::Store(_) => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// `{"error":{"message","type","param","code"}}`.
    pub fn body(&self) -> serde_json::Value {
        let param = match self {
            ApiError::InvalidParam { param, .. } => serde_json::Value::String(param.clone()),
            _ => serde_json::Value::Null,
        };
        serde_json::json!({
            "error": {
                "message": self.to_string(),
                "type": self.kind(),
                "param": param,
                "code": self.code(),
            }
        })
    }

    fn to_response(&self) -> Response<ApiBody> {
        if let ApiError::Store(error) = self {
            tracing::warn!(%error, "Query API store error");
        }
        let mut resp = json_response(self.status(), &self.body());
        match self {
            ApiError::Unauthorized => {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"llmtap\""),
                );
            }
            ApiError::MethodNotAllowed(_) => {
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET"));
            }
            _ => {}
        }
        resp
    }
}

fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response<ApiBody> {
    let (status, body) = match serde_json::to_vec(value) {
        Ok(body) => (status, Bytes::from(body)),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Bytes::from_static(br#"{"error":{"message":"cannot serialize the answer","type":"server_error","param":null,"code":"serialize_error"}}"#),
        ),
    };
    let mut resp = Response::new(Either::Left(Full::new(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `given == expected` in time that depends only on `expected`'s length:
/// every byte of `expected` is visited and differences are accumulated
/// with xor/or, with no early exit on content; a length mismatch still
/// visits every byte and then fails.
pub fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut diff: u8 = 0;
    for (i, &e) in expected.iter().enumerate() {
        diff |= e ^ given.get(i).copied().unwrap_or(0);
    }
    let diff = std::hint::black_box(diff);
    (given.len() == expected.len()) & (diff == 0)
}

// === impl Api ===

/// See the module docs.
pub struct Api {
    pub store: Option<Store>,
    pub live: Option<Arc<Live>>,
    /// Required as a bearer token when set.
    pub token: Option<String>,
    /// `store = "none"`: answer 503 naming that, not "tracing disabled".
    pub store_none: bool,
}

impl Api {
    /// Answers a request whose path starts with `/api`.
    pub async fn handle<B>(&self, req: &Request<B>) -> Response<ApiBody> {
        match self.route(req).await {
            Ok(resp) => resp,
            Err(e) => e.to_response(),
        }
    }

    /// The 401 answer when a token is configured and `headers` do not
    /// carry it (for admin endpoints outside `/api/`, such as `/metrics`).
    pub fn unauthorized(&self, headers: &HeaderMap) -> Option<Response<ApiBody>> {
        (!self.authorized(headers)).then(|| ApiError::Unauthorized.to_response())
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        // The scheme is not secret; only the token is compared in constant time.
        let given = match given.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => given[7..].trim_ascii(),
            _ => &[][..],
        };
        constant_time_eq(given, token.as_bytes())
    }

    async fn route<B>(&self, req: &Request<B>) -> Result<Response<ApiBody>, ApiError> {
        if !self.authorized(req.headers()) {
            return Err(ApiError::Unauthorized);
        }
        let path = req.uri().path();
        let rest = path.strip_prefix("/api").unwrap_or(path);
        let rest = rest.trim_start_matches('/').trim_end_matches('/');
        let segments: Vec<&str> = rest.split('/').collect();
        let known = matches!(
            segments.as_slice(),
            ["traces"] | ["traces", _] | ["spans", _] | ["live"] | ["stats"] | ["export"]
        );
        if !known {
            return Err(ApiError::NoRoute(path.to_string()));
        }
        if req.method() != Method::GET {
            return Err(ApiError::MethodNotAllowed(req.method().to_string()));
        }
        let query = req.uri().query();
        match segments.as_slice() {
            ["traces"] => self.traces(query).await,
            ["traces", id] => self.trace(id, query).await,
            ["spans", id] => self.span(id, query).await,
            ["live"] => self.live(query),
            ["stats"] => self.stats(query).await,
            _ => self.export(query).await,
        }
    }

    fn store(&self) -> Result<&Store, ApiError> {
        match &self.store {
            Some(store) => Ok(store),
            None if self.store_none => Err(ApiError::StoreNone),
            None => Err(ApiError::NoStore),
        }
    }

    async fn traces(&self, query: Option<&str>) -> Result<Response<ApiBody>, ApiError> {
        let allowed: Vec<&str> = FILTER_PARAMS
            .iter()
            .copied()
            .chain(["limit", "cursor"])
            .collect();
        let p = Params::parse(query, &allowed)?;
        let q = TraceQuery {
            filter: p.filter()?,
            limit: p.limit("limit", DEFAULT_LIMIT, MAX_LIMIT)?,
            after: p.one("cursor")?.map(decode_cursor).transpose()?,
        };
        let page = self.store()?.traces(&q).await?;
        #[derive(Serialize)]
        struct Page<'a> {
            traces: &'a [crate::output::store::TraceSummary],
            next_cursor: Option<String>,
            limit: usize,
        }
        let body = Page {
            traces: &page.traces,
            next_cursor: page.next.as_ref().map(encode_cursor),
            limit: q.limit,
        };
        Ok(json_response(StatusCode::OK, &body))
    }

    async fn trace(&self, id: &str, query: Option<&str>) -> Result<Response<ApiBody>, ApiError> {
        let p = Params::parse(query, &["bodies"])?;
        let bodies = p.flag("bodies", false)?;
        let id = path_id("trace_id", id)?;
        let mut spans = self.store()?.trace(id).await?;
        if !bodies {
            for s in &mut spans {
                s.request_body = None;
                s.response_body = None;
            }
        }
        match crate::admin::hierarchy::assemble(spans) {
            Some(h) if bodies => {
                let mut tree = serde_json::to_value(&h).unwrap_or_default();
                crate::record::providers::messages::annotate_trace(&mut tree);
                Ok(json_response(StatusCode::OK, &tree))
            }
            Some(h) => Ok(json_response(StatusCode::OK, &h)),
            None => Err(ApiError::NotFound {
                what: "trace",
                id: id.to_string(),
            }),
        }
    }

    async fn span(&self, id: &str, query: Option<&str>) -> Result<Response<ApiBody>, ApiError> {
        Params::parse(query, &[])?;
        let id = path_id("span_id", id)?;
        match self.store()?.span(id).await? {
            Some(span) => Ok(json_response(
                StatusCode::OK,
                &crate::record::providers::messages::SpanView::new(&span),
            )),
            None => Err(ApiError::NotFound {
                what: "span",
                id: id.to_string(),
            }),
        }
    }

    fn live(&self, query: Option<&str>) -> Result<Response<ApiBody>, ApiError> {
        let p = Params::parse(query, &["limit"])?;
        let cap = self
            .live
            .as_ref()
            .map_or(crate::record::live::DEFAULT_CAP, |l| l.cap());
        let limit = p.limit("limit", 1000.min(cap.max(1)), cap.max(1))?;
        let now = crate::record::span::now_us();
        #[derive(Serialize)]
        struct Entry {
            #[serde(flatten)]
            span: crate::record::live::LiveSpan,
            status: &'static str,
            elapsed_ms: f64,
        }
        let spans: Vec<Entry> = self
            .live
            .as_ref()
            .map(|l| l.snapshot(limit))
            .unwrap_or_default()
            .into_iter()
            .map(|span| Entry {
                elapsed_ms: (now - span.start_time_us).max(0) as f64 / 1000.0,
                span,
                status: "running",
            })
            .collect();
        let body = serde_json::json!({
            "now_us": now,
            "in_flight": self.live.as_ref().map_or(0, |l| l.len()),
            "overflow": self.live.as_ref().map_or(0, |l| l.overflow()),
            "cap": cap,
            "spans": spans,
        });
        Ok(json_response(StatusCode::OK, &body))
    }

    async fn stats(&self, query: Option<&str>) -> Result<Response<ApiBody>, ApiError> {
        let p = Params::parse(query, &["from", "to", "bucket"])?;
        let to = p.time("to")?.unwrap_or_else(crate::record::span::now_us);
        let from = p
            .time("from")?
            .unwrap_or_else(|| to.saturating_sub(DEFAULT_STATS_RANGE_US));
        if from >= to {
            return Err(ApiError::invalid("to", "to must be after from"));
        }
        let bucket = match p.one("bucket")? {
            Some(b) => Bucket::parse(b).ok_or_else(|| {
                ApiError::invalid(
                    "bucket",
                    format!("bucket {b:?}: expected 60s, 5m, 1h or 1d"),
                )
            })?,
            None => auto_bucket(to - from),
        };
        let q = StatsQuery {
            from_us: from,
            to_us: to,
            bucket,
        };
        let (_, _, n) = q.aligned();
        if n > MAX_BUCKETS {
            return Err(ApiError::invalid(
                "bucket",
                format!("{n} buckets of {} in the range (most {MAX_BUCKETS}): use a larger bucket or a shorter range", bucket.as_str()),
            ));
        }
        let stats = self.store()?.stats(&q).await?;
        Ok(json_response(StatusCode::OK, &stats))
    }

    async fn export(&self, query: Option<&str>) -> Result<Response<ApiBody>, ApiError> {
        let allowed: Vec<&str> = FILTER_PARAMS
            .iter()
            .copied()
            .chain(["format", "bodies"])
            .collect();
        let p = Params::parse(query, &allowed)?;
        let ndjson = match p.one("format")? {
            None | Some("json") => false,
            Some("ndjson") => true,
            Some(other) => {
                return Err(ApiError::invalid(
                    "format",
                    format!("format {other:?}: expected json or ndjson"),
                ))
            }
        };
        let filter = p.filter()?;
        let bodies = p.flag("bodies", true)?;
        let store = self.store()?.clone();
        let (tx, rx) = mpsc::channel(EXPORT_CHANNEL);
        tokio::spawn(export_task(store, filter, ndjson, bodies, tx));
        let (ctype, name) = if ndjson {
            ("application/x-ndjson", "llmtap-export.ndjson")
        } else {
            ("application/json", "llmtap-export.json")
        };
        let mut resp = Response::new(Either::Right(ExportBody { rx }));
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
        Ok(resp)
    }
}

/// A bucket giving at most about 600 points for the range.
fn auto_bucket(range_us: i64) -> Bucket {
    const HOUR: i64 = 3_600_000_000;
    match range_us {
        r if r <= 6 * HOUR => Bucket::Minute,
        r if r <= 48 * HOUR => Bucket::FiveMinutes,
        r if r <= 25 * 24 * HOUR => Bucket::Hour,
        _ => Bucket::Day,
    }
}

fn path_id<'a>(param: &str, id: &'a str) -> Result<&'a str, ApiError> {
    if id.is_empty() || id.len() > MAX_ID || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid(
            param,
            format!("{param} must be 1 to {MAX_ID} visible ASCII characters"),
        ));
    }
    Ok(id)
}

// === export ===

/// The streamed export body: frames from the export task's channel.
pub struct ExportBody {
    rx: mpsc::Receiver<Result<Bytes, ApiError>>,
}

impl http_body::Body for ExportBody {
    type Data = Bytes;
    type Error = ApiError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ApiError>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|r| r.map(Frame::data)))
    }
}

/// Pages through the matching spans (keyset on start time and span id)
/// and sends them as JSON array elements or NDJSON lines. Ends early when
/// the client goes away (the channel closes); a store error ends the body
/// with an error.
async fn export_task(
    store: Store,
    filter: SpanFilter,
    ndjson: bool,
    bodies: bool,
    tx: mpsc::Sender<Result<Bytes, ApiError>>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(EXPORT_CHUNK);
    if !ndjson {
        buf.push(b'[');
    }
    let mut first = true;
    let mut after: Option<SpanKey> = None;
    loop {
        let page = match store
            .spans_page(&filter, after.as_ref(), EXPORT_PAGE, bodies)
            .await
        {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(%error, "Export failed");
                let _ = tx.send(Err(ApiError::Store(error))).await;
                return;
            }
        };
        let full = page.len() == EXPORT_PAGE;
        after = page.last().map(|s: &Span| SpanKey {
            start_time_us: s.start_time_us,
            span_id: s.span_id.clone(),
        });
        for span in &page {
            if !ndjson && !std::mem::take(&mut first) {
                buf.push(b',');
            }
            // Writing plain data to a Vec cannot fail (non-finite floats
            // become null).
            let _ = serde_json::to_writer(&mut buf, span);
            if ndjson {
                buf.push(b'\n');
            }
            if buf.len() >= EXPORT_CHUNK {
                let chunk = Bytes::from(std::mem::replace(
                    &mut buf,
                    Vec::with_capacity(EXPORT_CHUNK),
                ));
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
        }
        if !full {
            break;
        }
    }
    if !ndjson {
        buf.push(b']');
    }
    if !buf.is_empty() {
        let _ = tx.send(Ok(Bytes::from(buf))).await;
    }
}

// === parameters ===

/// The span-level filter parameters (`/api/traces` and `/api/export`).
pub const FILTER_PARAMS: &[&str] = &[
    "from",
    "to",
    "status",
    "operation_type",
    "model",
    "provider",
    "min_duration_ms",
    "max_duration_ms",
    "session_id",
    "user_id",
    "conversation_id",
    "property",
    "q",
];
const STATUSES: &[&str] = &["completed", "failed", "cancelled"];

/// A decoded query string, checked against the names an endpoint knows.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Decodes `a=b&c=d` (percent-encoding and `+`), refusing names not in
    /// `allowed`.
    pub fn parse(query: Option<&str>, allowed: &[&str]) -> Result<Params, ApiError> {
        let mut pairs = Vec::new();
        for piece in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
            let name = percent_decode(k).ok_or_else(|| {
                ApiError::invalid(
                    "query",
                    "a parameter name is not valid percent-encoded UTF-8",
                )
            })?;
            if !allowed.contains(&name.as_str()) {
                let known = if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                };
                return Err(ApiError::invalid(
                    &name,
                    format!("unknown parameter {name:?} (known: {known})"),
                ));
            }
            let value = percent_decode(v).ok_or_else(|| {
                ApiError::invalid(&name, format!("{name}: not valid percent-encoded UTF-8"))
            })?;
            pairs.push((name, value));
            if pairs.len() > MAX_PARAMS {
                return Err(ApiError::invalid(
                    "query",
                    format!("more than {MAX_PARAMS} parameters"),
                ));
            }
        }
        Ok(Params { pairs })
    }

    /// A parameter given at most once; empty counts as absent.
    pub fn one(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut found = None;
        for (k, v) in &self.pairs {
            if k == name && !v.is_empty() {
                if found.is_some() {
                    return Err(ApiError::invalid(
                        name,
                        format!("{name} given more than once"),
                    ));
                }
                found = Some(v.as_str());
            }
        }
        Ok(found)
    }

    /// Every value of a repeatable parameter, comma-separated values split.
    fn list(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect()
    }

    fn time(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.one(name)?
            .map(|v| {
                parse_time(v).ok_or_else(|| {
                    ApiError::invalid(
                        name,
                        format!("{name} {v:?}: expected RFC 3339 (2025-01-31T12:00:00Z) or microseconds since the epoch"),
                    )
                })
            })
            .transpose()
    }

    fn limit(&self, name: &str, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.one(name)? {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid(name, format!("{name} {v:?}: expected 1 to {max}"))
                }),
        }
    }

    fn millis(&self, name: &str) -> Result<Option<f64>, ApiError> {
        self.one(name)?
            .map(|v| {
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| {
                        ApiError::invalid(name, format!("{name} {v:?}: expected milliseconds >= 0"))
                    })
            })
            .transpose()
    }

    fn flag(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        match self.one(name)? {
            None => Ok(default),
            Some("true" | "1") => Ok(true),
            Some("false" | "0") => Ok(false),
            Some(v) => Err(ApiError::invalid(
                name,
                format!("{name} {v:?}: expected true or false"),
            )),
        }
    }

    /// The span-level filters.
    pub fn filter(&self) -> Result<SpanFilter, ApiError> {
        let status = self.list("status");
        if let Some(bad) = status.iter().find(|s| !STATUSES.contains(&s.as_str())) {
            return Err(ApiError::invalid(
                "status",
                format!("status {bad:?}: expected completed, failed or cancelled"),
            ));
        }
        let mut properties = Vec::new();
        for (k, v) in self
            .pairs
            .iter()
            .filter(|(k, v)| k == "property" && !v.is_empty())
        {
            let (key, value) = v
                .split_once(':')
                .filter(|(key, _)| !key.is_empty() && !key.contains('"'))
                .ok_or_else(|| {
                    ApiError::invalid(k, format!("property {v:?}: expected key:value"))
                })?;
            properties.push((key.to_string(), value.to_string()));
        }
        let f = SpanFilter {
            from_us: self.time("from")?,
            to_us: self.time("to")?,
            status,
            operation_type: self.list("operation_type"),
            model: self.list("model"),
            provider: self.list("provider"),
            min_duration_ms: self.millis("min_duration_ms")?,
            max_duration_ms: self.millis("max_duration_ms")?,
            session_id: self.one("session_id")?.map(str::to_string),
            user_id: self.one("user_id")?.map(str::to_string),
            conversation_id: self.one("conversation_id")?.map(str::to_string),
            properties,
            q: self.one("q")?.map(str::to_string),
        };
        if let (Some(from), Some(to)) = (f.from_us, f.to_us) {
            if from >= to {
                return Err(ApiError::invalid("to", "to must be after from"));
            }
        }
        if let (Some(lo), Some(hi)) = (f.min_duration_ms, f.max_duration_ms) {
            if lo > hi {
                return Err(ApiError::invalid(
                    "max_duration_ms",
                    "max_duration_ms must not be below min_duration_ms",
                ));
            }
        }
        Ok(f)
    }
}

/// `%XX` and `+` decoded; `None` for a bad escape or non-UTF-8 result.
pub fn percent_decode(s: &str) -> Option<String> {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let h = b.get(i + 1..i + 3)?;
                out.push(hex(h[0])? << 4 | hex(h[1])?);
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Microseconds since the epoch from digits, or from RFC 3339
/// (`2025-01-31T12:00:00Z`, fractions and offsets allowed; a bare date is
/// its midnight UTC).
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let d = b.get(r)?;
        if d.is_empty() || !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        d.iter().try_fold(0i64, |n, &c| {
            n.checked_mul(10)?.checked_add(i64::from(c - b'0'))
        })
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    if b.len() == 10 {
        return days.checked_mul(86_400_000_000);
    }
    if !matches!(b.get(10), Some(b'T' | b't' | b' '))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut micros = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 6 {
                micros = micros * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        if i == start {
            return None;
        }
        for _ in (i - start)..6 {
            micros *= 10;
        }
    }
    let offset = match b.get(i) {
        Some(b'Z' | b'z') if b.len() == i + 1 => 0,
        Some(&sign @ (b'+' | b'-')) if b.len() == i + 6 && b[i + 3] == b':' => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let secs = days
        .checked_mul(86_400)?
        .checked_add(hour * 3600 + min * 60 + sec - offset)?;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The opaque cursor: hex of `t1:{start}:{trace_id}`.
pub fn encode_cursor(k: &TraceKey) -> String {
    crate::record::span::hex(format!("t1:{}:{}", k.start_time_us, k.trace_id).as_bytes())
}

pub fn decode_cursor(s: &str) -> Result<TraceKey, ApiError> {
    let bad = || ApiError::invalid("cursor", "cursor is not one this API returned");
    if !s.len().is_multiple_of(2) || s.len() > 2 * (MAX_ID + 32) {
        return Err(bad());
    }
    let bytes = (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let rest = text.strip_prefix("t1:").ok_or_else(bad)?;
    let (start, trace_id) = rest.split_once(':').ok_or_else(bad)?;
    let start_time_us = start.parse::<i64>().map_err(|_| bad())?;
    if trace_id.is_empty() {
        return Err(bad());
    }
    Ok(TraceKey {
        start_time_us,
        trace_id: trace_id.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_tokens() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3creT", b"s3cret"));
        assert!(!constant_time_eq(b"s3cre", b"s3cret"));
        assert!(!constant_time_eq(b"s3crett", b"s3cret"));
        // A prefix padded with the bytes the loop substitutes is not a match.
        assert!(!constant_time_eq(b"", b"\0"));
        assert!(!constant_time_eq(b"s3cret\0", b"s3cret"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn times_rfc3339_and_micros() {
        assert_eq!(parse_time("0"), Some(0));
        assert_eq!(parse_time("1700000000000000"), Some(1_700_000_000_000_000));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_time("1970-01-02"), Some(86_400_000_000));
        assert_eq!(
            parse_time("2024-02-29T12:34:56.789Z"),
            Some(1_709_210_096_789_000)
        );
        assert_eq!(
            parse_time("2024-02-29T14:34:56.789123456+02:00"),
            Some(1_709_210_096_789_123)
        );
        assert_eq!(
            parse_time("2024-02-29t12:34:56-00:30"),
            Some(1_709_211_896_000_000)
        );
        assert_eq!(parse_time("1969-12-31T23:59:59Z"), Some(-1_000_000));
        for bad in [
            "",
            "yesterday",
            "2023-02-29",
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+0200",
            "2024-01-01T00:00:00Zjunk",
            "99999999999999999999",
            "-5",
            "2024-01-01T00:00:00+24:00",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn query_decoding_and_unknown_names() {
        let p = Params::parse(
            Some("model=gpt-4o&status=failed,cancelled&q=50%25+off&property=team%3Asearch&model="),
            FILTER_PARAMS,
        )
        .unwrap();
        let f = p.filter().unwrap();
        assert_eq!(f.model, vec!["gpt-4o"]);
        assert_eq!(f.status, vec!["failed", "cancelled"]);
        assert_eq!(f.q.as_deref(), Some("50% off"));
        assert_eq!(
            f.properties,
            vec![("team".to_string(), "search".to_string())]
        );
        let param = |r: Result<Params, ApiError>| match r {
            Err(ApiError::InvalidParam { param, .. }) => param,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            param(Params::parse(Some("modle=x"), FILTER_PARAMS)),
            "modle"
        );
        assert_eq!(param(Params::parse(Some("q=%zz"), FILTER_PARAMS)), "q");
        assert_eq!(param(Params::parse(Some("q=%ff"), FILTER_PARAMS)), "q");
        let err = |q: &str| match Params::parse(Some(q), FILTER_PARAMS).unwrap().filter() {
            Err(ApiError::InvalidParam { param, .. }) => param,
            other => panic!("{q}: {other:?}"),
        };
        assert_eq!(err("status=running"), "status");
        assert_eq!(err("from=soon"), "from");
        assert_eq!(err("from=10&to=5"), "to");
        assert_eq!(err("min_duration_ms=-1"), "min_duration_ms");
        assert_eq!(
            err("min_duration_ms=5&max_duration_ms=1"),
            "max_duration_ms"
        );
        assert_eq!(err("property=novalue"), "property");
        assert_eq!(err("user_id=a&user_id=b"), "user_id");
        let many = vec![""; 3 * MAX_PARAMS].join("&");
        assert!(
            Params::parse(Some(&many), FILTER_PARAMS).is_ok(),
            "empty pieces are skipped"
        );
        let many = vec!["q=x"; MAX_PARAMS + 1].join("&");
        assert_eq!(param(Params::parse(Some(&many), FILTER_PARAMS)), "query");
    }

    #[test]
    fn cursors_round_trip_and_reject_forgeries() {
        let k = TraceKey {
            start_time_us: 1_700_000_000_123_456,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        };
        assert_eq!(decode_cursor(&encode_cursor(&k)).unwrap(), k);
        for bad in [
            "",
            "zz",
            "abc",
            &crate::record::span::hex(b"t2:1:x"),
            &crate::record::span::hex(b"t1:x:y"),
            &crate::record::span::hex(b"t1:5:"),
        ] {
            assert!(decode_cursor(bad).is_err(), "{bad:?}");
        }
    }

    /// (year, month, day) of days since 1970-01-01 (the inverse of
    /// `days_from_civil`).
    fn civil(z: i64) -> (i64, i64, i64) {
        let z = z + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        (yoe + era * 400 + i64::from(m <= 2), m, d)
    }

    proptest::proptest! {
        /// Any instant from year 1 to 9999, written in RFC 3339 with any
        /// offset, parses back to itself.
        #[test]
        fn rfc3339_round_trips(
            us in -62_135_596_800_000_000i64..253_402_214_400_000_000i64,
            offset_min in -(23 * 60 + 59)..=(23 * 60 + 59i64),
        ) {
            let local = us.div_euclid(1_000_000) + offset_min * 60;
            let (y, m, d) = civil(local.div_euclid(86_400));
            proptest::prop_assume!((1..=9999).contains(&y));
            let rem = local.rem_euclid(86_400);
            let sign = if offset_min < 0 { '-' } else { '+' };
            let text = format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}{sign}{:02}:{:02}",
                rem / 3600,
                rem / 60 % 60,
                rem % 60,
                us.rem_euclid(1_000_000),
                offset_min.abs() / 60,
                offset_min.abs() % 60
            );
            proptest::prop_assert_eq!(parse_time(&text), Some(us), "{}", text);
        }

        /// Arbitrary query strings and values never panic the parsers.
        #[test]
        fn parsers_take_any_input(s in "\\PC{0,64}", raw in proptest::collection::vec(0u8..=255, 0..64)) {
            let text = format!("{s}{}", String::from_utf8_lossy(&raw));
            if let Ok(p) = Params::parse(Some(&text), FILTER_PARAMS) {
                let _ = p.filter();
            }
            let _ = parse_time(&text);
            let _ = decode_cursor(&text);
            let _ = percent_decode(&text);
        }
    }

    #[tokio::test]
    async fn routes_auth_and_errors_without_a_store() {
        let api = Api {
            store: None,
            live: Some(Arc::new(Live::default())),
            token: Some("tok".into()),
            store_none: false,
        };
        let get = |path: &str, auth: Option<&str>| {
            let mut b = Request::builder().uri(path);
            if let Some(a) = auth {
                b = b.header("authorization", a);
            }
            b.body(()).unwrap()
        };
        let status = |r: Response<ApiBody>| r.status();
        assert_eq!(
            status(api.handle(&get("/api/live", None)).await),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(api.handle(&get("/api/live", Some("Bearer no"))).await),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(api.handle(&get("/api/live", Some("Basic tok"))).await),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            status(api.handle(&get("/api/live", Some("bearer tok"))).await),
            StatusCode::OK
        );
        assert_eq!(
            status(api.handle(&get("/api/nope", Some("Bearer tok"))).await),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            status(api.handle(&get("/api/traces", Some("Bearer tok"))).await),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(
                api.handle(&get("/api/stats?bucket=7s", Some("Bearer tok")))
                    .await
            ),
            StatusCode::BAD_REQUEST
        );
        let post = Request::builder()
            .method(Method::POST)
            .uri("/api/traces")
            .header("authorization", "Bearer tok")
            .body(())
            .unwrap();
        assert_eq!(
            status(api.handle(&post).await),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
