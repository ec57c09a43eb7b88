//! Messages: a captured request body and response body read into the
//! conversation they carry, for the OTLP exporter (`gen_ai.input.messages`
//! / `gen_ai.output.messages`, the GenAI semantic conventions' parts
//! format) and for the admin API (the UI's chat view).
//!
//! One reading per format: each format's file (`openai`, `responses`,
//! `anthropic`) reads its own request and whole-response JSON into
//! [`Message`]s, and a recorded SSE stream is replayed through the same
//! [`EventStream`] and stream parsers the recorder uses (in their
//! messages mode, which the recorder never turns on). This file holds the
//! message model, its two renderings (the export's parts JSON and the
//! API's, a superset with what only the UI shows), the pieces the formats
//! share, and the dispatch from a stored span to its format.
//!
//! Pure and best-effort: a body it cannot read (truncated, another format)
//! yields no messages, never an error or a panic. Bounded by the bodies it
//! is given (captured bodies are capped). Never sees headers, so never a key.

use serde::Serialize;
use serde_json::{json, Value};

use super::{Endpoint, EventStream, StreamParser};
use crate::config::Format;
use crate::record::span::Span;

// === the model ===

/// One part of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Text.
    Text(String),
    /// A tool call the model asked for (`arguments`: the JSON value when
    /// the arguments text parses, else the text).
    ToolCall {
        id: Value,
        name: Value,
        arguments: Value,
    },
    /// A tool's result sent back to the model.
    ToolResult {
        id: Value,
        response: Value,
        /// Anthropic's `is_error` (shown, not exported).
        is_error: bool,
    },
    /// A block of another type (image, refusal, thinking, ...): exported
    /// as `{"type": kind}`; `text` is what the UI shows of it.
    Block { kind: String, text: Option<String> },
    /// Reasoning the export never carried (OpenAI `reasoning_content`,
    /// Responses reasoning items): shown only.
    Reasoning(String),
    /// A part shown by the UI but not exported (fields the semantic
    /// conventions' reading does not take).
    Shown(Box<Part>),
}

/// One message: a role and its parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: String,
    pub parts: Vec<Part>,
    /// Output messages carry one (`null` when the body names none).
    pub finish_reason: Option<Value>,
    /// The participant's name (OpenAI `name`): shown only.
    pub name: Option<String>,
    /// False for a message only the UI shows (an error body, a placeholder).
    pub exported: bool,
}

impl Message {
    pub fn new(role: &str, parts: Vec<Part>) -> Message {
        Message {
            role: role.to_string(),
            parts,
            finish_reason: None,
            name: None,
            exported: true,
        }
    }

    /// A message only the UI shows.
    pub fn shown(role: &str, text: String) -> Message {
        Message {
            exported: false,
            ..Message::new(role, vec![Part::Text(text)])
        }
    }

    fn finished(mut self, reason: Value) -> Message {
        self.finish_reason = Some(reason);
        self
    }
}

/// What one body says: its messages, and whether the export carries them
/// (a body the semantic conventions' reading does not take, such as an
/// error, gives messages for the UI only).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Messages {
    pub list: Vec<Message>,
    pub exported: bool,
}

impl Messages {
    /// Exported messages.
    pub fn exported(list: Vec<Message>) -> Messages {
        Messages {
            list,
            exported: true,
        }
    }

    /// Messages only the UI shows.
    pub fn shown(list: Vec<Message>) -> Messages {
        Messages {
            list,
            exported: false,
        }
    }

    /// The export's JSON text (`gen_ai.*.messages`), when it carries them.
    pub fn semconv(&self) -> Option<String> {
        if !self.exported {
            return None;
        }
        let list: Vec<Value> = self
            .list
            .iter()
            .filter(|m| m.exported)
            .map(|m| render(m, View::Export))
            .collect();
        Some(Value::Array(list).to_string())
    }

    /// The API's JSON: every message, with what only the UI shows.
    pub fn shown_json(&self) -> Value {
        Value::Array(self.list.iter().map(|m| render(m, View::Ui)).collect())
    }
}

