//! OpenAI's Responses API, as the mock answers it: the response object,
//! its output items and the numbered stream events.

use super::*;

/// Events of a Responses API stream, numbered by `sequence_number`.
#[derive(Default)]
pub(super) struct ResponseEvents {
    pub(super) frames: Vec<Bytes>,
    pub(super) seq: u64,
}

impl ResponseEvents {
    /// Adds `event: KIND` with data `{"type":KIND<fields>,"sequence_number":K}`;
    /// `fields` is empty or starts with a comma.
    pub(super) fn push(&mut self, kind: &str, fields: &str) {
        let data = format!(
            "{{\"type\":\"{kind}\"{fields},\"sequence_number\":{}}}",
            self.seq
        );
        self.frames.push(named_event(kind, &data));
        self.seq += 1;
    }

    /// Adds the `stream-error` event.
    pub(super) fn push_error(&mut self) {
        self.push(
            "error",
            ",\"code\":\"server_error\",\"message\":\"mock stream error\",\"param\":null",
        );
    }
}

/// A Responses API `response` object.
pub(super) fn response_object(
    id_js: &str,
    model_js: &str,
    status: &str,
    error: &str,
    incomplete_details: &str,
    output: &str,
    usage: &str,
) -> String {
    format!(
        "{{\"id\":{id_js},\"object\":\"response\",\"created_at\":{MOCK_CREATED},\"status\":\"{status}\",\"error\":{error},\"incomplete_details\":{incomplete_details},\"instructions\":null,\"max_output_tokens\":null,\"model\":{model_js},\"output\":{output},\"parallel_tool_calls\":true,\"previous_response_id\":null,\"reasoning\":{{\"effort\":null,\"summary\":null}},\"store\":true,\"temperature\":1.0,\"text\":{{\"format\":{{\"type\":\"text\"}}}},\"tool_choice\":\"auto\",\"tools\":[],\"top_p\":1.0,\"truncation\":\"disabled\",\"usage\":{usage},\"user\":null,\"metadata\":{{}}}}"
    )
}

/// A Responses API `output_text` content part.
pub(super) fn output_text_part(text: &str) -> String {
    format!(
        "{{\"type\":\"output_text\",\"text\":{},\"annotations\":[],\"logprobs\":[]}}",
        js(text)
    )
}

/// A Responses API `message` output item.
pub(super) fn message_item(status: &str, content: &str) -> String {
    format!(
        "{{\"type\":\"message\",\"id\":\"msg_mock\",\"status\":\"{status}\",\"role\":\"assistant\",\"content\":[{content}]}}"
    )
}

/// A Responses API `function_call` output item.
pub(super) fn function_call_item(
    name: &str,
    call_id: &str,
    arguments: &str,
    status: &str,
) -> String {
    format!(
        "{{\"type\":\"function_call\",\"id\":\"fc_mock\",\"call_id\":{},\"name\":{},\"arguments\":{},\"status\":\"{status}\"}}",
        js(or_default(call_id, "call_mock_0")),
        js(name),
        js(arguments)
    )
}

