//! Providers: pure code that turns a format's request JSON, response JSON
//! and stream events into span fields. No I/O, no clocks, no shared state.
//!
//! Each format lives in its own file (`openai` for Chat Completions, legacy
//! Completions and Embeddings; `responses` for OpenAI's Responses API;
//! `anthropic` for Messages). This file holds what they share: the
//! classification of an upstream path into an endpoint, the request fields
//! every format names the same way, and the dispatch to the right parser.
//! `messages` reads captured bodies into the conversation they carry (for
//! the OTLP export and the admin UI) with these same parsers.

pub mod anthropic;
pub mod messages;
pub mod openai;
pub mod responses;

use std::borrow::Cow;

use serde::Deserialize;

use crate::config::Format;
use crate::record::tokens::{Encoding, StreamCounter};

pub use crate::record::span::Usage;

/// What kind of call an exchange is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// OpenAI Chat Completions (and compatible servers, Azure included).
    Chat,
    /// OpenAI Responses API.
    Responses,
    /// OpenAI Embeddings.
    Embeddings,
    /// OpenAI legacy Completions.
    Completions,
    /// Anthropic Messages.
    Messages,
    /// Anthropic `messages/count_tokens`.
    CountTokens,
    /// Anything else under a route: timing and status only.
    Other(&'static str),
}

impl Endpoint {
    /// Classifies by format, method and the path the provider sees.
    pub fn classify(format: Format, method: &http::Method, upstream_path: &str) -> Endpoint {
        let path = upstream_path.trim_end_matches('/');
        if method == http::Method::POST {
            let found = match format {
                Format::Openai if path.ends_with("/chat/completions") => Some(Endpoint::Chat),
                Format::Openai if path.ends_with("/responses") => Some(Endpoint::Responses),
                Format::Openai if path.ends_with("/embeddings") => Some(Endpoint::Embeddings),
                Format::Openai if path.ends_with("/completions") => Some(Endpoint::Completions),
                Format::Anthropic if path.ends_with("/messages/count_tokens") => {
                    Some(Endpoint::CountTokens)
                }
                Format::Anthropic if path.ends_with("/messages") => Some(Endpoint::Messages),
                _ => None,
            };
            if let Some(e) = found {
                return e;
            }
        }
        let kind = if path.contains("/audio/") {
            "audio"
        } else if path.contains("/images/") {
            "image"
        } else if path.contains("/files") || path.contains("/uploads") {
            "file"
        } else if path.contains("/moderations") {
            "moderation"
        } else if path.contains("/models") {
            "models"
        } else if path.contains("/batches") {
            "batch"
        } else {
            "http"
        };
        Endpoint::Other(kind)
    }

    /// The span's `operation_type`.
    pub fn operation_type(self) -> &'static str {
        match self {
            Endpoint::Chat | Endpoint::Responses | Endpoint::Completions | Endpoint::Messages => {
                "llm_call"
            }
            Endpoint::Embeddings => "embedding",
            Endpoint::CountTokens => "count_tokens",
            Endpoint::Other(kind) => kind,
        }
    }

    /// OpenTelemetry `gen_ai.operation.name`, used in the span name.
    pub fn operation_name(self) -> Option<&'static str> {
        match self {
            Endpoint::Chat | Endpoint::Responses | Endpoint::Messages => Some("chat"),
            Endpoint::Completions => Some("text_completion"),
            Endpoint::Embeddings => Some("embeddings"),
            Endpoint::CountTokens => Some("count_tokens"),
            Endpoint::Other(_) => None,
        }
    }

    /// True when the request body is JSON worth parsing.
    pub fn parses_request(self) -> bool {
        !matches!(self, Endpoint::Other(_))
    }
}

/// Azure OpenAI names the model in the path:
/// `/openai/deployments/{deployment}/…` → the deployment name.
pub fn model_from_path(upstream_path: &str) -> Option<&str> {
    let rest = upstream_path.split("/deployments/").nth(1)?;
    let name = rest.split('/').next()?;
    (!name.is_empty()).then_some(name)
}

/// What a request says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    pub model: Option<String>,
    pub stream: bool,
    /// The request asked for a usage chunk at the end of the stream.
    pub include_usage: bool,
    /// The end user: OpenAI `user` (or `safety_identifier`), Anthropic
    /// `metadata.user_id`.
    pub user: Option<String>,
}

#[derive(Deserialize)]
struct AnyRequest<'a> {
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default, borrow)]
    user: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    safety_identifier: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    metadata: Option<Metadata<'a>>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Deserialize)]
struct Metadata<'a> {
    #[serde(default, borrow)]
    user_id: Option<Cow<'a, str>>,
}

