//! OpenAI Chat Completions, legacy Completions and Embeddings (and
//! OpenAI-compatible servers: Azure, Groq, Together, Mistral, DeepSeek,
//! OpenRouter, Gemini's compatible endpoint, vLLM, Ollama): request,
//! response and stream chunks to span fields.

use std::borrow::Cow;

use serde::Deserialize;

use super::messages::{self, Messages, Part};
use super::{
    push_capped, ErrorObject, ResponseFacts, ToolCall, Usage, MAX_TOOL_ARGS, MAX_TOOL_CALLS,
};
use crate::record::stitch::{self, Conversation, Msg, TextDigest, ToolResult};
use crate::record::tokens::{self, Encoding, StreamCounter};

// === wire types (only the fields llmtap reads; unknown fields ignored) ===

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
    error: Option<ErrorObject>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default, borrow)]
    message: Option<Message<'a>>,
    /// Legacy completions.
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
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
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<WireToolCall<'a>>>,
}

#[derive(Deserialize)]
struct WireToolCall<'a> {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
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
    error: Option<ErrorObject>,
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    /// Legacy completions.
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
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
    reasoning: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<WireToolCall<'a>>>,
}

// === requests ===

fn count_str(enc: Encoding, v: Option<&serde_json::Value>) -> usize {
    v.and_then(|s| s.as_str())
        .map_or(0, |s| tokens::count(enc, s))
}

/// Estimated prompt tokens of a chat request, with OpenAI's counting rule
/// (3 tokens per message, 1 per name, 3 to prime the reply) plus the tool
/// definitions as JSON text.
pub fn estimate_chat_input(body: &[u8], enc: Encoding) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let messages = v.get("messages")?.as_array()?;
    let mut total = 3usize;
    for m in messages {
        total += 3 + count_str(enc, m.get("role"));
        if let Some(name) = m.get("name").and_then(|r| r.as_str()) {
            total += 1 + tokens::count(enc, name);
        }
        total += count_content(enc, m.get("content"));
        for c in m
            .get("tool_calls")
            .and_then(|c| c.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(f) = c.get("function") {
                total += count_str(enc, f.get("name")) + count_str(enc, f.get("arguments"));
            }
        }
    }
    if let Some(tools) = v.get("tools") {
        total += tokens::count(enc, &tools.to_string());
    }
    Some(total as i64)
}

/// Tokens of a message `content`: a string, or an array of parts with
/// `text` (images and audio are not estimated).
pub(crate) fn count_content(enc: Encoding, content: Option<&serde_json::Value>) -> usize {
    match content {
        Some(serde_json::Value::String(s)) => tokens::count(enc, s),
        Some(serde_json::Value::Array(parts)) => {
            parts.iter().map(|p| count_str(enc, p.get("text"))).sum()
        }
        _ => 0,
    }
}

/// Estimated tokens of a legacy completion's `prompt` or an embedding's
/// `input`: a string or an array of strings (token-id arrays count as their
/// length).
pub fn estimate_prompt_input(body: &[u8], enc: Encoding) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let p = v.get("prompt").or_else(|| v.get("input"))?;
    fn count(enc: Encoding, v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::String(s) => tokens::count(enc, s),
            serde_json::Value::Array(items) => {
                if items.iter().all(|i| i.is_number()) {
                    items.len()
                } else {
                    items.iter().map(|i| count(enc, i)).sum()
                }
            }
            _ => 0,
        }
    }
    Some(count(enc, p) as i64)
}

/// A chat request's messages, reduced for stitching.
///
/// Read in one typed pass when every message has the usual shape (string
/// fields, `content` a string or an array of parts); anything else is read
/// again as a `serde_json::Value`, which reduces every shape the same way.
pub fn conversation(body: &[u8]) -> Option<Conversation> {
    match serde_json::from_slice::<RequestView>(body) {
        Ok(r) => Some(r.conversation()),
        Err(_) => conversation_value(&serde_json::from_slice(body).ok()?),
    }
}