/// Builds the Responses API response (`POST …/responses`).
pub(super) fn responses_response(ctx: &Ctx<'_>, req: &serde_json::Value) -> Response<MockBody> {
    use serde_json::Value;
    let s = ctx.scenarios;
    let model = req
        .get("model")
        .and_then(|v| v.as_str())
        .unwrap_or(DEFAULT_MODEL);
    let stream = req.get("stream").and_then(|v| v.as_bool()).unwrap_or(false);
    let items = match req.get("input") {
        Some(Value::String(_)) => 1,
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    };
    let id_js = js(ctx.id(DEFAULT_RESPONSE_ID));
    let model_js = js(&response_model(model));
    let cached = ctx.num("x-mock-cached");
    let reasoning = ctx.num("x-mock-reasoning");
    let reply = ctx.reply(false);

    let input_tokens = 7 + 3 * items as u64;
    let output_tokens = reply.tokens() + reasoning;
    let usage = format!(
        "{{\"input_tokens\":{input_tokens},\"input_tokens_details\":{{\"cached_tokens\":{cached}}},\"output_tokens\":{output_tokens},\"output_tokens_details\":{{\"reasoning_tokens\":{reasoning}}},\"total_tokens\":{}}}",
        input_tokens + output_tokens
    );
    let item_status = if s.incomplete {
        "incomplete"
    } else {
        "completed"
    };
    let text = match reply {
        Reply::Text(words) => reply_words(words).concat(),
        _ => String::new(),
    };
    let final_item = match reply {
        Reply::Tool(name, id) => function_call_item(name, id, TOOL_ARGS, item_status),
        _ => message_item(item_status, &output_text_part(&text)),
    };
    let output = format!("[{final_item}]");
    let (final_event, final_response) = if s.response_failed {
        (
            "response.failed",
            response_object(
                &id_js,
                &model_js,
                "failed",
                r#"{"code":"server_error","message":"mock failure"}"#,
                "null",
                "[]",
                "null",
            ),
        )
    } else if s.incomplete {
        (
            "response.incomplete",
            response_object(
                &id_js,
                &model_js,
                "incomplete",
                "null",
                r#"{"reason":"max_output_tokens"}"#,
                &output,
                &usage,
            ),
        )
    } else {
        (
            "response.completed",
            response_object(
                &id_js,
                &model_js,
                "completed",
                "null",
                "null",
                &output,
                &usage,
            ),
        )
    };
    if !stream {
        return ctx.json(final_response);
    }

    let mut ev = ResponseEvents::default();
    let pending = response_object(
        &id_js,
        &model_js,
        "in_progress",
        "null",
        "null",
        "[]",
        "null",
    );
    ev.push("response.created", &format!(",\"response\":{pending}"));
    ev.push("response.in_progress", &format!(",\"response\":{pending}"));
    if s.response_failed {
        ev.push(final_event, &format!(",\"response\":{final_response}"));
        return ctx.sse(ev.frames);
    }
    match reply {
        Reply::Tool(name, id) => {
            let added = function_call_item(name, id, "", "in_progress");
            ev.push(
                "response.output_item.added",
                &format!(",\"output_index\":0,\"item\":{added}"),
            );
            for fragment in TOOL_ARG_FRAGMENTS {
                ev.push(
                    "response.function_call_arguments.delta",
                    &format!(
                        ",\"item_id\":\"fc_mock\",\"output_index\":0,\"delta\":{}",
                        js(fragment)
                    ),
                );
                if s.stream_error {
                    ev.push_error();
                    return ctx.sse(ev.frames);
                }
            }
            ev.push(
                "response.function_call_arguments.done",
                &format!(
                    ",\"item_id\":\"fc_mock\",\"output_index\":0,\"arguments\":{}",
                    js(TOOL_ARGS)
                ),
            );
        }
        _ => {
            let added = message_item("in_progress", "");
            ev.push(
                "response.output_item.added",
                &format!(",\"output_index\":0,\"item\":{added}"),
            );
            let at = ",\"item_id\":\"msg_mock\",\"output_index\":0,\"content_index\":0";
            ev.push(
                "response.content_part.added",
                &format!("{at},\"part\":{}", output_text_part("")),
            );
            let words = match reply {
                Reply::Text(words) => reply_words(words),
                _ => Vec::new(),
            };
            for word in &words {
                ev.push(
                    "response.output_text.delta",
                    &format!("{at},\"delta\":{},\"logprobs\":[]", js(word)),
                );
                if s.stream_error {
                    break;
                }
            }
            if s.stream_error {
                ev.push_error();
                return ctx.sse(ev.frames);
            }
            ev.push(
                "response.output_text.done",
                &format!("{at},\"text\":{},\"logprobs\":[]", js(&text)),
            );
            ev.push(
                "response.content_part.done",
                &format!("{at},\"part\":{}", output_text_part(&text)),
            );
        }
    }
    ev.push(
        "response.output_item.done",
        &format!(",\"output_index\":0,\"item\":{final_item}"),
    );
    ev.push(final_event, &format!(",\"response\":{final_response}"));
    ctx.sse(ev.frames)
}
