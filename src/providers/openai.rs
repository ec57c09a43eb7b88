//! OpenAI Chat Completions (and OpenAI-compatible servers): request, response
//! and stream chunks to span fields.

use std::borrow::Cow;

use serde::Deserialize;

use super::{ApiError, RequestFacts, ResponseFacts, Usage};
use crate::tokens::{self, Encoding, StreamCounter};

// === wire types (only the fields llmtap reads; unknown fields ignored) ===

#[derive(Deserialize)]
struct ChatRequest<'a> {
    #[serde(default, borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default, borrow)]
    user: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(Deserialize, Default)]
struct OaUsage {
    #[serde(default)]
    prompt_tokens: Option<i64>,
    #[serde(default)]
    completion_tokens: Option<i64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize, Default)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<i64>,
}

#[derive(Deserialize, Default)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<i64>,
}

impl OaUsage {
    fn to_usage(&self) -> Usage {
        Usage {
            input: self.prompt_tokens,
            output: self.completion_tokens,
            cached_input: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens),
            cache_write: None,
            reasoning: self
                .completion_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens),
        }
    }
}

#[derive(Deserialize)]
struct ErrorObj {
    #[serde(default)]
    message: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    code: Option<serde_json::Value>,
}

impl ErrorObj {
    fn to_api_error(&self) -> ApiError {
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

#[derive(Deserialize)]
struct ChatResponse<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default, borrow)]
    choices: Option<Vec<Choice<'a>>>,
    #[serde(default)]
    usage: Option<OaUsage>,
    #[serde(default)]
    error: Option<ErrorObj>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    message: Option<Message<'a>>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(default, borrow)]
    function: Option<Function<'a>>,
}

#[derive(Deserialize)]
struct Function<'a> {
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default, borrow)]
    choices: Option<Vec<ChunkChoice<'a>>>,
    #[serde(default)]
    usage: Option<OaUsage>,
    #[serde(default)]
    error: Option<ErrorObj>,
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<ToolCall<'a>>>,
}

// === requests ===

/// Model, stream flag and user from a chat request body.
pub fn parse_chat_request(body: &[u8]) -> Option<RequestFacts> {
    let r: ChatRequest = serde_json::from_slice(body).ok()?;
    let stream = r.stream.unwrap_or(false);
    Some(RequestFacts {
        model: r.model.map(Cow::into_owned),
        stream,
        include_usage: stream
            && r.stream_options
                .and_then(|o| o.include_usage)
                .unwrap_or(false),
        user: r.user.map(Cow::into_owned),
    })
}

/// Estimated prompt tokens of a chat request, with OpenAI's counting rule
/// (3 tokens per message, 1 per name, 3 to prime the reply) plus the tool
/// definitions as JSON text.
pub fn estimate_chat_input(body: &[u8], enc: Encoding) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let messages = v.get("messages")?.as_array()?;
    let mut total = 3usize;
    for m in messages {
        total += 3;
        if let Some(role) = m.get("role").and_then(|r| r.as_str()) {
            total += tokens::count(enc, role);
        }
        if let Some(name) = m.get("name").and_then(|r| r.as_str()) {
            total += 1 + tokens::count(enc, name);
        }
        match m.get("content") {
            Some(serde_json::Value::String(s)) => total += tokens::count(enc, s),
            Some(serde_json::Value::Array(parts)) => {
                for p in parts {
                    if let Some(t) = p.get("text").and_then(|t| t.as_str()) {
                        total += tokens::count(enc, t);
                    }
                }
            }
            _ => {}
        }
        if let Some(calls) = m.get("tool_calls").and_then(|c| c.as_array()) {
            for c in calls {
                if let Some(f) = c.get("function") {
                    for key in ["name", "arguments"] {
                        if let Some(s) = f.get(key).and_then(|s| s.as_str()) {
                            total += tokens::count(enc, s);
                        }
                    }
                }
            }
        }
    }
    if let Some(tools) = v.get("tools") {
        total += tokens::count(enc, &tools.to_string());
    }
    Some(total as i64)
}