/// Model, stream flag and user from any supported request body. Fields of
/// an unexpected type make the whole body unreadable (None), never a panic.
pub fn parse_request(body: &[u8]) -> Option<RequestFacts> {
    let r: AnyRequest = serde_json::from_slice(body).ok()?;
    let stream = r.stream.unwrap_or(false);
    let include_usage = stream
        && r.stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
    let user = r
        .user
        .or(r.safety_identifier)
        .or(r.metadata.and_then(|m| m.user_id))
        .map(Cow::into_owned);
    Some(RequestFacts {
        model: r.model.map(Cow::into_owned),
        stream,
        include_usage,
        user,
    })
}

/// The request's history, reduced for stitching (`None` for formats that
/// have none).
pub fn conversation(
    endpoint: Endpoint,
    body: &[u8],
) -> Option<crate::record::stitch::Conversation> {
    let value = || serde_json::from_slice::<serde_json::Value>(body).ok();
    match endpoint {
        Endpoint::Chat => openai::conversation(body),
        Endpoint::Messages => anthropic::conversation(&value()?),
        Endpoint::Responses => responses::conversation(&value()?),
        _ => None,
    }
}

/// Most bytes of one tool result kept.
pub const MAX_TOOL_RESULT: usize = 64 * 1024;

/// The text of a message `content`: a string, or the `text` of its parts
/// (blocks joined by a separator), into a digest.
pub(crate) fn digest_content(
    d: &mut crate::record::stitch::TextDigest,
    content: Option<&serde_json::Value>,
) {
    match content {
        Some(serde_json::Value::String(s)) => d.push(s),
        Some(serde_json::Value::Array(parts)) => {
            for p in parts {
                let kind = p.get("type").and_then(|t| t.as_str()).unwrap_or("text");
                if matches!(kind, "text" | "input_text" | "output_text") {
                    if let Some(t) = p.get("text").and_then(|t| t.as_str()) {
                        d.separate();
                        d.push(t);
                    }
                }
            }
        }
        _ => {}
    }
}

/// A tool result's content as text (string, or the text of its parts),
/// capped.
pub(crate) fn result_text(content: Option<&serde_json::Value>) -> String {
    let mut out = String::new();
    match content {
        Some(serde_json::Value::String(s)) => push_capped(&mut out, s, MAX_TOOL_RESULT),
        Some(serde_json::Value::Array(parts)) => {
            for p in parts {
                if let Some(t) = p.get("text").and_then(|t| t.as_str()) {
                    push_capped(&mut out, t, MAX_TOOL_RESULT);
                }
            }
        }
        Some(other) if !other.is_null() => {
            push_capped(&mut out, &other.to_string(), MAX_TOOL_RESULT)
        }
        _ => {}
    }
    out
}

/// Estimated input tokens of a request, for when the response reports none.
pub fn estimate_input(endpoint: Endpoint, body: &[u8], enc: Encoding) -> Option<i64> {
    match endpoint {
        Endpoint::Chat => openai::estimate_chat_input(body, enc),
        Endpoint::Completions | Endpoint::Embeddings => openai::estimate_prompt_input(body, enc),
        Endpoint::Responses => responses::estimate_input(body, enc),
        Endpoint::Messages | Endpoint::CountTokens => anthropic::estimate_input(body, enc),
        Endpoint::Other(_) => None,
    }
}

/// An error object reported by the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub kind: Option<String>,
    pub message: String,
}

/// A tool call the model asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// JSON text of the arguments (capped at `MAX_TOOL_ARGS`).
    pub arguments: String,
}

/// Most bytes of one tool call's arguments kept.
pub const MAX_TOOL_ARGS: usize = 64 * 1024;
/// Most tool calls kept per response.
pub const MAX_TOOL_CALLS: usize = 128;

/// Appends to a capped string.
pub(crate) fn push_capped(s: &mut String, more: &str, cap: usize) {
    let room = cap.saturating_sub(s.len());
    if more.len() <= room {
        s.push_str(more);
    } else {
        let mut cut = room;
        while cut > 0 && !more.is_char_boundary(cut) {
            cut -= 1;
        }
        s.push_str(&more[..cut]);
    }
}

/// What a (whole or streamed) response said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResponseFacts {
    pub response_id: Option<String>,
    pub response_model: Option<String>,
    pub finish_reason: Option<String>,
    pub usage: Usage,
    pub error: Option<ApiError>,
    /// Tool calls the response asked for, in order.
    pub tool_calls: Vec<ToolCall>,
    /// The generated text seen, to estimate output tokens from when `usage`
    /// has no output count (counted later, off the request path).
    pub output_text: Option<StreamCounter>,
    /// Digest of the assistant's reply as the next request will repeat it
    /// (see `stitch`). `None` for formats stitched by response id.
    pub assistant_digest: Option<u64>,
}

