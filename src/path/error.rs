//! `ProxyError`: every way llmtap itself (not the provider) answers a request
//! with an error, and its one mapping to an HTTP status and an OpenAI-style
//! JSON body.
//!
//! Upstream 4xx/5xx responses are not `ProxyError`s: they are forwarded to the
//! client unchanged.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body_util::Full;

/// The `error_type` of a span whose response body was cut by the idle
/// timeout (the body error's message starts with it).
pub const IDLE_TIMEOUT: &str = "idle_timeout";

/// An error llmtap answers itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route for path {path}; configured prefixes: {}", prefixes.join(", "))]
    NoRoute { path: String, prefixes: Vec<String> },
    #[error("upstream {upstream} unreachable: {reason}")]
    UpstreamConnect { upstream: String, reason: String },
    #[error("TLS handshake with upstream {upstream} failed: {reason}")]
    UpstreamTls { upstream: String, reason: String },
    #[error("upstream {upstream} timed out after {after_ms} ms {phase}")]
    UpstreamTimeout {
        upstream: String,
        after_ms: u64,
        phase: &'static str,
    },
    #[error("upstream {upstream} failed: {reason}")]
    Upstream { upstream: String, reason: String },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("request body {} is over the limit of {limit} bytes (limits.max_body_bytes)", declared.map(|n| format!("of {n} bytes")).unwrap_or_else(|| "grew".to_string()))]
    BodyTooLarge { declared: Option<u64>, limit: u64 },
}

impl ProxyError {
    /// The HTTP status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::UpstreamConnect { .. }
            | ProxyError::UpstreamTls { .. }
            | ProxyError::Upstream { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// Machine-readable code: the JSON body's `code` and the span's
    /// `error_type`.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::NoRoute { .. } => "no_route",
            ProxyError::UpstreamConnect { .. } => "upstream_unreachable",
            ProxyError::UpstreamTls { .. } => "upstream_tls_error",
            ProxyError::UpstreamTimeout { .. } => "upstream_timeout",
            ProxyError::Upstream { .. } => "upstream_error",
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::BodyTooLarge { .. } => "request_too_large",
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            ProxyError::NoRoute { .. }
            | ProxyError::BadRequest(_)
            | ProxyError::BodyTooLarge { .. } => "invalid_request_error",
            _ => "upstream_error",
        }
    }

    /// `{"error":{"message":…,"type":…,"param":null,"code":…}}`.
    pub fn body(&self) -> Bytes {
        let body = serde_json::json!({
            "error": {
                "message": self.to_string(),
                "type": self.kind(),
                "param": null,
                "code": self.code(),
            }
        });
        Bytes::from(body.to_string())
    }

    /// The full response.
    pub fn to_response(&self) -> Response<Full<Bytes>> {
        json_response(self.status(), self.body())
    }
}

/// A JSON response with the given status and body.
pub fn json_response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_route_lists_prefixes_in_openai_shape() {
        let e = ProxyError::NoRoute {
            path: "/x".into(),
            prefixes: vec!["/v1".into(), "/anthropic".into()],
        };
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("/v1") && msg.contains("/anthropic"), "{msg}");
        assert_eq!(v["error"]["code"], "no_route");
        assert!(v["error"]["param"].is_null());
    }

    #[test]
    fn statuses() {
        let t = ProxyError::UpstreamTimeout {
            upstream: "u".into(),
            after_ms: 5,
            phase: "waiting for response headers",
        };
        assert_eq!(t.status(), StatusCode::GATEWAY_TIMEOUT);
        let c = ProxyError::UpstreamConnect {
            upstream: "u".into(),
            reason: "refused".into(),
        };
        assert_eq!(c.status(), StatusCode::BAD_GATEWAY);
        let big = ProxyError::BodyTooLarge {
            declared: Some(10),
            limit: 5,
        };
        assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            big.to_string(),
            "request body of 10 bytes is over the limit of 5 bytes (limits.max_body_bytes)"
        );
    }
}