/// A chat request as stitching reads it.
#[derive(Deserialize)]
struct RequestView<'a> {
    #[serde(borrow)]
    messages: Vec<MessageView<'a>>,
}

#[derive(Deserialize)]
struct MessageView<'a> {
    #[serde(default, borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    content: Option<ContentView<'a>>,
    #[serde(default, borrow)]
    tool_calls: Option<Vec<CallView<'a>>>,
    #[serde(default, borrow)]
    tool_call_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct CallView<'a> {
    #[serde(default, borrow)]
    id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct PartView<'a> {
    #[serde(default, borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
}

/// A message's `content`: a string or an array of parts. Any other value
/// fails the typed reading.
enum ContentView<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<PartView<'a>>),
}

impl<'de: 'a, 'a> Deserialize<'de> for ContentView<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = ContentView<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(ContentView::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ContentView::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut parts = Vec::new();
                while let Some(p) = seq.next_element()? {
                    parts.push(p);
                }
                Ok(ContentView::Parts(parts))
            }
        }
        d.deserialize_any(Visit(std::marker::PhantomData))
    }
}

impl RequestView<'_> {
    fn conversation(&self) -> Conversation {
        let mut conv = Conversation::default();
        for m in &self.messages {
            let mut text = TextDigest::default();
            // A tool message's content is also kept as the tool's result.
            let mut result = m.tool_call_id.as_ref().map(|_| String::new());
            let mut keep = |t: &str| {
                if let Some(r) = result.as_mut() {
                    push_capped(r, t, super::MAX_TOOL_RESULT);
                }
            };
            match &m.content {
                Some(ContentView::Text(s)) => {
                    text.push(s);
                    keep(s);
                }
                Some(ContentView::Parts(parts)) => {
                    for p in parts {
                        let kind = p.kind.as_deref().unwrap_or("text");
                        if let Some(t) = p.text.as_deref() {
                            if matches!(kind, "text" | "input_text" | "output_text") {
                                text.separate();
                                text.push(t);
                            }
                            keep(t);
                        }
                    }
                }
                None => {}
            }
            let ids = m
                .tool_calls
                .iter()
                .flatten()
                .filter_map(|c| c.id.as_deref());
            push_message(
                &mut conv,
                m.role.as_deref().unwrap_or(""),
                &text,
                ids,
                m.tool_call_id.as_deref().zip(result),
            );
        }
        conv
    }
}

/// [`conversation`] for a request of any shape.
fn conversation_value(v: &serde_json::Value) -> Option<Conversation> {
    let messages = v.get("messages")?.as_array()?;
    let mut conv = Conversation::default();
    for m in messages {
        let mut text = TextDigest::default();
        super::digest_content(&mut text, m.get("content"));
        let ids = m
            .get("tool_calls")
            .and_then(|c| c.as_array())
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("id").and_then(|i| i.as_str()));
        let result = m
            .get("tool_call_id")
            .and_then(|i| i.as_str())
            .map(|id| (id, super::result_text(m.get("content"))));
        let role = m.get("role").and_then(|r| r.as_str()).unwrap_or("");
        push_message(&mut conv, role, &text, ids, result);
    }
    Some(conv)
}

/// Adds one message (and the tool result it carries) to a conversation.
fn push_message<'i>(
    conv: &mut Conversation,
    role: &str,
    text: &TextDigest,
    call_ids: impl Iterator<Item = &'i str>,
    result: Option<(&str, String)>,
) {
    let mut ids: Vec<String> = call_ids.map(str::to_string).collect();
    if let Some((id, content)) = result {
        ids.push(id.to_string());
        conv.results.push(ToolResult {
            call_id: id.to_string(),
            content,
        });
    }
    conv.msgs.push(Msg {
        digest: stitch::message_digest(role, text, &ids),
        is_assistant: role == "assistant",
    });
}

// === whole responses ===

