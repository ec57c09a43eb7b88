//! OpenAI Responses API (`/v1/responses`): the response object and its
//! typed stream events (`response.created` … `response.output_text.delta`
//! … `response.completed | incomplete | failed`, `error`).

use std::borrow::Cow;

use serde::Deserialize;

use super::messages::{self, Message, Messages, Part};
use super::{
    push_capped, ApiError, ErrorObject, ResponseFacts, ToolCall, Usage, MAX_TOOL_ARGS,
    MAX_TOOL_CALLS,
};
use crate::record::stitch::{Conversation, ToolResult};
use crate::record::tokens::{self, Encoding, StreamCounter};

#[derive(Deserialize, Default)]
struct RUsage {
    #[serde(default)]
    input_tokens: Option<i64>,
    #[serde(default)]
    output_tokens: Option<i64>,
    #[serde(default)]
    input_tokens_details: Option<InputDetails>,
    #[serde(default)]
    output_tokens_details: Option<OutputDetails>,
}

#[derive(Deserialize, Default)]
struct InputDetails {
    #[serde(default)]
    cached_tokens: Option<i64>,
}

#[derive(Deserialize, Default)]
struct OutputDetails {
    #[serde(default)]
    reasoning_tokens: Option<i64>,
}

impl RUsage {
    fn to_usage(&self) -> Usage {
        Usage {
            input: self.input_tokens,
            output: self.output_tokens,
            cached_input: self
                .input_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens),
            cache_write: None,
            reasoning: self
                .output_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens),
        }
    }
}

#[derive(Deserialize)]
struct ResponseObj<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    error: Option<ErrorObject>,
    #[serde(default)]
    incomplete_details: Option<IncompleteDetails>,
    #[serde(default, borrow)]
    output: Option<Vec<OutputItem<'a>>>,
    #[serde(default)]
    usage: Option<RUsage>,
}

#[derive(Deserialize)]
struct IncompleteDetails {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct OutputItem<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    call_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    arguments: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    content: Option<Vec<ContentPart<'a>>>,
    #[serde(default, borrow)]
    summary: Option<Vec<ContentPart<'a>>>,
}

#[derive(Deserialize)]
struct ContentPart<'a> {
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    refusal: Option<Cow<'a, str>>,
}

/// Applies a response object's fields (final state wins).
fn apply(facts: &mut ResponseFacts, r: &ResponseObj<'_>, with_calls: bool) {
    if r.id.is_some() {
        facts.response_id.clone_from(&r.id);
    }
    if r.model.is_some() {
        facts.response_model.clone_from(&r.model);
    }
    if let Some(u) = &r.usage {
        facts.usage = u.to_usage();
    }
    if let Some(e) = &r.error {
        facts.error = Some(e.to_api_error());
    }
    let reason = r.incomplete_details.as_ref().and_then(|d| d.reason.clone());
    if let Some(status) = &r.status {
        if status != "in_progress" && status != "queued" {
            facts.finish_reason = Some(reason.unwrap_or_else(|| status.clone()));
        }
    }
    if with_calls {
        facts.tool_calls = function_calls(r.output.iter().flatten());
    }
}

fn function_calls<'a>(items: impl Iterator<Item = &'a OutputItem<'a>>) -> Vec<ToolCall> {
    items
        .filter(|i| i.kind.as_deref() == Some("function_call"))
        .take(MAX_TOOL_CALLS)
        .map(|i| {
            let mut arguments = String::new();
            push_capped(
                &mut arguments,
                i.arguments.as_deref().unwrap_or(""),
                MAX_TOOL_ARGS,
            );
            ToolCall {
                id: i
                    .call_id
                    .as_deref()
                    .or(i.id.as_deref())
                    .unwrap_or("")
                    .to_string(),
                name: i.name.as_deref().unwrap_or("").to_string(),
                arguments,
            }
        })
        .collect()
}

