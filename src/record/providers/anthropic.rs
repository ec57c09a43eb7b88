//! Anthropic Messages (`/v1/messages`) and `count_tokens`: the message
//! object and the typed stream (`message_start` → content blocks with
//! `text_delta` / `input_json_delta` / `thinking_delta` → `message_delta`
//! with cumulative usage → `message_stop`; `error` events mid-stream).
//!
//! Usage follows OpenTelemetry: `input` = input + cache read + cache
//! creation; cache read is `cached_input`, cache creation is `cache_write`.

use std::borrow::Cow;

use serde::Deserialize;

use super::messages::{self, Message, Messages, Part};
use super::{
    push_capped, ErrorObject, ResponseFacts, ToolCall, Usage, MAX_TOOL_ARGS, MAX_TOOL_CALLS,
};
use crate::record::stitch::{self, Conversation, Msg, TextDigest, ToolResult};
use crate::record::tokens::{self, Encoding, StreamCounter};

#[derive(Deserialize, Default, Clone, Copy, Debug)]
struct AUsage {
    #[serde(default)]
    input_tokens: Option<i64>,
    #[serde(default)]
    output_tokens: Option<i64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<i64>,
    #[serde(default)]
    cache_read_input_tokens: Option<i64>,
}

impl AUsage {
    /// Merges a later (cumulative) report over an earlier one.
    fn merge(&mut self, later: &AUsage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_creation_input_tokens = later
            .cache_creation_input_tokens
            .or(self.cache_creation_input_tokens);
        self.cache_read_input_tokens = later
            .cache_read_input_tokens
            .or(self.cache_read_input_tokens);
    }

    fn to_usage(self) -> Usage {
        let input = self.input_tokens.map(|i| {
            i + self.cache_read_input_tokens.unwrap_or(0)
                + self.cache_creation_input_tokens.unwrap_or(0)
        });
        Usage {
            input,
            output: self.output_tokens,
            cached_input: self.cache_read_input_tokens,
            cache_write: self.cache_creation_input_tokens,
            reasoning: None,
        }
    }
}

#[derive(Deserialize)]
struct MessageObj<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default, borrow)]
    content: Option<Vec<Block<'a>>>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<AUsage>,
}

#[derive(Deserialize)]
struct Block<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    thinking: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default)]
    input: Option<serde_json::Value>,
}

fn tool_call(b: &Block<'_>) -> ToolCall {
    let mut arguments = String::new();
    if let Some(input) = &b.input {
        let text = input.to_string();
        // A streamed block starts with `{}` and fills in by deltas.
        if text != "{}" {
            push_capped(&mut arguments, &text, MAX_TOOL_ARGS);
        }
    }
    ToolCall {
        id: b.id.as_deref().unwrap_or("").to_string(),
        name: b.name.as_deref().unwrap_or("").to_string(),
        arguments,
    }
}

/// A Messages request's history (`system`, then `messages`), reduced for
/// stitching. Text blocks count; thinking blocks do not (clients may drop
/// them); tool_use and tool_result ids do.
pub fn conversation(v: &serde_json::Value) -> Option<Conversation> {
    let mut conv = Conversation::default();
    if let Some(system) = v.get("system") {
        let mut text = TextDigest::default();
        super::digest_content(&mut text, Some(system));
        conv.msgs.push(Msg {
            digest: stitch::message_digest("system", &text, &[]),
            is_assistant: false,
        });
    }
    for m in v.get("messages")?.as_array()? {
        let role = m.get("role").and_then(|r| r.as_str()).unwrap_or("");
        let mut text = TextDigest::default();
        let mut ids = Vec::new();
        match m.get("content") {
            Some(serde_json::Value::Array(blocks)) => {
                for b in blocks {
                    match b.get("type").and_then(|t| t.as_str()) {
                        Some("text") => {
                            if let Some(t) = b.get("text").and_then(|t| t.as_str()) {
                                text.separate();
                                text.push(t);
                            }
                        }
                        Some("tool_use") => {
                            if let Some(id) = b.get("id").and_then(|i| i.as_str()) {
                                ids.push(id.to_string());
                            }
                        }
                        Some("tool_result") => {
                            if let Some(id) = b.get("tool_use_id").and_then(|i| i.as_str()) {
                                ids.push(id.to_string());
                                conv.results.push(ToolResult {
                                    call_id: id.to_string(),
                                    content: super::result_text(b.get("content")),
                                });
                            }
                        }
                        _ => {}
                    }
                }
            }
            other => super::digest_content(&mut text, other),
        }
        conv.msgs.push(Msg {
            digest: stitch::message_digest(role, &text, &ids),
            is_assistant: role == "assistant",
        });
    }
    Some(conv)
}