#[derive(Clone, Copy, PartialEq)]
enum View {
    Export,
    Ui,
}

fn render(m: &Message, view: View) -> Value {
    let parts: Vec<Value> = m.parts.iter().filter_map(|p| part(p, view)).collect();
    let mut out = json!({"role": m.role, "parts": parts});
    if let Some(reason) = &m.finish_reason {
        out["finish_reason"] = reason.clone();
    }
    if view == View::Ui {
        if let Some(name) = &m.name {
            out["name"] = json!(name);
        }
    }
    out
}

fn part(p: &Part, view: View) -> Option<Value> {
    Some(match p {
        Part::Text(t) => json!({"type": "text", "content": t}),
        Part::ToolCall {
            id,
            name,
            arguments,
        } => json!({"type": "tool_call", "id": id, "name": name, "arguments": arguments}),
        Part::ToolResult {
            id,
            response,
            is_error,
        } => {
            let mut v = json!({"type": "tool_call_response", "id": id, "response": response});
            if view == View::Ui && *is_error {
                v["is_error"] = json!(true);
            }
            v
        }
        Part::Block { kind, text } => {
            let mut v = json!({ "type": kind });
            if let (View::Ui, Some(t)) = (view, text) {
                v["content"] = json!(t);
            }
            v
        }
        Part::Reasoning(t) if view == View::Ui => json!({"type": "reasoning", "content": t}),
        Part::Shown(inner) if view == View::Ui => return part(inner, view),
        Part::Reasoning(_) | Part::Shown(_) => return None,
    })
}

// === shared readings ===

/// A string field, if it is one.
pub(crate) fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A field's value, `null` when absent.
pub(crate) fn field(v: &Value, key: &str) -> Value {
    v.get(key).cloned().unwrap_or(Value::Null)
}

/// Tool call arguments: OpenAI sends JSON text; the object is kept when
/// it parses.
pub(crate) fn args_value(raw: Option<&Value>) -> Value {
    match raw {
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or_else(|_| json!(s)),
        Some(other) => other.clone(),
        None => Value::Null,
    }
}

/// Arguments text assembled from a stream.
pub(crate) fn args_text(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|_| json!(s))
}

/// Parts of a message `content`: a string, or an array of typed blocks
/// (OpenAI parts, Responses parts, Anthropic blocks).
pub(crate) fn content_parts(content: &Value, parts: &mut Vec<Part>) {
    match content {
        Value::String(s) => parts.push(Part::Text(s.clone())),
        Value::Array(blocks) => {
            for b in blocks {
                let text = || str_of(b, "text").map(str::to_string);
                match str_of(b, "type").unwrap_or("") {
                    "text" | "input_text" | "output_text" => {
                        if let Some(t) = text() {
                            parts.push(Part::Text(t));
                        }
                    }
                    "tool_use" => parts.push(Part::ToolCall {
                        id: field(b, "id"),
                        name: field(b, "name"),
                        arguments: field(b, "input"),
                    }),
                    "tool_result" => parts.push(Part::ToolResult {
                        id: field(b, "tool_use_id"),
                        response: field(b, "content"),
                        is_error: b.get("is_error").and_then(Value::as_bool) == Some(true),
                    }),
                    "" => {
                        // A bare string or an untyped part: shown only.
                        let t = b.as_str().map(str::to_string).or_else(text);
                        if let Some(t) = t.filter(|t| !t.is_empty()) {
                            parts.push(Part::Shown(Box::new(Part::Text(t))));
                        }
                    }
                    kind => {
                        let shown = match kind {
                            "refusal" => str_of(b, "refusal").map(str::to_string),
                            "thinking" => str_of(b, "thinking").map(str::to_string),
                            _ => text(),
                        };
                        parts.push(Part::Block {
                            kind: kind.to_string(),
                            text: shown,
                        });
                    }
                }
            }
        }
        _ => {}
    }
}