/// Span fields of a non-streamed chat (or legacy completion) response.
/// When it reports no output tokens, the generated text is kept for
/// estimation.
pub fn parse_chat_response(body: &[u8], enc: Encoding) -> Option<ResponseFacts> {
    let r: ChatResponse = serde_json::from_slice(body).ok()?;
    let mut facts = ResponseFacts {
        response_id: r.id,
        response_model: r.model,
        usage: r.usage.as_ref().map(OaUsage::to_usage).unwrap_or_default(),
        error: r.error.as_ref().map(ErrorObject::to_api_error),
        ..ResponseFacts::default()
    };
    let choices = r.choices.unwrap_or_default();
    facts.finish_reason = choices.iter().find_map(|c| c.finish_reason.clone());
    if let Some(m) = choices.first().and_then(|c| c.message.as_ref()) {
        let mut text = TextDigest::default();
        if let Some(c) = &m.content {
            text.push(c);
        }
        let ids: Vec<String> = m
            .tool_calls
            .iter()
            .flatten()
            .filter_map(|c| c.id.as_deref().map(str::to_string))
            .collect();
        facts.assistant_digest = Some(stitch::message_digest("assistant", &text, &ids));
    }
    let want_text = facts.usage.output.is_none() && facts.error.is_none();
    let mut counter = want_text.then(|| StreamCounter::new(enc));
    let mut push = |text: &str| {
        if let Some(c) = counter.as_mut() {
            c.push(text);
        }
    };
    for c in &choices {
        if let Some(text) = &c.text {
            push(text);
        }
        let Some(m) = &c.message else { continue };
        for text in [&m.content, &m.refusal, &m.reasoning_content]
            .into_iter()
            .flatten()
        {
            push(text);
        }
        for call in m.tool_calls.iter().flatten() {
            let f = call.function.as_ref();
            let name = f.and_then(|f| f.name.as_deref()).unwrap_or("");
            let args = f.and_then(|f| f.arguments.as_deref()).unwrap_or("");
            push(name);
            push(args);
            if facts.tool_calls.len() < MAX_TOOL_CALLS {
                let mut arguments = String::new();
                push_capped(&mut arguments, args, MAX_TOOL_ARGS);
                facts.tool_calls.push(ToolCall {
                    id: call.id.as_deref().unwrap_or("").to_string(),
                    name: name.to_string(),
                    arguments,
                });
            }
        }
    }
    facts.output_text = counter;
    Some(facts)
}

/// Span fields of an embeddings response (float or base64: only the usage
/// and model are read).
pub fn parse_embeddings_response(body: &[u8]) -> Option<ResponseFacts> {
    #[derive(Deserialize)]
    struct Embeddings {
        #[serde(default)]
        model: Option<String>,
        #[serde(default)]
        usage: Option<OaUsage>,
    }
    let r: Embeddings = serde_json::from_slice(body).ok()?;
    let mut usage = r.usage.as_ref().map(OaUsage::to_usage).unwrap_or_default();
    // Embeddings generate no tokens.
    if usage.input.is_some() {
        usage.output = Some(0);
    }
    Some(ResponseFacts {
        response_model: r.model,
        usage,
        ..ResponseFacts::default()
    })
}

mod bodies;
mod stream;