// === whole responses ===

/// Span fields of a non-streamed chat response. When it reports no output
/// tokens, the generated text is kept for estimation.
pub fn parse_chat_response(body: &[u8], enc: Encoding) -> Option<ResponseFacts> {
    let r: ChatResponse = serde_json::from_slice(body).ok()?;
    let mut facts = ResponseFacts {
        response_id: r.id,
        response_model: r.model,
        usage: r.usage.as_ref().map(OaUsage::to_usage).unwrap_or_default(),
        error: r.error.as_ref().map(ErrorObj::to_api_error),
        ..ResponseFacts::default()
    };
    let choices = r.choices.unwrap_or_default();
    facts.finish_reason = choices.iter().find_map(|c| c.finish_reason.clone());
    if facts.usage.output.is_none() && facts.error.is_none() {
        let mut counter = StreamCounter::new(enc);
        for c in &choices {
            if let Some(m) = &c.message {
                for text in [&m.content, &m.refusal].into_iter().flatten() {
                    counter.push(text);
                }
                for call in m.tool_calls.iter().flatten() {
                    if let Some(f) = &call.function {
                        for text in [&f.name, &f.arguments].into_iter().flatten() {
                            counter.push(text);
                        }
                    }
                }
            }
        }
        facts.output_text = Some(counter);
    }
    Some(facts)
}

// === streams ===

/// Accumulates a streamed chat completion, one SSE event at a time.
#[derive(Debug)]
pub struct ChatStream {
    facts: ResponseFacts,
    /// Counts generated text when the stream may end without usage.
    counter: Option<StreamCounter>,
    /// `data: [DONE]` was seen.
    pub done: bool,
    /// Events whose data was not a JSON chunk.
    pub malformed_events: u64,
}

impl ChatStream {
    /// `count_text`: keep an estimate of output tokens (when the request did
    /// not ask for a usage chunk).
    pub fn new(enc: Encoding, count_text: bool) -> Self {
        ChatStream {
            facts: ResponseFacts::default(),
            counter: count_text.then(|| StreamCounter::new(enc)),
            done: false,
            malformed_events: 0,
        }
    }

    /// Takes one event's data. Returns true when it carried generated
    /// content (text, refusal, reasoning or tool-call fragments): the first
    /// such event marks time to first token.
    pub fn on_event(&mut self, data: &[u8]) -> bool {
        if data == b"[DONE]" {
            self.done = true;
            return false;
        }
        let chunk: Chunk = match serde_json::from_slice(data) {
            Ok(c) => c,
            Err(_) => {
                self.malformed_events += 1;
                return false;
            }
        };
        if self.facts.response_id.is_none() {
            self.facts.response_id = chunk.id;
        }
        if self.facts.response_model.is_none() {
            self.facts.response_model = chunk.model;
        }
        if let Some(u) = &chunk.usage {
            self.facts.usage = u.to_usage();
        }
        if let Some(e) = &chunk.error {
            self.facts.error = Some(e.to_api_error());
        }
        let mut content = false;
        for choice in chunk.choices.iter().flatten() {
            if let Some(fr) = &choice.finish_reason {
                self.facts.finish_reason = Some(fr.clone());
            }
            let Some(delta) = &choice.delta else { continue };
            for text in [&delta.content, &delta.refusal, &delta.reasoning_content]
                .into_iter()
                .flatten()
            {
                if !text.is_empty() {
                    content = true;
                    if let Some(c) = &mut self.counter {
                        c.push(text);
                    }
                }
            }
            for call in delta.tool_calls.iter().flatten() {
                content = true;
                if let (Some(f), Some(c)) = (&call.function, &mut self.counter) {
                    for text in [&f.name, &f.arguments].into_iter().flatten() {
                        c.push(text);
                    }
                }
            }
        }
        content
    }

