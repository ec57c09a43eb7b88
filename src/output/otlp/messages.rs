//! Message content for OTLP: captured request/response bodies →
//! `gen_ai.input.messages` / `gen_ai.output.messages` JSON in the GenAI
//! semantic conventions' parts format (`[{"role", "parts": [{"type":
//! "text", "content"} | {"type": "tool_call", "id", "name", "arguments"} |
//! {"type": "tool_call_response", "id", "response"}], "finish_reason"}]`).
//!
//! Reads OpenAI chat / legacy completions / Responses and Anthropic
//! Messages bodies, whole JSON or a recorded SSE stream. Pure and
//! best-effort: a body it cannot read (truncated, another format) yields
//! `None`, never an error. Never sees headers, so never a key.

use serde_json::{json, Map, Value};

fn text_part(t: &str) -> Value {
    json!({"type": "text", "content": t})
}

fn args_value(raw: &Value) -> Value {
    match raw {
        // OpenAI sends arguments as JSON text: keep the object when it parses.
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| raw.clone()),
        other => other.clone(),
    }
}

/// Parts from a content value: a string, or an array of typed blocks.
fn content_parts(content: &Value, parts: &mut Vec<Value>) {
    match content {
        Value::String(s) => parts.push(text_part(s)),
        Value::Array(blocks) => {
            for b in blocks {
                let kind = b.get("type").and_then(Value::as_str).unwrap_or("");
                match kind {
                    "text" | "input_text" | "output_text" => {
                        if let Some(t) = b.get("text").and_then(Value::as_str) {
                            parts.push(text_part(t));
                        }
                    }
                    "tool_use" => parts.push(json!({
                        "type": "tool_call",
                        "id": b.get("id"),
                        "name": b.get("name"),
                        "arguments": b.get("input"),
                    })),
                    "tool_result" => parts.push(json!({
                        "type": "tool_call_response",
                        "id": b.get("tool_use_id"),
                        "response": b.get("content"),
                    })),
                    "" => {}
                    other => parts.push(json!({"type": other})),
                }
            }
        }
        _ => {}
    }
}

fn openai_tool_calls(calls: &Value, parts: &mut Vec<Value>) {
    for c in calls.as_array().into_iter().flatten() {
        let f = c.get("function");
        parts.push(json!({
            "type": "tool_call",
            "id": c.get("id"),
            "name": f.and_then(|f| f.get("name")),
            "arguments": f.and_then(|f| f.get("arguments")).map(args_value),
        }));
    }
}

/// One chat message (OpenAI or Anthropic) in the parts format.
fn message(m: &Value) -> Option<Value> {
    let role = m.get("role").and_then(Value::as_str)?;
    let mut parts = Vec::new();
    if role == "tool" {
        parts.push(json!({
            "type": "tool_call_response",
            "id": m.get("tool_call_id"),
            "response": m.get("content"),
        }));
    } else {
        if let Some(c) = m.get("content") {
            content_parts(c, &mut parts);
        }
        if let Some(calls) = m.get("tool_calls") {
            openai_tool_calls(calls, &mut parts);
        }
    }
    Some(json!({"role": role, "parts": parts}))
}

/// `gen_ai.input.messages` from a request body.
pub fn input(body: &str) -> Option<String> {
    let v: Value = serde_json::from_str(body).ok()?;
    let mut out = Vec::new();
    for key in ["system", "instructions"] {
        if let Some(sys) = v.get(key) {
            let mut parts = Vec::new();
            content_parts(sys, &mut parts);
            if !parts.is_empty() {
                out.push(json!({"role": "system", "parts": parts}));
            }
        }
    }
    if let Some(msgs) = v.get("messages").and_then(Value::as_array) {
        out.extend(msgs.iter().filter_map(message));
    } else if let Some(input) = v.get("input") {
        // Responses API: a string, or a list of messages and items.
        match input {
            Value::String(s) => out.push(json!({"role": "user", "parts": [text_part(s)]})),
            Value::Array(items) => {
                for item in items {
                    match item.get("type").and_then(Value::as_str) {
                        Some("function_call") => out.push(json!({"role": "assistant", "parts": [{
                            "type": "tool_call", "id": item.get("call_id"),
                            "name": item.get("name"),
                            "arguments": item.get("arguments").map(args_value)}]})),
                        Some("function_call_output") => {
                            out.push(json!({"role": "tool", "parts": [{
                            "type": "tool_call_response", "id": item.get("call_id"),
                            "response": item.get("output")}]}))
                        }
                        _ => out.extend(message(item)),
                    }
                }
            }
            _ => return None,
        }
    } else if let Some(Value::String(p)) = v.get("prompt") {
        out.push(json!({"role": "user", "parts": [text_part(p)]}));
    } else {
        return None;
    }
    Some(Value::Array(out).to_string())
}