/// Estimated input tokens: `instructions` plus `input` (a string, or items
/// with `content` strings / parts, function call arguments and outputs).
pub fn estimate_input(body: &[u8], enc: Encoding) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let mut total = 0usize;
    if let Some(s) = v.get("instructions").and_then(|s| s.as_str()) {
        total += tokens::count(enc, s);
    }
    match v.get("input")? {
        serde_json::Value::String(s) => total += 3 + tokens::count(enc, s),
        serde_json::Value::Array(items) => {
            for item in items {
                total += 3 + super::openai::count_content(enc, item.get("content"));
                for key in ["arguments", "output", "name"] {
                    if let Some(s) = item.get(key).and_then(|s| s.as_str()) {
                        total += tokens::count(enc, s);
                    }
                }
            }
        }
        _ => {}
    }
    if let Some(tools) = v.get("tools") {
        total += tokens::count(enc, &tools.to_string());
    }
    Some(total as i64 + 3)
}

/// A Responses request, for stitching: chained by `previous_response_id`;
/// its `function_call_output` items are tool results.
pub fn conversation(v: &serde_json::Value) -> Option<Conversation> {
    let mut conv = Conversation {
        previous_response_id: v
            .get("previous_response_id")
            .and_then(|i| i.as_str())
            .map(str::to_string),
        ..Conversation::default()
    };
    for item in v
        .get("input")
        .and_then(|i| i.as_array())
        .into_iter()
        .flatten()
    {
        if item.get("type").and_then(|t| t.as_str()) == Some("function_call_output") {
            if let Some(id) = item.get("call_id").and_then(|i| i.as_str()) {
                conv.results.push(ToolResult {
                    call_id: id.to_string(),
                    content: super::result_text(item.get("output")),
                });
            }
        }
    }
    Some(conv)
}

/// Span fields of a non-streamed response object.
pub fn parse_response(body: &[u8], enc: Encoding) -> Option<ResponseFacts> {
    let r: ResponseObj = serde_json::from_slice(body).ok()?;
    let mut facts = ResponseFacts::default();
    apply(&mut facts, &r, true);
    if facts.usage.output.is_none() && facts.error.is_none() {
        let mut counter = StreamCounter::new(enc);
        for item in r.output.iter().flatten() {
            for part in item.content.iter().chain(item.summary.iter()).flatten() {
                for text in [&part.text, &part.refusal].into_iter().flatten() {
                    counter.push(text);
                }
            }
            for text in [&item.arguments].into_iter().flatten() {
                counter.push(text);
            }
        }
        facts.output_text = Some(counter);
    }
    Some(facts)
}

// === messages ===

/// A Responses request's messages: `instructions`, then `input` (a string,
/// or messages and items). `None` without an `input` of those shapes.
pub fn request_messages(v: &serde_json::Value) -> Option<Messages> {
    use serde_json::Value;
    let mut list: Vec<Message> = messages::system_message(v.get("instructions"))
        .into_iter()
        .collect();
    match v.get("input")? {
        Value::String(s) => list.push(Message::new("user", vec![Part::Text(s.clone())])),
        Value::Array(items) => {
            for item in items {
                list.extend(item_message(item));
            }
        }
        _ => return None,
    }
    Some(Messages::exported(list))
}

/// A shown-only tool call (`custom_tool_call`).
fn custom_call(item: &serde_json::Value) -> Part {
    let id = item.get("call_id").or_else(|| item.get("id"));
    Part::Shown(Box::new(Part::ToolCall {
        id: id.cloned().unwrap_or_default(),
        name: messages::field(item, "name"),
        arguments: messages::field(item, "input"),
    }))
}

/// A reasoning item's summary (shown only).
fn reasoning(item: &serde_json::Value) -> Part {
    let text: Vec<&str> = item
        .get("summary")
        .and_then(|s| s.as_array())
        .into_iter()
        .flatten()
        .filter_map(|s| messages::str_of(s, "text"))
        .collect();
    let text = text.join("\n");
    Part::Reasoning(if text.is_empty() {
        "[reasoning]".into()
    } else {
        text
    })
}