fn reply_digest<'a>(blocks: impl Iterator<Item = &'a Block<'a>>) -> u64 {
    let mut text = TextDigest::default();
    let mut ids = Vec::new();
    for b in blocks {
        match b.kind.as_deref() {
            Some("text") => {
                text.separate();
                text.push(b.text.as_deref().unwrap_or(""));
            }
            Some("tool_use") => ids.push(b.id.as_deref().unwrap_or("").to_string()),
            _ => {}
        }
    }
    stitch::message_digest("assistant", &text, &ids)
}

/// Span fields of a non-streamed message.
pub fn parse_response(body: &[u8], enc: Encoding) -> Option<ResponseFacts> {
    let m: MessageObj = serde_json::from_slice(body).ok()?;
    let usage = m.usage.unwrap_or_default();
    let blocks = m.content.unwrap_or_default();
    let tool_calls = blocks
        .iter()
        .filter(|b| b.kind.as_deref() == Some("tool_use"))
        .take(MAX_TOOL_CALLS)
        .map(tool_call)
        .collect();
    let mut facts = ResponseFacts {
        response_id: m.id,
        response_model: m.model,
        finish_reason: m.stop_reason,
        usage: usage.to_usage(),
        tool_calls,
        assistant_digest: Some(reply_digest(blocks.iter())),
        ..ResponseFacts::default()
    };
    if facts.usage.output.is_none() {
        let mut counter = StreamCounter::new(enc);
        for b in &blocks {
            for text in [&b.text, &b.thinking].into_iter().flatten() {
                counter.push(text);
            }
            if let Some(input) = &b.input {
                counter.push(&input.to_string());
            }
        }
        facts.output_text = Some(counter);
    }
    Some(facts)
}

/// `{"input_tokens": N}` from `count_tokens`.
pub fn parse_count_tokens(body: &[u8]) -> Option<ResponseFacts> {
    let u: AUsage = serde_json::from_slice(body).ok()?;
    Some(ResponseFacts {
        usage: Usage {
            input: u.input_tokens,
            ..Usage::default()
        },
        ..ResponseFacts::default()
    })
}

/// Estimated input tokens of a Messages request: system, messages (text,
/// tool use inputs, tool results) and tool definitions.
pub fn estimate_input(body: &[u8], enc: Encoding) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    fn content(enc: Encoding, c: Option<&serde_json::Value>) -> usize {
        match c {
            Some(serde_json::Value::String(s)) => tokens::count(enc, s),
            Some(serde_json::Value::Array(blocks)) => blocks
                .iter()
                .map(|b| {
                    let mut n = 0;
                    for key in ["text", "thinking"] {
                        if let Some(s) = b.get(key).and_then(|s| s.as_str()) {
                            n += tokens::count(enc, s);
                        }
                    }
                    if let Some(input) = b.get("input") {
                        n += tokens::count(enc, &input.to_string());
                    }
                    n + content(enc, b.get("content"))
                })
                .sum(),
            _ => 0,
        }
    }
    let mut total = content(enc, v.get("system"));
    for m in v.get("messages")?.as_array()? {
        total += 3 + content(enc, m.get("content"));
    }
    if let Some(tools) = v.get("tools") {
        total += tokens::count(enc, &tools.to_string());
    }
    Some(total as i64)
}