/// `gen_ai.output.messages` from a response body (JSON or SSE).
pub fn output(body: &str) -> Option<String> {
    let trimmed = body.trim_start();
    let msgs = if trimmed.starts_with('{') {
        output_json(&serde_json::from_str(trimmed).ok()?)?
    } else if trimmed.starts_with("data:") || trimmed.starts_with("event:") {
        output_sse(body)?
    } else {
        return None;
    };
    Some(Value::Array(msgs).to_string())
}

fn output_json(v: &Value) -> Option<Vec<Value>> {
    if let Some(choices) = v.get("choices").and_then(Value::as_array) {
        return Some(
            choices
                .iter()
                .map(|c| {
                    let mut parts = Vec::new();
                    if let Some(m) = c.get("message") {
                        if let Some(content) = m.get("content") {
                            content_parts(content, &mut parts);
                        }
                        if let Some(calls) = m.get("tool_calls") {
                            openai_tool_calls(calls, &mut parts);
                        }
                    } else if let Some(t) = c.get("text").and_then(Value::as_str) {
                        parts.push(text_part(t));
                    }
                    json!({"role": "assistant", "parts": parts,
                           "finish_reason": c.get("finish_reason")})
                })
                .collect(),
        );
    }
    if v.get("type").and_then(Value::as_str) == Some("message") {
        let mut parts = Vec::new();
        content_parts(v.get("content")?, &mut parts);
        return Some(vec![json!({"role": "assistant", "parts": parts,
                                "finish_reason": v.get("stop_reason")})]);
    }
    if let Some(items) = v.get("output").and_then(Value::as_array) {
        let mut parts = Vec::new();
        for item in items {
            match item.get("type").and_then(Value::as_str) {
                Some("message") => {
                    if let Some(c) = item.get("content") {
                        content_parts(c, &mut parts);
                    }
                }
                Some("function_call") => parts.push(json!({
                    "type": "tool_call", "id": item.get("call_id"), "name": item.get("name"),
                    "arguments": item.get("arguments").map(args_value)})),
                _ => {}
            }
        }
        let finish = if parts.iter().any(|p| p["type"] == "tool_call") {
            "tool_call"
        } else {
            "stop"
        };
        return Some(vec![
            json!({"role": "assistant", "parts": parts, "finish_reason": finish}),
        ]);
    }
    None
}