/// Span fields of a whole (non-streamed, 2xx) JSON response.
pub fn parse_response(endpoint: Endpoint, body: &[u8], enc: Encoding) -> Option<ResponseFacts> {
    match endpoint {
        Endpoint::Chat | Endpoint::Completions => openai::parse_chat_response(body, enc),
        Endpoint::Embeddings => openai::parse_embeddings_response(body),
        Endpoint::Responses => responses::parse_response(body, enc),
        Endpoint::Messages => anthropic::parse_response(body, enc),
        Endpoint::CountTokens => anthropic::parse_count_tokens(body),
        Endpoint::Other(_) => None,
    }
}

/// An incremental parser of one streamed response's SSE events.
#[derive(Debug)]
pub enum StreamParser {
    /// Chat Completions and legacy Completions chunks.
    Chat(openai::ChatStream),
    Responses(responses::ResponsesStream),
    Messages(anthropic::MessagesStream),
}

impl StreamParser {
    /// The parser for a streamed response of `endpoint`, if it streams.
    /// `count_text`: keep the generated text for estimation.
    pub fn for_endpoint(endpoint: Endpoint, enc: Encoding, count_text: bool) -> Option<Self> {
        match endpoint {
            Endpoint::Chat | Endpoint::Completions => {
                Some(StreamParser::Chat(openai::ChatStream::new(enc, count_text)))
            }
            Endpoint::Responses => Some(StreamParser::Responses(responses::ResponsesStream::new(
                enc,
            ))),
            Endpoint::Messages => Some(StreamParser::Messages(anthropic::MessagesStream::new(enc))),
            _ => None,
        }
    }

    /// The parser of a recorded stream being replayed for its messages
    /// (see `messages`); never used on the request path.
    pub fn for_messages(endpoint: Endpoint) -> Option<Self> {
        let enc = Encoding::O200k;
        Some(match Self::for_endpoint(endpoint, enc, false)? {
            StreamParser::Chat(s) => StreamParser::Chat(s.with_messages()),
            StreamParser::Responses(s) => StreamParser::Responses(s.with_messages()),
            StreamParser::Messages(s) => StreamParser::Messages(s.with_messages()),
        })
    }

    /// The messages a parser made by [`StreamParser::for_messages`] kept
    /// (`None` from any other, or when the stream showed none).
    pub fn into_messages(self) -> Option<messages::Messages> {
        match self {
            StreamParser::Chat(s) => s.into_messages(),
            StreamParser::Responses(s) => s.into_messages(),
            StreamParser::Messages(s) => s.into_messages(),
        }
    }

    /// One event. Returns true when it carried generated content (the first
    /// such event marks time to first token).
    pub fn on_event(&mut self, event: &str, data: &[u8]) -> bool {
        match self {
            StreamParser::Chat(s) => s.on_event(data),
            StreamParser::Responses(s) => s.on_event(event, data),
            StreamParser::Messages(s) => s.on_event(event, data),
        }
    }

    /// True when the stream reached its protocol-level end (`[DONE]`,
    /// `response.completed`, `message_stop`, ...).
    pub fn saw_end(&self) -> bool {
        match self {
            StreamParser::Chat(s) => s.done,
            StreamParser::Responses(s) => s.done,
            StreamParser::Messages(s) => s.done,
        }
    }

    /// The span fields seen so far (a cut stream keeps what it saw).
    pub fn finish(self) -> ResponseFacts {
        match self {
            StreamParser::Chat(s) => s.finish(),
            StreamParser::Responses(s) => s.finish(),
            StreamParser::Messages(s) => s.finish(),
        }
    }
}

/// SSE bytes to span fields: the SSE parser feeding a format's stream
/// parser. Fed frame by frame; frame boundaries never change the result.
#[derive(Debug)]
pub struct EventStream {
    sse: crate::record::sse::SseParser,
    parser: StreamParser,
}

impl EventStream {
    /// `max_event_bytes` caps one event (larger ones are skipped).
    pub fn new(parser: StreamParser, max_event_bytes: usize) -> Self {
        EventStream {
            sse: crate::record::sse::SseParser::new(max_event_bytes),
            parser,
        }
    }

    /// Feeds (decoded) bytes. Returns true when any completed event carried
    /// generated content.
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        let parser = &mut self.parser;
        let mut content = false;
        self.sse.feed(bytes, &mut |event| {
            content |= parser.on_event(event.event, event.data);
        });
        content
    }

    /// True when the stream reached its protocol-level end.
    pub fn saw_end(&self) -> bool {
        self.parser.saw_end()
    }

    /// The span fields seen so far.
    pub fn finish(self) -> ResponseFacts {
        self.parser.finish()
    }

    /// The messages kept (see [`StreamParser::into_messages`]).
    pub fn into_messages(self) -> Option<messages::Messages> {
        self.parser.into_messages()
    }
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
        Object(ErrorObject),
        Text(String),
    }
    let w: Wrapper = serde_json::from_slice(body).ok()?;
    Some(match w.error {
        ErrorField::Object(o) => o.to_api_error(),
        ErrorField::Text(message) => ApiError {
            kind: None,
            message,
        },
    })
}