/// One `input` item as a message.
fn item_message(item: &serde_json::Value) -> Option<Message> {
    let shown = |role: &str, parts: Vec<Part>| Message {
        exported: false,
        ..Message::new(role, parts)
    };
    if let Some(s) = item.as_str() {
        return Some(shown("user", vec![Part::Text(s.to_string())]));
    }
    let kind = messages::str_of(item, "type");
    Some(match kind {
        Some("function_call") => Message::new(
            "assistant",
            vec![Part::ToolCall {
                id: messages::field(item, "call_id"),
                name: messages::field(item, "name"),
                arguments: messages::args_value(item.get("arguments")),
            }],
        ),
        Some("function_call_output") => Message::new(
            "tool",
            vec![Part::ToolResult {
                id: messages::field(item, "call_id"),
                response: messages::field(item, "output"),
                is_error: false,
            }],
        ),
        Some("custom_tool_call") => shown("assistant", vec![custom_call(item)]),
        Some("custom_tool_call_output") => shown(
            "tool",
            vec![Part::ToolResult {
                id: messages::field(item, "call_id"),
                response: messages::field(item, "output"),
                is_error: false,
            }],
        ),
        Some("reasoning") => shown("assistant", vec![reasoning(item)]),
        _ => match messages::chat_message(item) {
            Some(m) => m,
            None if kind == Some("message") => {
                let mut parts = Vec::new();
                if let Some(c) = item.get("content") {
                    messages::content_parts(c, &mut parts);
                }
                shown("assistant", parts)
            }
            None => shown("assistant", vec![Part::Text(format!("[{}]", kind?))]),
        },
    })
}

/// A response object's `output` as the assistant's reply: its messages'
/// content and function calls (finish reason `tool_call` when it asks for
/// one, else `stop`); reasoning and other items are shown only.
pub fn response_messages(v: &serde_json::Value) -> Option<Messages> {
    let items = v.get("output")?.as_array()?;
    let mut parts = Vec::new();
    for item in items {
        match messages::str_of(item, "type") {
            Some("message") => {
                if let Some(c) = item.get("content") {
                    messages::content_parts(c, &mut parts);
                }
            }
            Some("function_call") => parts.push(Part::ToolCall {
                id: messages::field(item, "call_id"),
                name: messages::field(item, "name"),
                arguments: messages::args_value(item.get("arguments")),
            }),
            Some("reasoning") => parts.push(reasoning(item)),
            Some("custom_tool_call") => parts.push(custom_call(item)),
            Some(other) => parts.push(Part::Shown(Box::new(Part::Text(format!("[{other}]"))))),
            None => {}
        }
    }
    let calls = parts.iter().any(|p| matches!(p, Part::ToolCall { .. }));
    let finish = if calls { "tool_call" } else { "stop" };
    Some(Messages::exported(vec![messages::reply(
        parts,
        finish.into(),
    )]))
}

/// What messages mode keeps of a stream.
#[derive(Debug, Default)]
struct StreamOut {
    /// The reply of the last terminal event; exported when it was
    /// `response.completed`.
    last: Option<Messages>,
    /// Items seen done, and text deltas: the reply of a cut stream.
    items: Vec<serde_json::Value>,
    text: String,
    error: Option<String>,
}

/// Most items a replayed stream keeps.
const MAX_ITEMS: usize = 256;

impl StreamOut {
    fn keep(&mut self, kind: &str, ev: &Event<'_>, data: &[u8]) {
        let value = || serde_json::from_slice::<serde_json::Value>(data).ok();
        match kind {
            "response.completed" | "response.incomplete" | "response.failed" => {
                let Some(v) = value() else { return };
                if let Some(mut m) = v.get("response").and_then(response_messages) {
                    m.exported = kind == "response.completed";
                    self.last = Some(m);
                }
            }
            "response.output_item.done" if self.items.len() < MAX_ITEMS => {
                if let Some(item) = value().and_then(|mut v| v.get_mut("item").map(|i| i.take())) {
                    self.items.push(item);
                }
            }
            "response.output_text.delta" => {
                if let Some(d) = &ev.delta {
                    self.text.push_str(d);
                }
            }
            "error" => {
                let message = ev.message.clone().filter(|m| !m.is_empty());
                self.error = Some(message.unwrap_or_else(|| "stream error".into()));
            }
            _ => {}
        }
    }