    /// The span fields seen so far (a cut stream keeps what it saw).
    pub fn finish(mut self) -> ResponseFacts {
        if self.facts.usage.output.is_none() {
            self.facts.output_text = self.counter.take();
        }
        self.facts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_fields() {
        let f = parse_chat_request(
            br#"{"model":"gpt-4o","messages":[],"stream":true,"stream_options":{"include_usage":true},"user":"u1"}"#,
        )
        .unwrap();
        assert_eq!(f.model.as_deref(), Some("gpt-4o"));
        assert!(f.stream && f.include_usage);
        assert_eq!(f.user.as_deref(), Some("u1"));
        let f = parse_chat_request(br#"{"model":"m","stream_options":{"include_usage":true}}"#)
            .unwrap();
        assert!(!f.stream && !f.include_usage);
        assert!(parse_chat_request(b"{nope").is_none());
    }

    #[test]
    fn input_estimate_follows_the_cookbook_rule() {
        // "You are helpful." = 4 tokens, "Hi" = 1, roles 1 each:
        // 3 + (3+1+4) + (3+1+1) = 16.
        let n = estimate_chat_input(
            br#"{"model":"gpt-4o","messages":[{"role":"system","content":"You are helpful."},{"role":"user","content":"Hi"}]}"#,
            Encoding::O200k,
        )
        .unwrap();
        assert_eq!(n, 16);
    }

    #[test]
    fn response_with_usage() {
        let body = br#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-2024-08-06","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":1}}}"#;
        let f = parse_chat_response(body, Encoding::O200k).unwrap();
        assert_eq!(f.response_id.as_deref(), Some("chatcmpl-1"));
        assert_eq!(f.response_model.as_deref(), Some("gpt-4o-2024-08-06"));
        assert_eq!(f.finish_reason.as_deref(), Some("stop"));
        assert_eq!(
            f.usage,
            Usage {
                input: Some(12),
                output: Some(3),
                cached_input: Some(4),
                cache_write: None,
                reasoning: Some(1)
            }
        );
        assert_eq!(f.output_text, None);
    }

    #[test]
    fn response_without_usage_is_estimated() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"Hello, world!"},"finish_reason":"stop"}]}"#;
        let f = parse_chat_response(body, Encoding::O200k).unwrap();
        assert_eq!(f.usage.output, None);
        assert_eq!(f.output_text.unwrap().total(), 4);
    }

    #[test]
    fn stream_events() {
        let mut s = ChatStream::new(Encoding::O200k, true);
        assert!(!s.on_event(br#"{"id":"c1","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#));
        assert!(s.on_event(br#"{"id":"c1","model":"m","choices":[{"index":0,"delta":{"content":"Hello,"},"finish_reason":null}]}"#));
        assert!(s.on_event(br#"{"id":"c1","model":"m","choices":[{"index":0,"delta":{"content":" world!"},"finish_reason":null}]}"#));
        assert!(!s
            .on_event(br#"{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#));
        assert!(!s.on_event(b"{bad json"));
        assert!(!s.on_event(br#"{"id":"c1","choices":null}"#));
        assert!(!s.on_event(b"[DONE]"));
        assert!(s.done);
        assert_eq!(s.malformed_events, 1);
        let f = s.finish();
        assert_eq!(f.response_id.as_deref(), Some("c1"));
        assert_eq!(f.finish_reason.as_deref(), Some("stop"));
        assert_eq!(f.output_text.unwrap().total(), 4);
    }

    #[test]
    fn stream_usage_chunk_and_error_event() {
        let mut s = ChatStream::new(Encoding::O200k, false);
        s.on_event(br#"{"id":"c","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2}}"#);
        s.on_event(br#"{"error":{"message":"server overloaded","type":"server_error"}}"#);
        let f = s.finish();
        assert_eq!(f.usage.input, Some(9));
        assert_eq!(f.usage.output, Some(2));
        assert_eq!(f.error.unwrap().message, "server overloaded");
    }
}