/// A chat-shaped message (`role`, `content`; OpenAI's `tool_calls`,
/// `tool_call_id`, `name`, `refusal`, `reasoning_content`). `None` without
/// a role.
pub(crate) fn chat_message(m: &Value) -> Option<Message> {
    let role = str_of(m, "role")?;
    let parts = if role == "tool" {
        vec![Part::ToolResult {
            id: field(m, "tool_call_id"),
            response: field(m, "content"),
            is_error: false,
        }]
    } else {
        chat_parts(m)
    };
    let mut msg = Message::new(role, parts);
    msg.name = str_of(m, "name").map(str::to_string);
    Some(msg)
}

/// The parts of a chat message that is not a tool result: its content,
/// then (shown only) its refusal and reasoning, then its tool calls.
pub(crate) fn chat_parts(m: &Value) -> Vec<Part> {
    let mut parts = Vec::new();
    if let Some(c) = m.get("content") {
        content_parts(c, &mut parts);
    }
    if let Some(r) = str_of(m, "refusal").filter(|r| !r.is_empty()) {
        parts.push(Part::Shown(Box::new(Part::Block {
            kind: "refusal".into(),
            text: Some(r.to_string()),
        })));
    }
    if let Some(r) = str_of(m, "reasoning_content").filter(|r| !r.is_empty()) {
        parts.push(Part::Reasoning(r.to_string()));
    }
    for c in m
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let f = c.get("function");
        parts.push(Part::ToolCall {
            id: field(c, "id"),
            name: f.map_or(Value::Null, |f| field(f, "name")),
            arguments: args_value(f.and_then(|f| f.get("arguments"))),
        });
    }
    parts
}

/// A streamed id or name: `null` when the stream never sent one.
pub(crate) fn text_or_null(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        json!(s)
    }
}

/// A `system` / `instructions` value as a system message, if it has parts.
pub(crate) fn system_message(v: Option<&Value>) -> Option<Message> {
    let mut parts = Vec::new();
    content_parts(v?, &mut parts);
    (!parts.is_empty()).then(|| Message::new("system", parts))
}

/// The error a JSON body reports (`{"error": {...}}`, Anthropic's
/// `{"type": "error"}`), as a message the UI shows.
fn error_message(v: &Value) -> Option<Message> {
    let e = v.get("error").filter(|e| !e.is_null())?;
    let text = match e {
        Value::Object(_) => str_of(e, "message")
            .map(str::to_string)
            .unwrap_or_else(|| e.to_string()),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    Some(Message::shown("error", text))
}

/// The assistant's reply in an output message.
pub(crate) fn reply(parts: Vec<Part>, finish: Value) -> Message {
    Message::new("assistant", parts).finished(finish)
}

// === dispatch ===

/// The messages of a request body.
pub fn input(endpoint: Endpoint, body: &str) -> Messages {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return Messages::default();
    };
    let read = match endpoint {
        Endpoint::Chat => super::openai::chat_request_messages(&v),
        Endpoint::Completions => super::openai::prompt_messages(&v, "prompt"),
        Endpoint::Embeddings => super::openai::prompt_messages(&v, "input"),
        Endpoint::Responses => super::responses::request_messages(&v),
        Endpoint::Messages | Endpoint::CountTokens => super::anthropic::request_messages(&v),
        Endpoint::Other(_) => None,
    };
    read.unwrap_or_default()
}

/// The messages of a response body: whole JSON, or a recorded SSE stream
/// replayed through the recorder's own stream parser.
pub fn output(endpoint: Endpoint, body: &str) -> Messages {
    let trimmed = body.trim_start();
    if trimmed.starts_with('{') {
        let Ok(v) = serde_json::from_str::<Value>(trimmed) else {
            return Messages::shown(vec![Message::shown("assistant", body.to_string())]);
        };
        if let Some(e) = error_message(&v) {
            return Messages::shown(vec![e]);
        }
        let read = match endpoint {
            Endpoint::Chat | Endpoint::Completions => super::openai::response_messages(&v),
            Endpoint::Embeddings => super::openai::embeddings_messages(&v),
            Endpoint::Responses => super::responses::response_messages(&v),
            Endpoint::Messages => super::anthropic::response_messages(&v),
            Endpoint::CountTokens | Endpoint::Other(_) => None,
        };
        return read.unwrap_or_default();
    }
    if ["data:", "event:", ":"]
        .iter()
        .any(|p| trimmed.starts_with(p))
    {
        return replay(endpoint, body).unwrap_or_default();
    }
    if trimmed.is_empty() {
        return Messages::default();
    }
    Messages::shown(vec![Message::shown("assistant", body.to_string())])
}