    fn into_messages(self) -> Option<Messages> {
        let mut m = match self.last {
            Some(m) => m,
            None if !self.items.is_empty() => {
                let mut m = response_messages(&serde_json::json!({ "output": self.items }))?;
                m.exported = false;
                m
            }
            None if !self.text.is_empty() => {
                Messages::shown(vec![Message::shown("assistant", self.text)])
            }
            None => Messages::shown(Vec::new()),
        };
        if let Some(e) = self.error {
            m.list.push(Message::shown("error", e));
        }
        (!m.list.is_empty()).then_some(m)
    }
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(default, rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    response: Option<ResponseObj<'a>>,
    #[serde(default, borrow)]
    delta: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    item: Option<OutputItem<'a>>,
    #[serde(default)]
    output_index: Option<usize>,
    // `error` events carry these at the top level.
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<String>,
}

/// Accumulates a streamed response.
#[derive(Debug)]
pub struct ResponsesStream {
    facts: ResponseFacts,
    counter: StreamCounter,
    calls: Vec<(usize, ToolCall)>,
    /// Messages mode (a replay for `messages`; never on the request path).
    out: Option<Box<StreamOut>>,
    /// A terminal event (`response.completed`, `.incomplete`, `.failed`) or
    /// an `error` event was seen.
    pub done: bool,
    pub malformed_events: u64,
}

impl ResponsesStream {
    pub fn new(enc: Encoding) -> Self {
        ResponsesStream {
            facts: ResponseFacts::default(),
            counter: StreamCounter::standby(enc),
            calls: Vec::new(),
            out: None,
            done: false,
            malformed_events: 0,
        }
    }

    /// This parser in messages mode (see [`ResponsesStream::into_messages`]).
    pub fn with_messages(mut self) -> Self {
        self.out = Some(Box::default());
        self
    }

    /// Messages mode: the final response's reply (exported when the
    /// stream completed), else what a cut stream showed; an error event
    /// as a message the UI shows.
    pub fn into_messages(self) -> Option<Messages> {
        self.out?.into_messages()
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
            out.keep(kind, &ev, data);
        }
        match kind {
            "response.created" | "response.in_progress" | "response.queued" => {
                if let Some(r) = &ev.response {
                    apply(&mut self.facts, r, false);
                }
                false
            }
            "response.completed" | "response.incomplete" | "response.failed" => {
                if let Some(r) = &ev.response {
                    apply(&mut self.facts, r, false);
                }
                self.done = true;
                false
            }
            "error" => {
                let code = ev.code.as_ref().and_then(|c| match c {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                });
                self.facts.error = Some(ApiError {
                    kind: code.or_else(|| Some("error".into())),
                    message: ev.message.unwrap_or_default(),
                });
                self.done = true;
                false
            }
            "response.output_item.added" | "response.output_item.done" => {
                if let Some(item) = &ev.item {
                    if item.kind.as_deref() == Some("function_call") {
                        let idx = ev.output_index.unwrap_or(self.calls.len());
                        let call = function_calls(std::iter::once(item))
                            .pop()
                            .unwrap_or_default();
                        match self.calls.iter().position(|(i, _)| *i == idx) {
                            Some(p) => {
                                let slot = &mut self.calls[p].1;
                                if !call.arguments.is_empty() {
                                    slot.arguments = call.arguments;
                                }
                                if !call.name.is_empty() {
                                    slot.name = call.name;
                                }
                                if !call.id.is_empty() {
                                    slot.id = call.id;
                                }
                            }
                            None if self.calls.len() < MAX_TOOL_CALLS => {
                                self.calls.push((idx, call))
                            }
                            None => {}
                        }
                    }
                }
                false
            }
            "response.function_call_arguments.delta" => {
                if let Some(d) = &ev.delta {
                    self.counter.push(d);
                    let idx = ev.output_index.unwrap_or(0);
                    if let Some((_, slot)) = self.calls.iter_mut().find(|(i, _)| *i == idx) {
                        push_capped(&mut slot.arguments, d, MAX_TOOL_ARGS);
                    }
                }
                true
            }
            k if k.ends_with(".delta") => {
                // output_text, refusal, reasoning_summary_text, reasoning_text, audio transcript...
                match &ev.delta {
                    Some(d) if !d.is_empty() => {
                        self.counter.push(d);
                        true
                    }
                    _ => false,
                }
            }
            _ => false,
        }
    }

