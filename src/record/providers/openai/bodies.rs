//! OpenAI chat, legacy completion and embeddings bodies read as messages
//! (for the OTLP export and the admin API's `messages`): requests and whole
//! responses; a recorded stream is replayed through [`super::ChatStream`].

use super::super::messages::{self, Messages, Part};

/// A chat request's messages (`messages`; `None` without them).
pub fn chat_request_messages(v: &serde_json::Value) -> Option<Messages> {
    let list = v.get("messages")?.as_array()?;
    Some(Messages::exported(
        list.iter().filter_map(messages::chat_message).collect(),
    ))
}

/// A legacy completion's `prompt` or an embedding's `input` as the user's
/// message. A string is exported; a list is shown joined (the export
/// carries `[]` for an embedding's list, nothing for a prompt list).
pub fn prompt_messages(v: &serde_json::Value, key: &str) -> Option<Messages> {
    match v.get(key)? {
        serde_json::Value::String(s) => Some(Messages::exported(vec![messages::Message::new(
            "user",
            vec![Part::Text(s.clone())],
        )])),
        serde_json::Value::Array(items) => {
            let text: Vec<String> = items
                .iter()
                .map(|i| match i {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            let shown = vec![messages::Message::shown("user", text.join("\n"))];
            Some(Messages {
                list: shown,
                exported: key == "input",
            })
        }
        _ => None,
    }
}

/// A whole chat (or legacy completion) response: one message per choice.
pub fn response_messages(v: &serde_json::Value) -> Option<Messages> {
    let choices = v.get("choices")?.as_array()?;
    Some(Messages::exported(
        choices
            .iter()
            .map(|c| {
                let parts = match (c.get("message"), messages::str_of(c, "text")) {
                    (Some(m), _) => messages::chat_parts(m),
                    (None, Some(t)) => vec![Part::Text(t.to_string())],
                    (None, None) => Vec::new(),
                };
                messages::reply(parts, messages::field(c, "finish_reason"))
            })
            .collect(),
    ))
}

/// An embeddings response: a count the UI shows (the export has none).
pub fn embeddings_messages(v: &serde_json::Value) -> Option<Messages> {
    let n = v.get("data")?.as_array()?.len();
    if messages::str_of(v, "object") != Some("list") {
        return None;
    }
    let s = if n == 1 { "" } else { "s" };
    Some(Messages::shown(vec![messages::Message::shown(
        "assistant",
        format!("[{n} embedding{s}]"),
    )]))
}