/// Replays a recorded stream through the recorder's parsers.
fn replay(endpoint: Endpoint, body: &str) -> Option<Messages> {
    let parser = StreamParser::for_messages(endpoint)?;
    let mut s = EventStream::new(parser, body.len() + 1);
    s.feed(body.as_bytes());
    // A last event not followed by a blank line still counts.
    s.feed(b"\n\n");
    s.into_messages()
}

// === stored spans (the admin API) ===

impl Endpoint {
    /// The endpoint a stored span was classified as: the one either
    /// format's [`Endpoint::classify`] gives its path with the span's
    /// operation type (a path of the other format classifies as another
    /// kind of call).
    pub fn of_stored(operation_type: &str, path: &str) -> Option<Endpoint> {
        [Format::Openai, Format::Anthropic]
            .into_iter()
            .map(|f| Endpoint::classify(f, &http::Method::POST, path))
            .find(|e| e.parses_request() && e.operation_type() == operation_type)
    }
}

/// A span's messages: its request's, then its response's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conversation {
    pub input: Messages,
    pub output: Messages,
}

impl Serialize for Conversation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        json!({"input": self.input.shown_json(), "output": self.output.shown_json()}).serialize(s)
    }
}

/// The conversation of a stored span (a tool span: its call and result).
pub fn of_span(span: &Span) -> Conversation {
    of_fields(
        &span.operation_type,
        &span.path,
        &span.name,
        span.request_body.as_deref(),
        span.response_body.as_deref(),
    )
}

fn of_fields(
    operation_type: &str,
    path: &str,
    name: &str,
    request: Option<&str>,
    response: Option<&str>,
) -> Conversation {
    if operation_type == "tool_call" {
        let call = request.map(|args| {
            let name = name.strip_prefix("execute_tool ").unwrap_or(name);
            Message::new(
                "assistant",
                vec![Part::ToolCall {
                    id: json!(""),
                    name: json!(name),
                    arguments: json!(args),
                }],
            )
        });
        let result = response.map(|r| {
            Message::new(
                "tool",
                vec![Part::ToolResult {
                    id: Value::Null,
                    response: json!(r),
                    is_error: false,
                }],
            )
        });
        return Conversation {
            input: Messages::shown(call.into_iter().collect()),
            output: Messages::shown(result.into_iter().collect()),
        };
    }
    let Some(endpoint) = Endpoint::of_stored(operation_type, path) else {
        return Conversation::default();
    };
    Conversation {
        input: request.map(|b| input(endpoint, b)).unwrap_or_default(),
        output: response.map(|b| output(endpoint, b)).unwrap_or_default(),
    }
}

/// A stored span as the API answers it: its fields and its `messages`.
#[derive(Serialize)]
pub struct SpanView<'a> {
    #[serde(flatten)]
    pub span: &'a Span,
    pub messages: Conversation,
}