    pub fn finish(mut self) -> ResponseFacts {
        if self.facts.usage.output.is_none() {
            self.facts.output_text = Some(self.counter);
        }
        self.facts.tool_calls = self.calls.into_iter().map(|(_, c)| c).collect();
        self.facts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMPLETED: &str = r#"{"id":"resp_1","object":"response","created_at":1,"status":"completed","error":null,"incomplete_details":null,"model":"gpt-4.1-2025-04-14","output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"Hello, world!","annotations":[]}]},{"type":"function_call","id":"fc_1","call_id":"call_1","name":"get_weather","arguments":"{\"city\":\"Paris\"}","status":"completed"}],"usage":{"input_tokens":20,"input_tokens_details":{"cached_tokens":5},"output_tokens":30,"output_tokens_details":{"reasoning_tokens":7},"total_tokens":50}}"#;

    #[test]
    fn whole_response() {
        let f = parse_response(COMPLETED.as_bytes(), Encoding::O200k).unwrap();
        assert_eq!(f.response_id.as_deref(), Some("resp_1"));
        assert_eq!(f.response_model.as_deref(), Some("gpt-4.1-2025-04-14"));
        assert_eq!(f.finish_reason.as_deref(), Some("completed"));
        assert_eq!(
            f.usage,
            Usage {
                input: Some(20),
                output: Some(30),
                cached_input: Some(5),
                cache_write: None,
                reasoning: Some(7)
            }
        );
        assert_eq!(f.tool_calls.len(), 1);
        assert_eq!(f.tool_calls[0].id, "call_1");
        assert_eq!(f.tool_calls[0].arguments, r#"{"city":"Paris"}"#);
    }

    #[test]
    fn stream_with_text_function_call_and_completion() {
        let mut s = ResponsesStream::new(Encoding::O200k);
        assert!(!s.on_event("response.created", br#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_1","status":"in_progress","model":"gpt-4.1","output":[],"usage":null}}"#));
        assert!(s.on_event("", br#"{"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hello,","sequence_number":1}"#));
        assert!(!s.on_event("", br#"{"type":"response.output_item.added","output_index":1,"item":{"type":"function_call","id":"fc_1","call_id":"call_1","name":"get_weather","arguments":""},"sequence_number":2}"#));
        assert!(s.on_event("", br#"{"type":"response.function_call_arguments.delta","output_index":1,"item_id":"fc_1","delta":"{\"city\":","sequence_number":3}"#));
        assert!(s.on_event("", br#"{"type":"response.function_call_arguments.delta","output_index":1,"item_id":"fc_1","delta":"\"Paris\"}","sequence_number":4}"#));
        assert!(!s.done);
        s.on_event(
            "response.completed",
            format!(
                r#"{{"type":"response.completed","sequence_number":5,"response":{COMPLETED}}}"#
            )
            .as_bytes(),
        );
        assert!(s.done);
        let f = s.finish();
        assert_eq!(f.usage.output, Some(30));
        assert_eq!(f.output_text, None);
        assert_eq!(f.tool_calls[0].arguments, r#"{"city":"Paris"}"#);
        assert_eq!(f.tool_calls[0].name, "get_weather");
    }

    #[test]
    fn incomplete_failed_and_error_events() {
        let mut s = ResponsesStream::new(Encoding::O200k);
        s.on_event("", br#"{"type":"response.incomplete","response":{"id":"r","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"usage":{"input_tokens":3,"output_tokens":16}}}"#);
        let f = s.finish();
        assert_eq!(f.finish_reason.as_deref(), Some("max_output_tokens"));
        assert!(f.error.is_none());
        let mut s = ResponsesStream::new(Encoding::O200k);
        s.on_event("", br#"{"type":"response.failed","response":{"id":"r","status":"failed","error":{"code":"server_error","message":"boom"},"usage":null}}"#);
        let f = s.finish();
        assert_eq!(f.error.unwrap().message, "boom");
        assert_eq!(f.finish_reason.as_deref(), Some("failed"));
        let mut s = ResponsesStream::new(Encoding::O200k);
        s.on_event("error", br#"{"type":"error","code":"rate_limit_exceeded","message":"slow down","param":null,"sequence_number":2}"#);
        assert!(s.done);
        let e = s.finish().error.unwrap();
        assert_eq!(e.kind.as_deref(), Some("rate_limit_exceeded"));
        assert_eq!(e.message, "slow down");
    }

    #[test]
    fn input_estimate() {
        let n = estimate_input(
            br#"{"model":"gpt-4.1","input":"Hello, world!"}"#,
            Encoding::O200k,
        )
        .unwrap();
        assert_eq!(n, 3 + 4 + 3);
    }
}