// === messages ===

/// A Messages (or `count_tokens`) request's messages: `system`, then
/// `messages` (`None` without them).
pub fn request_messages(v: &serde_json::Value) -> Option<Messages> {
    let list = v.get("messages")?.as_array()?;
    let system = messages::system_message(v.get("system"));
    Some(Messages::exported(
        system
            .into_iter()
            .chain(list.iter().filter_map(messages::chat_message))
            .collect(),
    ))
}

/// A whole message object as the assistant's reply.
pub fn response_messages(v: &serde_json::Value) -> Option<Messages> {
    if messages::str_of(v, "type") != Some("message") {
        return None;
    }
    let mut parts = Vec::new();
    messages::content_parts(v.get("content")?, &mut parts);
    Some(Messages::exported(vec![messages::reply(
        parts,
        messages::field(v, "stop_reason"),
    )]))
}

/// What messages mode keeps of a stream besides the tool calls.
#[derive(Debug, Default)]
struct StreamOut {
    /// A block or the final delta was seen (else there is no reply).
    seen: bool,
    text: String,
    thinking: String,
    finish: serde_json::Value,
    error: Option<String>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<MessageObj<'a>>,
    #[serde(default)]
    index: Option<usize>,
    #[serde(default, borrow)]
    content_block: Option<Block<'a>>,
    #[serde(default, borrow)]
    delta: Option<EventDelta<'a>>,
    #[serde(default)]
    usage: Option<AUsage>,
    #[serde(default)]
    error: Option<ErrorObject>,
}

#[derive(Deserialize)]
struct EventDelta<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    thinking: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    partial_json: Option<Cow<'a, str>>,
    #[serde(default)]
    stop_reason: Option<String>,
}

/// Accumulates a streamed message.
#[derive(Debug)]
pub struct MessagesStream {
    facts: ResponseFacts,
    usage: AUsage,
    /// `message_delta` (with the final output count) was seen.
    final_usage: bool,
    counter: StreamCounter,
    calls: Vec<(usize, ToolCall)>,
    /// The reply's text blocks and tool ids, for its digest.
    text: TextDigest,
    ids: Vec<String>,
    /// Messages mode (a replay for `messages`; never on the request path).
    out: Option<Box<StreamOut>>,
    /// `message_stop` (or an `error` event) was seen.
    pub done: bool,
    pub malformed_events: u64,
}

impl MessagesStream {
    pub fn new(enc: Encoding) -> Self {
        MessagesStream {
            facts: ResponseFacts::default(),
            usage: AUsage::default(),
            final_usage: false,
            counter: StreamCounter::standby(enc),
            calls: Vec::new(),
            text: TextDigest::default(),
            ids: Vec::new(),
            out: None,
            done: false,
            malformed_events: 0,
        }
    }

    /// This parser in messages mode (see [`MessagesStream::into_messages`]).
    pub fn with_messages(mut self) -> Self {
        self.out = Some(Box::default());
        self
    }