/// Reassembles a streamed reply from its recorded SSE events.
fn output_sse(body: &str) -> Option<Vec<Value>> {
    // Per choice index: text, tool calls (index → id, name, arguments), finish.
    #[derive(Default)]
    struct Choice {
        text: String,
        calls: Vec<(Value, Value, String)>,
        finish: Value,
    }
    let mut choices: Vec<Choice> = Vec::new();
    fn at(i: usize, choices: &mut Vec<Choice>) {
        while choices.len() <= i {
            choices.push(Choice::default());
        }
    }
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data:") else {
            continue;
        };
        let Ok(ev) = serde_json::from_str::<Value>(data.trim()) else {
            continue;
        };
        match ev.get("type").and_then(Value::as_str) {
            Some("response.completed") => {
                return ev.get("response").and_then(output_json);
            }
            Some("content_block_start") => {
                at(0, &mut choices);
                let b = &ev["content_block"];
                if b["type"] == "tool_use" {
                    choices[0]
                        .calls
                        .push((b["id"].clone(), b["name"].clone(), String::new()));
                }
            }
            Some("content_block_delta") => {
                at(0, &mut choices);
                let d = &ev["delta"];
                if let Some(t) = d.get("text").and_then(Value::as_str) {
                    choices[0].text.push_str(t);
                }
                if let Some(j) = d.get("partial_json").and_then(Value::as_str) {
                    if let Some(c) = choices[0].calls.last_mut() {
                        c.2.push_str(j);
                    }
                }
            }
            Some("message_delta") => {
                at(0, &mut choices);
                choices[0].finish = ev["delta"]["stop_reason"].clone();
            }
            Some(_) => {}
            None => {
                for c in ev
                    .get("choices")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let i = c.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
                    if i > 64 {
                        continue;
                    }
                    at(i, &mut choices);
                    let ch = &mut choices[i];
                    let d = c.get("delta").unwrap_or(c);
                    if let Some(t) = d
                        .get("content")
                        .or_else(|| d.get("text"))
                        .and_then(Value::as_str)
                    {
                        ch.text.push_str(t);
                    }
                    for tc in d
                        .get("tool_calls")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let ti = tc.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
                        if ti > 64 {
                            continue;
                        }
                        while ch.calls.len() <= ti {
                            ch.calls.push((Value::Null, Value::Null, String::new()));
                        }
                        let call = &mut ch.calls[ti];
                        if let Some(id) = tc.get("id") {
                            call.0 = id.clone();
                        }
                        let f = tc.get("function");
                        if let Some(n) = f.and_then(|f| f.get("name")) {
                            call.1 = n.clone();
                        }
                        if let Some(a) = f.and_then(|f| f.get("arguments")).and_then(Value::as_str)
                        {
                            call.2.push_str(a);
                        }
                    }
                    if let Some(fr) = c.get("finish_reason").filter(|f| !f.is_null()) {
                        ch.finish = fr.clone();
                    }
                }
            }
        }
    }
    if choices.is_empty() {
        return None;
    }
    Some(
        choices
            .into_iter()
            .map(|c| {
                let mut parts = Vec::new();
                if !c.text.is_empty() {
                    parts.push(text_part(&c.text));
                }
                for (id, name, args) in c.calls {
                    let mut p = Map::new();
                    p.insert("type".into(), json!("tool_call"));
                    p.insert("id".into(), id);
                    p.insert("name".into(), name);
                    p.insert(
                        "arguments".into(),
                        serde_json::from_str(&args).unwrap_or(Value::String(args)),
                    );
                    parts.push(Value::Object(p));
                }
                json!({"role": "assistant", "parts": parts, "finish_reason": c.finish})
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_chat_input_and_output() {
        let req = r#"{"model":"gpt-4o","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Weather?"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},{"role":"tool","tool_call_id":"call_1","content":"sunny"}]}"#;
        let v: Value = serde_json::from_str(&input(req).unwrap()).unwrap();
        assert_eq!(v[0]["parts"][0]["content"], "Be brief.");
        assert_eq!(v[2]["parts"][0]["type"], "tool_call");
        assert_eq!(v[2]["parts"][0]["arguments"]["city"], "Paris");
        assert_eq!(v[3]["parts"][0]["type"], "tool_call_response");
        assert_eq!(v[3]["parts"][0]["id"], "call_1");
        let resp = r#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}]}"#;
        let v: Value = serde_json::from_str(&output(resp).unwrap()).unwrap();
        assert_eq!(v[0]["parts"][0]["content"], "Hi");
        assert_eq!(v[0]["finish_reason"], "stop");
    }

    #[test]
    fn streams_are_reassembled() {
        let sse = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        let v: Value = serde_json::from_str(&output(sse).unwrap()).unwrap();
        assert_eq!(v[0]["parts"][0]["content"], "Hello");
        assert_eq!(v[0]["finish_reason"], "stop");
        let sse = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi there\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"}}\n\n";
        let v: Value = serde_json::from_str(&output(sse).unwrap()).unwrap();
        assert_eq!(v[0]["parts"][0]["content"], "Hi there");
        assert_eq!(v[0]["finish_reason"], "end_turn");
    }

    #[test]
    fn unreadable_bodies_give_none() {
        assert_eq!(input("{\"messages\":[…[truncated 10 bytes]"), None);
        assert_eq!(output("not json"), None);
        assert_eq!(input(r#"{"input":3}"#), None);
    }
}