/// The error object shape shared by OpenAI and Anthropic.
#[derive(Deserialize, Debug, Default)]
pub(crate) struct ErrorObject {
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    code: Option<serde_json::Value>,
}

impl ErrorObject {
    pub(crate) fn to_api_error(&self) -> ApiError {
        let code = match &self.code {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        ApiError {
            kind: self.kind.clone().or(code),
            message: self.message.clone().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify() {
        let post = http::Method::POST;
        let c = |f, p| Endpoint::classify(f, &post, p);
        assert_eq!(c(Format::Openai, "/v1/chat/completions"), Endpoint::Chat);
        assert_eq!(
            c(Format::Openai, "/openai/deployments/gpt4o/chat/completions"),
            Endpoint::Chat
        );
        assert_eq!(c(Format::Openai, "/v1/completions"), Endpoint::Completions);
        assert_eq!(c(Format::Openai, "/v1/responses"), Endpoint::Responses);
        assert_eq!(c(Format::Openai, "/v1/embeddings"), Endpoint::Embeddings);
        assert_eq!(c(Format::Anthropic, "/v1/messages"), Endpoint::Messages);
        assert_eq!(
            c(Format::Anthropic, "/v1/messages/count_tokens"),
            Endpoint::CountTokens
        );
        assert_eq!(
            c(Format::Openai, "/v1/audio/speech"),
            Endpoint::Other("audio")
        );
        assert_eq!(
            c(Format::Openai, "/v1/images/generations"),
            Endpoint::Other("image")
        );
        assert_eq!(
            Endpoint::classify(Format::Openai, &http::Method::GET, "/v1/chat/completions"),
            Endpoint::Other("http")
        );
        assert_eq!(
            Endpoint::classify(Format::Openai, &http::Method::GET, "/v1/models"),
            Endpoint::Other("models")
        );
        assert_eq!(Endpoint::Embeddings.operation_type(), "embedding");
        assert_eq!(Endpoint::Messages.operation_name(), Some("chat"));
    }

    #[test]
    fn azure_model_from_path() {
        assert_eq!(
            model_from_path("/openai/deployments/my-gpt4o/chat/completions"),
            Some("my-gpt4o")
        );
        assert_eq!(model_from_path("/v1/chat/completions"), None);
    }

    #[test]
    fn request_fields_across_formats() {
        let f = parse_request(
            br#"{"model":"gpt-4o","messages":[],"stream":true,"stream_options":{"include_usage":true},"user":"u1"}"#,
        )
        .unwrap();
        assert_eq!(f.model.as_deref(), Some("gpt-4o"));
        assert!(f.stream && f.include_usage);
        assert_eq!(f.user.as_deref(), Some("u1"));
        let f = parse_request(br#"{"model":"m","stream_options":{"include_usage":true}}"#).unwrap();
        assert!(!f.stream && !f.include_usage);
        let f = parse_request(
            br#"{"model":"claude-sonnet-4-5","metadata":{"user_id":"a-1"},"max_tokens":5}"#,
        )
        .unwrap();
        assert_eq!(f.user.as_deref(), Some("a-1"));
        assert!(parse_request(b"{nope").is_none());
        assert!(parse_request(br#"{"model": 5}"#).is_none());
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

    #[test]
    fn a_100_mb_line_costs_no_more_than_the_event_cap() {
        let parser = StreamParser::for_endpoint(Endpoint::Chat, Encoding::O200k, true).unwrap();
        let cap = 64 * 1024;
        let mut s = EventStream::new(parser, cap);
        s.feed(b"data: {\"id\":\"");
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..100 {
            s.feed(&chunk);
            // The parser holds at most the cap, whatever arrives.
            assert!(format!("{:?}", s.sse).len() < 8 * cap);
        }
        s.feed(b"\"}\n\ndata: {\"id\":\"after\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"}}]}\n\ndata: [DONE]\n\n");
        assert!(s.saw_end());
        let f = s.finish();
        assert_eq!(f.response_id.as_deref(), Some("after"));
    }

    #[test]
    fn capped_push_respects_char_boundaries() {
        let mut s = String::new();
        push_capped(&mut s, "héllo", 2);
        assert_eq!(s, "h");
        push_capped(&mut s, "abc", 3);
        assert_eq!(s, "hab");
    }
}