    /// One event; true when it carried generated content.
    pub fn on_event(&mut self, event_name: &str, data: &[u8]) -> bool {
        let ev: Event = match serde_json::from_slice(data) {
            Ok(e) => e,
            Err(_) => {
                self.malformed_events += 1;
                return false;
            }
        };
        let kind = ev.kind.as_deref().unwrap_or(event_name);
        if let Some(out) = self.out.as_mut() {
            keep_event(out, kind, &ev);
        }
        match kind {
            "message_start" => {
                if let Some(m) = &ev.message {
                    self.facts.response_id.clone_from(&m.id);
                    self.facts.response_model.clone_from(&m.model);
                    if let Some(u) = &m.usage {
                        self.usage.merge(u);
                    }
                }
                false
            }
            "content_block_start" => {
                if let Some(b) = &ev.content_block {
                    match b.kind.as_deref() {
                        Some("text") => self.text.separate(),
                        Some("tool_use") => {
                            self.ids.push(b.id.as_deref().unwrap_or("").to_string())
                        }
                        _ => {}
                    }
                    if let Some(t) = b.text.as_deref() {
                        self.text.push(t);
                    }
                    if b.kind.as_deref() == Some("tool_use") && self.calls.len() < MAX_TOOL_CALLS {
                        self.calls
                            .push((ev.index.unwrap_or(self.calls.len()), tool_call(b)));
                    }
                    if let Some(t) = b.text.as_deref().filter(|t| !t.is_empty()) {
                        self.counter.push(t);
                        return true;
                    }
                }
                false
            }
            "content_block_delta" => {
                let Some(d) = &ev.delta else { return false };
                if let Some(t) = &d.text {
                    self.text.push(t);
                }
                let mut content = false;
                for text in [&d.text, &d.thinking].into_iter().flatten() {
                    if !text.is_empty() {
                        self.counter.push(text);
                        content = true;
                    }
                }
                if let Some(json) = &d.partial_json {
                    self.counter.push(json);
                    content = true;
                    let idx = ev.index.unwrap_or(0);
                    if let Some((_, slot)) = self.calls.iter_mut().find(|(i, _)| *i == idx) {
                        push_capped(&mut slot.arguments, json, MAX_TOOL_ARGS);
                    }
                }
                content
            }
            "message_delta" => {
                if let Some(d) = &ev.delta {
                    if d.stop_reason.is_some() {
                        self.facts.finish_reason.clone_from(&d.stop_reason);
                    }
                }
                if let Some(u) = &ev.usage {
                    self.usage.merge(u);
                    self.final_usage = true;
                }
                false
            }
            "message_stop" => {
                self.done = true;
                false
            }
            "error" => {
                self.facts.error = ev.error.as_ref().map(ErrorObject::to_api_error);
                self.done = true;
                false
            }
            _ => false,
        }
    }

    pub fn finish(mut self) -> ResponseFacts {
        let mut usage = self.usage.to_usage();
        if !self.final_usage {
            // `message_start` reports a placeholder output count; without the
            // final `message_delta` (a cut stream) count what was seen.
            usage.output = None;
            self.facts.output_text = Some(self.counter);
        }
        self.facts.usage = usage;
        self.facts.assistant_digest =
            Some(stitch::message_digest("assistant", &self.text, &self.ids));
        self.facts.tool_calls = self.calls.into_iter().map(|(_, c)| c).collect();
        self.facts
    }

    /// Messages mode: the reply seen (text, then tool calls), and an error
    /// event as a message the UI shows. `None` when neither was seen.
    pub fn into_messages(self) -> Option<Messages> {
        let out = self.out?;
        let mut m = Messages::shown(Vec::new());
        if out.seen {
            let mut parts = Vec::new();
            if !out.text.is_empty() {
                parts.push(Part::Text(out.text));
            }
            if !out.thinking.is_empty() {
                parts.push(Part::Reasoning(out.thinking));
            }
            for (_, call) in self.calls {
                parts.push(Part::ToolCall {
                    id: messages::text_or_null(&call.id),
                    name: messages::text_or_null(&call.name),
                    arguments: messages::args_text(&call.arguments),
                });
            }
            m = Messages::exported(vec![messages::reply(parts, out.finish)]);
        }
        if let Some(e) = out.error {
            m.list.push(Message::shown("error", e));
        }
        (!m.list.is_empty()).then_some(m)
    }
}

