//! Providers: pure code that turns a format's request JSON, response JSON
//! and stream events into span fields. No I/O, no clocks, no shared state.
//!
//! Each format lives in its own file; this file holds what they share and
//! the classification of an upstream path into an endpoint.

pub mod openai;

use serde::Deserialize;

use crate::config::Format;

/// Token counts as reported (or estimated).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: Option<i64>,
    pub output: Option<i64>,
    pub cached_input: Option<i64>,
    pub cache_write: Option<i64>,
    pub reasoning: Option<i64>,
}

/// What kind of call an exchange is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// OpenAI Chat Completions (and compatible servers).
    OpenAiChat,
    /// Anything else under a route: timing and status only.
    Other,
}

impl Endpoint {
    /// Classifies by format and the path the provider sees.
    pub fn classify(format: Format, method: &http::Method, upstream_path: &str) -> Endpoint {
        if method != http::Method::POST {
            return Endpoint::Other;
        }
        let path = upstream_path.trim_end_matches('/');
        match format {
            Format::Openai if path.ends_with("/chat/completions") => Endpoint::OpenAiChat,
            _ => Endpoint::Other,
        }
    }

    /// The span's `operation_type`.
    pub fn operation_type(self) -> &'static str {
        match self {
            Endpoint::OpenAiChat => "llm_call",
            Endpoint::Other => "http",
        }
    }

    /// OpenTelemetry `gen_ai.operation.name`, used in the span name.
    pub fn operation_name(self) -> Option<&'static str> {
        match self {
            Endpoint::OpenAiChat => Some("chat"),
            Endpoint::Other => None,
        }
    }
}

/// What a request says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    pub model: Option<String>,
    pub stream: bool,
    /// The request asked for a usage chunk at the end of the stream.
    pub include_usage: bool,
    /// The body's end-user field (OpenAI `user`).
    pub user: Option<String>,
}

/// An error object reported by the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub kind: Option<String>,
    pub message: String,
}

/// What a (whole or streamed) response said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResponseFacts {
    pub response_id: Option<String>,
    pub response_model: Option<String>,
    pub finish_reason: Option<String>,
    pub usage: Usage,
    pub error: Option<ApiError>,
    /// The generated text seen, to estimate output tokens from when `usage`
    /// has no output count (counted later, off the request path).
    pub output_text: Option<crate::tokens::StreamCounter>,
}

/// Reads `{"error": {"message", "type"|"code"}}` (OpenAI and Anthropic both
/// use this shape), or a bare string `error`.
pub fn parse_error_body(body: &[u8]) -> Option<ApiError> {
    #[derive(Deserialize)]
    struct Wrapper {
        error: ErrorField,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ErrorField {
        Object {
            #[serde(default)]
            message: Option<String>,
            #[serde(default, rename = "type")]
            kind: Option<String>,
            #[serde(default)]
            code: Option<serde_json::Value>,
        },
        Text(String),
    }
    let w: Wrapper = serde_json::from_slice(body).ok()?;
    Some(match w.error {
        ErrorField::Object {
            message,
            kind,
            code,
        } => {
            let code = code.and_then(|c| match c {
                serde_json::Value::String(s) => Some(s),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            });
            ApiError {
                kind: kind.or(code),
                message: message.unwrap_or_default(),
            }
        }
        ErrorField::Text(message) => ApiError {
            kind: None,
            message,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify() {
        let post = http::Method::POST;
        assert_eq!(
            Endpoint::classify(Format::Openai, &post, "/v1/chat/completions"),
            Endpoint::OpenAiChat
        );
        assert_eq!(
            Endpoint::classify(Format::Openai, &http::Method::GET, "/v1/chat/completions"),
            Endpoint::Other
        );
        assert_eq!(
            Endpoint::classify(Format::Openai, &post, "/v1/embeddings"),
            Endpoint::Other
        );
    }

    #[test]
    fn error_shapes() {
        let e = parse_error_body(br#"{"error":{"message":"Rate limit","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#).unwrap();
        assert_eq!(e.kind.as_deref(), Some("requests"));
        assert_eq!(e.message, "Rate limit");
        let e = parse_error_body(
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )
        .unwrap();
        assert_eq!(e.kind.as_deref(), Some("overloaded_error"));
        let e = parse_error_body(br#"{"error":{"message":"x","code":429}}"#).unwrap();
        assert_eq!(e.kind.as_deref(), Some("429"));
        assert_eq!(
            parse_error_body(br#"{"error":"boom"}"#).unwrap().message,
            "boom"
        );
        assert!(parse_error_body(b"not json").is_none());
    }
}