impl<'a> SpanView<'a> {
    pub fn new(span: &'a Span) -> SpanView<'a> {
        SpanView {
            span,
            messages: of_span(span),
        }
    }
}

/// Deepest node `annotate_trace` visits (the tree itself stops at 100).
const MAX_TREE_DEPTH: usize = 128;

/// Adds `messages` to every span of a serialized trace tree (`roots` →
/// nodes of `span` and `children`), read from the spans' own fields.
pub fn annotate_trace(tree: &mut Value) {
    fn node(n: &mut Value, depth: usize) {
        if let Some(span) = n.get_mut("span") {
            let text = |k: &str| span.get(k).and_then(Value::as_str);
            let c = of_fields(
                text("operation_type").unwrap_or(""),
                text("path").unwrap_or(""),
                text("name").unwrap_or(""),
                text("request_body"),
                text("response_body"),
            );
            if let (Some(obj), Ok(m)) = (span.as_object_mut(), serde_json::to_value(&c)) {
                obj.insert("messages".into(), m);
            }
        }
        // The tree is capped in depth (`admin::hierarchy`); so is this walk.
        if depth > MAX_TREE_DEPTH {
            return;
        }
        if let Some(Value::Array(children)) = n.get_mut("children") {
            for c in children {
                node(c, depth + 1);
            }
        }
    }
    if let Some(Value::Array(roots)) = tree.get_mut("roots") {
        for r in roots {
            node(r, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exported(m: &Messages) -> Value {
        serde_json::from_str(&m.semconv().unwrap()).unwrap()
    }

    #[test]
    fn openai_chat_input_and_output() {
        let req = r#"{"model":"gpt-4o","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Weather?"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},{"role":"tool","tool_call_id":"call_1","content":"sunny"}]}"#;
        let v = exported(&input(Endpoint::Chat, req));
        assert_eq!(v[0]["parts"][0]["content"], "Be brief.");
        assert_eq!(v[2]["parts"][0]["type"], "tool_call");
        assert_eq!(v[2]["parts"][0]["arguments"]["city"], "Paris");
        assert_eq!(v[3]["parts"][0]["type"], "tool_call_response");
        assert_eq!(v[3]["parts"][0]["id"], "call_1");
        let resp = r#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}]}"#;
        let v = exported(&output(Endpoint::Chat, resp));
        assert_eq!(v[0]["parts"][0]["content"], "Hi");
        assert_eq!(v[0]["finish_reason"], "stop");
    }

    #[test]
    fn streams_are_reassembled() {
        let sse = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        let v = exported(&output(Endpoint::Chat, sse));
        assert_eq!(v[0]["parts"][0]["content"], "Hello");
        assert_eq!(v[0]["finish_reason"], "stop");
        let sse = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi there\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"}}\n\n";
        let v = exported(&output(Endpoint::Messages, sse));
        assert_eq!(v[0]["parts"][0]["content"], "Hi there");
        assert_eq!(v[0]["finish_reason"], "end_turn");
    }

    #[test]
    fn unreadable_bodies_give_none() {
        assert_eq!(
            input(Endpoint::Chat, "{\"messages\":[…[truncated 10 bytes]").semconv(),
            None
        );
        assert_eq!(output(Endpoint::Chat, "not json").semconv(), None);
        assert_eq!(input(Endpoint::Responses, r#"{"input":3}"#).semconv(), None);
        // The UI still sees a body that is not JSON, as it was.
        assert_eq!(
            output(Endpoint::Chat, "not json").shown_json(),
            json!([{"role": "assistant", "parts": [{"type": "text", "content": "not json"}]}])
        );
    }

    #[test]
    fn exact_export_of_each_format() {
        // Chat: whole and streamed tool calls, n choices.
        let resp = r#"{"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"},{"index":1,"text":"legacy"}]}"#;
        assert_eq!(
            exported(&output(Endpoint::Chat, resp)),
            json!([
                {"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "f", "arguments": {"a": 1}}], "finish_reason": "tool_calls"},
                {"role": "assistant", "parts": [{"type": "text", "content": "legacy"}], "finish_reason": null}
            ])
        );
        let sse = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\"\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\":1}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"index\":1,\"delta\":{\"content\":\"b\"},\"finish_reason\":\"length\"}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
            "data: [DONE]\n\n"
        );
        assert_eq!(
            exported(&output(Endpoint::Chat, sse)),
            json!([
                {"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "f", "arguments": {"a": 1}}], "finish_reason": "tool_calls"},
                {"role": "assistant", "parts": [{"type": "text", "content": "b"}], "finish_reason": "length"}
            ])
        );
        // Anthropic: request with system, blocks and tool results; a whole
        // message; a stream with a tool call.
        let req = r#"{"system":[{"type":"text","text":"S"}],"messages":[{"role":"user","content":[{"type":"text","text":"Q"},{"type":"image","source":{}}]},{"role":"assistant","content":[{"type":"thinking","thinking":"hm"},{"type":"tool_use","id":"t1","name":"f","input":{"a":1}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"ok","is_error":true}]}]}"#;
        assert_eq!(
            exported(&input(Endpoint::Messages, req)),
            json!([
                {"role": "system", "parts": [{"type": "text", "content": "S"}]},
                {"role": "user", "parts": [{"type": "text", "content": "Q"}, {"type": "image"}]},
                {"role": "assistant", "parts": [{"type": "thinking"}, {"type": "tool_call", "id": "t1", "name": "f", "arguments": {"a": 1}}]},
                {"role": "user", "parts": [{"type": "tool_call_response", "id": "t1", "response": "ok"}]}
            ])
        );
        let whole = r#"{"id":"m","type":"message","role":"assistant","content":[{"type":"text","text":"A"},{"type":"text","text":"B"}],"stop_reason":"end_turn"}"#;
        assert_eq!(
            exported(&output(Endpoint::Messages, whole)),
            json!([{"role": "assistant", "parts": [{"type": "text", "content": "A"}, {"type": "text", "content": "B"}], "finish_reason": "end_turn"}])
        );
        let sse = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":1}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me.\"}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t9\",\"name\":\"f\",\"input\":{}}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"2}\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":3}}\n\n",
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        );
        assert_eq!(
            exported(&output(Endpoint::Messages, sse)),
            json!([{"role": "assistant", "parts": [{"type": "text", "content": "Let me."}, {"type": "tool_call", "id": "t9", "name": "f", "arguments": {"a": 2}}], "finish_reason": "tool_use"}])
        );
        // Responses: request items, a whole response, a completed stream.
        let req = r#"{"instructions":"Be brief.","input":[{"role":"user","content":[{"type":"input_text","text":"Q"}]},{"type":"function_call","call_id":"c1","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"c1","output":"22"}]}"#;
        assert_eq!(
            exported(&input(Endpoint::Responses, req)),
            json!([
                {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
                {"role": "user", "parts": [{"type": "text", "content": "Q"}]},
                {"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "f", "arguments": {}}]},
                {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": "22"}]}
            ])
        );
        let whole = r#"{"id":"r","object":"response","status":"completed","error":null,"output":[{"type":"reasoning","summary":[]},{"type":"message","role":"assistant","content":[{"type":"output_text","text":"Hi"}]},{"type":"function_call","call_id":"c2","name":"g","arguments":"{\"x\":1}"}]}"#;
        let want = json!([{"role": "assistant", "parts": [{"type": "text", "content": "Hi"}, {"type": "tool_call", "id": "c2", "name": "g", "arguments": {"x": 1}}], "finish_reason": "tool_call"}]);
        assert_eq!(exported(&output(Endpoint::Responses, whole)), want);
        let sse = format!(
            "event: response.created\ndata: {{\"type\":\"response.created\",\"response\":{{\"id\":\"r\",\"status\":\"in_progress\",\"output\":[]}}}}\n\nevent: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"output_index\":1,\"delta\":\"Hi\"}}\n\nevent: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{whole}}}\n\n"
        );
        assert_eq!(exported(&output(Endpoint::Responses, &sse)), want);
        // Legacy completions and embeddings.
        assert_eq!(
            exported(&input(Endpoint::Completions, r#"{"prompt":"P"}"#)),
            json!([{"role": "user", "parts": [{"type": "text", "content": "P"}]}])
        );
        assert_eq!(
            exported(&input(Endpoint::Embeddings, r#"{"input":["a","b"]}"#)),
            json!([])
        );
    }

    #[test]
    fn the_ui_sees_what_the_export_leaves_out() {
        let resp = r#"{"choices":[{"message":{"role":"assistant","content":"x","refusal":"no","reasoning_content":"why"},"finish_reason":"stop"}]}"#;
        let out = output(Endpoint::Chat, resp);
        assert_eq!(
            exported(&out),
            json!([{"role": "assistant", "parts": [{"type": "text", "content": "x"}], "finish_reason": "stop"}])
        );
        assert_eq!(
            out.shown_json()[0]["parts"],
            json!([{"type": "text", "content": "x"}, {"type": "refusal", "content": "no"}, {"type": "reasoning", "content": "why"}])
        );
        // An error body: shown, never exported.
        let e = output(
            Endpoint::Messages,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(e.semconv(), None);
        assert_eq!(
            e.shown_json(),
            json!([{"role": "error", "parts": [{"type": "text", "content": "Overloaded"}]}])
        );
        // Embeddings: the inputs and a count, for the UI only.
        let i = input(Endpoint::Embeddings, r#"{"input":["a","b"]}"#);
        assert_eq!(
            i.shown_json(),
            json!([{"role": "user", "parts": [{"type": "text", "content": "a\nb"}]}])
        );
        let o = output(
            Endpoint::Embeddings,
            r#"{"object":"list","data":[{"embedding":[0.1]}],"usage":{"prompt_tokens":1}}"#,
        );
        assert_eq!(o.semconv(), None);
        assert_eq!(o.shown_json()[0]["parts"][0]["content"], "[1 embedding]");
        // A cut Responses stream: the text seen, for the UI.
        let sse = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"output_index\":0,\"delta\":\"Hel\"}\n\nevent: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"output_index\":0,\"delta\":\"lo\"}\n\n";
        let o = output(Endpoint::Responses, sse);
        assert_eq!(o.semconv(), None);
        assert_eq!(o.shown_json()[0]["parts"][0]["content"], "Hello");
    }

    #[test]
    fn stored_spans_name_their_endpoint() {
        assert_eq!(
            Endpoint::of_stored("llm_call", "/v1/chat/completions"),
            Some(Endpoint::Chat)
        );
        assert_eq!(
            Endpoint::of_stored("llm_call", "/anthropic/v1/messages/"),
            Some(Endpoint::Messages)
        );
        assert_eq!(
            Endpoint::of_stored("llm_call", "/openai/deployments/d/completions"),
            Some(Endpoint::Completions)
        );
        assert_eq!(
            Endpoint::of_stored("llm_call", "/v1/responses"),
            Some(Endpoint::Responses)
        );
        assert_eq!(
            Endpoint::of_stored("embedding", "/v1/embeddings"),
            Some(Endpoint::Embeddings)
        );
        assert_eq!(Endpoint::of_stored("http", "/v1/chat/completions"), None);
    }

    #[test]
    fn a_tool_span_is_its_call_and_result() {
        let mut s = Span::start(0);
        s.operation_type = "tool_call".into();
        s.name = "execute_tool get_weather".into();
        s.request_body = Some(r#"{"city":"Paris"}"#.into());
        s.response_body = Some("18 C".into());
        let v = serde_json::to_value(SpanView::new(&s)).unwrap();
        assert_eq!(v["messages"]["input"][0]["parts"][0]["name"], "get_weather");
        assert_eq!(v["messages"]["output"][0]["parts"][0]["response"], "18 C");
        assert_eq!(v["span_id"], s.span_id.as_str());
    }

    proptest::proptest! {
        #[test]
        fn any_body_reads_without_panicking(body in "\\PC{0,200}", pick in 0usize..6) {
            let e = [Endpoint::Chat, Endpoint::Completions, Endpoint::Embeddings,
                     Endpoint::Responses, Endpoint::Messages, Endpoint::CountTokens][pick];
            let _ = input(e, &body).semconv();
            let _ = output(e, &body).shown_json();
            let sse = format!("data: {body}\n\n");
            let _ = output(e, &sse).semconv();
        }
    }
}
