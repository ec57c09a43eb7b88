//! API: the JSON query API under `/api/` on the admin listener — routing,
//! the bearer-token check and the responses (JSON, or a streamed export,
//! `export.rs`). Query strings are read by `params.rs` (times by
//! `time.rs`).
//!
//! Owns the HTTP side only: the SQL lives in `store` (`query.rs`,
//! `stats.rs`), exchanges in flight in `live`. Every bad parameter is a 400
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

mod export;
mod params;
mod time;

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::output::store::{Bucket, StatsQuery, Store, StoreError, TraceQuery, MAX_BUCKETS};
use crate::record::live::Live;

use export::{export_task, EXPORT_CHANNEL};
pub use export::{ExportBody, EXPORT_PAGE};
pub use params::{
    decode_cursor, encode_cursor, percent_decode, Params, DEFAULT_LIMIT, FILTER_PARAMS, MAX_LIMIT,
};
pub use time::parse_time;

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