/// Keeps one event for messages mode (tool calls are the parser's own).
fn keep_event(out: &mut StreamOut, kind: &str, ev: &Event<'_>) {
    match kind {
        "content_block_start" => out.seen = true,
        "content_block_delta" => {
            out.seen = true;
            if let Some(d) = &ev.delta {
                if let Some(t) = &d.text {
                    out.text.push_str(t);
                }
                if let Some(t) = &d.thinking {
                    out.thinking.push_str(t);
                }
            }
        }
        "message_delta" => {
            out.seen = true;
            out.finish = ev
                .delta
                .as_ref()
                .and_then(|d| d.stop_reason.clone())
                .map_or(serde_json::Value::Null, Into::into);
        }
        "error" => {
            let e = ev.error.as_ref().map(ErrorObject::to_api_error);
            out.error = Some(
                e.map(|e| e.message)
                    .filter(|m| !m.is_empty())
                    .unwrap_or_else(|| "stream error".into()),
            );
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_message_with_cache_and_tool_use() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Let me check."},{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}],"stop_reason":"tool_use","stop_sequence":null,"usage":{"input_tokens":10,"cache_creation_input_tokens":20,"cache_read_input_tokens":30,"output_tokens":40}}"#;
        let f = parse_response(body, Encoding::O200k).unwrap();
        assert_eq!(f.response_id.as_deref(), Some("msg_1"));
        assert_eq!(f.finish_reason.as_deref(), Some("tool_use"));
        assert_eq!(
            f.usage,
            Usage {
                input: Some(60),
                output: Some(40),
                cached_input: Some(30),
                cache_write: Some(20),
                reasoning: None
            }
        );
        assert_eq!(f.tool_calls[0].id, "toolu_1");
        assert_eq!(f.tool_calls[0].arguments, r#"{"city":"Paris"}"#);
    }

    fn run(events: &[(&str, &str)]) -> (MessagesStream, Vec<bool>) {
        let mut s = MessagesStream::new(Encoding::O200k);
        let content = events
            .iter()
            .map(|(e, d)| s.on_event(e, d.as_bytes()))
            .collect();
        (s, content)
    }

    #[test]
    fn stream_with_thinking_text_and_tool_use() {
        let (s, content) = run(&[
            (
                "message_start",
                r#"{"type":"message_start","message":{"id":"msg_2","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":5,"output_tokens":1}}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Hmm."}}"#,
            ),
            ("ping", r#"{"type": "ping"}"#),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_9","name":"get_weather","input":{}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\": "}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"}}"#,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":1}"#,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":33}}"#,
            ),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ]);
        assert_eq!(
            content,
            vec![false, false, true, false, false, true, true, false, false, false]
        );
        assert!(s.done);
        let f = s.finish();
        assert_eq!(f.usage.input, Some(17));
        assert_eq!(f.usage.cached_input, Some(5));
        assert_eq!(f.usage.output, Some(33));
        assert_eq!(f.finish_reason.as_deref(), Some("tool_use"));
        assert_eq!(f.tool_calls[0].arguments, r#"{"city": "Paris"}"#);
        assert_eq!(f.output_text, None);
    }

    #[test]
    fn cut_stream_estimates_output_and_error_event_fails() {
        let (s, _) = run(&[
            (
                "message_start",
                r#"{"type":"message_start","message":{"id":"m","model":"claude-3-5-haiku","usage":{"input_tokens":9,"output_tokens":1}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello, world!"}}"#,
            ),
        ]);
        assert!(!s.done);
        let f = s.finish();
        assert_eq!(f.usage.input, Some(9));
        assert_eq!(f.usage.output, None);
        assert_eq!(f.output_text.unwrap().total(), 4);
        let (s, _) = run(&[(
            "error",
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )]);
        let e = s.finish().error.unwrap();
        assert_eq!(e.kind.as_deref(), Some("overloaded_error"));
    }

    #[test]
    fn count_tokens_and_input_estimate() {
        assert_eq!(
            parse_count_tokens(br#"{"input_tokens":42}"#)
                .unwrap()
                .usage
                .input,
            Some(42)
        );
        let n = estimate_input(
            br#"{"model":"claude","system":"You are helpful.","messages":[{"role":"user","content":[{"type":"text","text":"Hi"}]}]}"#,
            Encoding::O200k,
        )
        .unwrap();
        assert_eq!(n, 4 + 3 + 1);
    }
}