pub use bodies::{chat_request_messages, embeddings_messages, prompt_messages, response_messages};
pub use stream::ChatStream;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_estimate_follows_the_cookbook_rule() {
        // "You are helpful." = 4 tokens, "Hi" = 1, roles 1 each:
        // 3 + (3+1+4) + (3+1+1) = 16.
        let n = estimate_chat_input(
            br#"{"model":"gpt-4o","messages":[{"role":"system","content":"You are helpful."},{"role":"user","content":[{"type":"text","text":"Hi"}]}]}"#,
            Encoding::O200k,
        )
        .unwrap();
        assert_eq!(n, 16);
        assert_eq!(
            estimate_prompt_input(br#"{"input":["Hello, world!","Hi"]}"#, Encoding::O200k),
            Some(5)
        );
        assert_eq!(
            estimate_prompt_input(br#"{"prompt":[1,2,3]}"#, Encoding::O200k),
            Some(3)
        );
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
    fn response_without_usage_keeps_text_for_estimation() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"Hello, world!"},"finish_reason":"stop"},{"message":{"content":null,"refusal":"No."},"finish_reason":"stop"}]}"#;
        let f = parse_chat_response(body, Encoding::O200k).unwrap();
        assert_eq!(f.usage.output, None);
        assert_eq!(f.output_text.unwrap().total(), 4 + 2);
        let legacy = br#"{"id":"cmpl","choices":[{"text":"Hello, world!","index":0,"finish_reason":"length"}]}"#;
        let f = parse_chat_response(legacy, Encoding::O200k).unwrap();
        assert_eq!(f.finish_reason.as_deref(), Some("length"));
        assert_eq!(f.output_text.unwrap().total(), 4);
    }

    #[test]
    fn response_tool_calls() {
        let body = br#"{"id":"c","choices":[{"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":5,"completion_tokens":9}}"#;
        let f = parse_chat_response(body, Encoding::O200k).unwrap();
        assert_eq!(f.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(
            f.tool_calls,
            vec![ToolCall {
                id: "call_1".into(),
                name: "get_weather".into(),
                arguments: r#"{"city":"Paris"}"#.into()
            }]
        );
    }

    #[test]
    fn embeddings_usage() {
        let f = parse_embeddings_response(br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":"AAAA"}],"model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}}"#).unwrap();
        assert_eq!(f.usage.input, Some(8));
        assert_eq!(f.usage.output, Some(0));
        assert_eq!(f.response_model.as_deref(), Some("text-embedding-3-small"));
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
    fn streamed_tool_call_fragments_are_assembled() {
        let mut s = ChatStream::new(Encoding::O200k, false);
        assert!(s.on_event(br#"{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]},"finish_reason":null}]}"#));
        for frag in [r#"{\""#, "city", r#"\":\""#, "Paris", r#"\"}"#] {
            let ev = format!(
                r#"{{"id":"c","choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":0,"function":{{"arguments":"{frag}"}}}}]}},"finish_reason":null}}]}}"#
            );
            assert!(s.on_event(ev.as_bytes()));
        }
        s.on_event(br#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_b","function":{"name":"now","arguments":"{}"}}]},"finish_reason":null}]}"#);
        s.on_event(
            br#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        );
        let f = s.finish();
        assert_eq!(f.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(f.tool_calls.len(), 2);
        assert_eq!(f.tool_calls[0].id, "call_a");
        assert_eq!(f.tool_calls[0].name, "get_weather");
        assert_eq!(f.tool_calls[0].arguments, r#"{"city":"Paris"}"#);
        assert_eq!(f.tool_calls[1].name, "now");
    }

    #[test]
    fn streamed_and_whole_replies_have_the_same_digest_as_the_next_requests_copy() {
        let whole = br#"{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":"Hello, world!"},"finish_reason":"stop"}]}"#;
        let d_whole = parse_chat_response(whole, Encoding::O200k)
            .unwrap()
            .assistant_digest
            .unwrap();
        let mut s = ChatStream::new(Encoding::O200k, false);
        s.on_event(
            br#"{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
        );
        s.on_event(br#"{"id":"c","choices":[{"index":0,"delta":{"content":"Hello,"}}]}"#);
        s.on_event(br#"{"id":"c","choices":[{"index":1,"delta":{"content":"other choice"}}]}"#);
        s.on_event(br#"{"id":"c","choices":[{"index":0,"delta":{"content":" world!"}}]}"#);
        let d_stream = s.finish().assistant_digest.unwrap();
        assert_eq!(d_stream, d_whole);
        // As the next request carries it.
        let next = br#"{"messages":[{"role":"assistant","content":"Hello, world!"}]}"#;
        assert_eq!(conversation(next).unwrap().msgs[0].digest, d_whole);
        // A streamed tool call digests like the whole one.
        let mut s = ChatStream::new(Encoding::O200k, false);
        s.on_event(br#"{"id":"c","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","function":{"name":"f","arguments":"{}"}}]}}]}"#);
        let whole = br#"{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}}]}}]}"#;
        assert_eq!(
            s.finish().assistant_digest,
            parse_chat_response(whole, Encoding::O200k)
                .unwrap()
                .assistant_digest
        );
    }

    #[test]
    fn typed_and_value_readings_of_a_conversation_agree() {
        let bodies: &[&[u8]] = &[
            br#"{"model":"m","messages":[{"role":"system","content":"Be  brief."},{"role":"user","content":[{"type":"text","text":"Hi"},{"type":"image_url","image_url":{"url":"x"}},{"text":"there"}]}]}"#,
            br#"{"messages":[{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"f","arguments":"{}"}},{"type":"function"}]},{"role":"tool","tool_call_id":"call_1","content":[{"type":"text","text":"22"},{"type":"other","text":"C"}]}]}"#,
            br#"{"messages":[{"role":"tool","tool_call_id":"call_2","content":"sunny \u00e9"},{"role":"developer","content":"x"}]}"#,
            // Shapes only the `Value` reading takes.
            br#"{"messages":[{"role":"tool","tool_call_id":"c","content":{"b":1,"a":2}}]}"#,
            br#"{"messages":[{"role":7,"content":"x"},"not a message",{"content":[1,{"type":5,"text":"t"}]}]}"#,
            br#"{"messages":[{"role":"user","role":"assistant","content":"dup"}]}"#,
            br#"{"messages":{"role":"user"}}"#,
            br#"not json"#,
        ];
        for (i, body) in bodies.iter().enumerate() {
            let typed = conversation(body);
            let value = serde_json::from_slice(body)
                .ok()
                .and_then(|v| conversation_value(&v));
            let key = |c: &Option<Conversation>| {
                c.as_ref().map(|c| {
                    let msgs: Vec<(u64, bool)> =
                        c.msgs.iter().map(|m| (m.digest, m.is_assistant)).collect();
                    let results: Vec<(String, String)> = c
                        .results
                        .iter()
                        .map(|r| (r.call_id.clone(), r.content.clone()))
                        .collect();
                    (msgs, results)
                })
            };
            assert_eq!(key(&typed), key(&value), "body {i}");
            if i < 3 {
                assert!(
                    serde_json::from_slice::<RequestView>(body).is_ok(),
                    "body {i} typed"
                );
            } else {
                assert!(
                    serde_json::from_slice::<RequestView>(body).is_err(),
                    "body {i} value"
                );
            }
        }
        let c = conversation(bodies[1]).unwrap();
        assert_eq!(c.results[0].call_id, "call_1");
        assert_eq!(c.results[0].content, "22C");
        assert_eq!(c.msgs.len(), 2);
    }

    #[test]
    fn n_choices_and_legacy_text_stream() {
        let mut s = ChatStream::new(Encoding::O200k, true);
        s.on_event(br#"{"id":"c","choices":[{"index":0,"delta":{"content":"Hello,"}},{"index":1,"delta":{"content":"Hello,"}}]}"#);
        s.on_event(br#"{"id":"c","choices":[{"index":1,"delta":{},"finish_reason":"length"}]}"#);
        s.on_event(br#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#);
        let f = s.finish();
        assert_eq!(f.finish_reason.as_deref(), Some("stop"));
        assert_eq!(f.output_text.unwrap().total(), 4);
        let mut s = ChatStream::new(Encoding::O200k, true);
        assert!(s.on_event(br#"{"id":"cmpl","object":"text_completion","choices":[{"text":"Hello, world!","index":0,"finish_reason":null}]}"#));
        assert_eq!(s.finish().output_text.unwrap().total(), 4);
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
