//! Anthropic Messages (and `count_tokens`), as the mock answers them:
//! text, thinking and tool-use blocks, streamed or not, and
//! Anthropic-style errors.

use super::*;

/// An Anthropic-style error response.
pub(super) fn anthropic_error_response(
    status: StatusCode,
    kind: &str,
    message: &str,
) -> Response<MockBody> {
    let body = format!(
        "{{\"type\":\"error\",\"error\":{{\"type\":{},\"message\":{}}}}}",
        js(kind),
        js(message)
    );
    json_response(status, Bytes::from(body))
}

/// The Anthropic `error:CODE` response.
pub(super) fn anthropic_error(code: u16) -> Response<MockBody> {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let kind = match code {
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    };
    anthropic_error_response(status, kind, &format!("mock error {code}"))
}

/// Builds the Anthropic Messages response (`POST …/messages`).
pub(super) fn messages_response(ctx: &Ctx<'_>, req: &serde_json::Value) -> Response<MockBody> {
    let model = req
        .get("model")
        .and_then(|v| v.as_str())
        .unwrap_or(DEFAULT_ANTHROPIC_MODEL);
    let stream = req.get("stream").and_then(|v| v.as_bool()).unwrap_or(false);
    let id_js = js(ctx.id(DEFAULT_MESSAGE_ID));
    let model_js = js(model);
    let input = prompt_tokens(req);
    let cache_write = ctx.num("x-mock-cache-write");
    let cache_read = ctx.num("x-mock-cached");
    let thinking = header_str(ctx.headers, "x-mock-thinking")
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let reply = ctx.reply(false);
    let output = reply.tokens();
    let stop_reason = match reply {
        Reply::Tool(..) => "tool_use",
        _ => "end_turn",
    };
    let usage = |output: u64| {
        format!(
            "{{\"input_tokens\":{input},\"cache_creation_input_tokens\":{cache_write},\"cache_read_input_tokens\":{cache_read},\"output_tokens\":{output}}}"
        )
    };
    let message = |content: &str, stop_reason: &str, usage: &str| {
        format!(
            "{{\"id\":{id_js},\"type\":\"message\",\"role\":\"assistant\",\"model\":{model_js},\"content\":[{content}],\"stop_reason\":{stop_reason},\"stop_sequence\":null,\"usage\":{usage}}}"
        )
    };
    let thinking_block = |text: &str, signature: &str| {
        format!(
            "{{\"type\":\"thinking\",\"thinking\":{},\"signature\":{}}}",
            js(text),
            js(signature)
        )
    };
    let tool_block = |name: &str, id: &str, input: &str| {
        format!(
            "{{\"type\":\"tool_use\",\"id\":{},\"name\":{},\"input\":{input}}}",
            js(or_default(id, "toolu_mock_0")),
            js(name)
        )
    };
    let text_block = |text: &str| format!("{{\"type\":\"text\",\"text\":{}}}", js(text));

    if !stream {
        let mut blocks = Vec::with_capacity(2);
        if thinking {
            blocks.push(thinking_block(THINKING_TEXT, THINKING_SIGNATURE));
        }
        blocks.push(match reply {
            Reply::Tool(name, id) => tool_block(name, id, TOOL_ARGS),
            Reply::Text(words) => text_block(&reply_words(words).concat()),
            Reply::Refusal => text_block(""),
        });
        return ctx.json(message(&blocks.join(","), &js(stop_reason), &usage(output)));
    }

    let mut frames = vec![named_event(
        "message_start",
        &format!(
            "{{\"type\":\"message_start\",\"message\":{}}}",
            message("", "null", &usage(1))
        ),
    )];
    let mut index = 0;
    let block_start = |frames: &mut Vec<Bytes>, index: usize, block: &str| {
        frames.push(named_event(
            "content_block_start",
            &format!(
                "{{\"type\":\"content_block_start\",\"index\":{index},\"content_block\":{block}}}"
            ),
        ));
        if index == 0 {
            frames.push(named_event("ping", r#"{"type": "ping"}"#));
        }
    };
    let block_delta = |frames: &mut Vec<Bytes>, index: usize, delta: &str| {
        frames.push(named_event(
            "content_block_delta",
            &format!("{{\"type\":\"content_block_delta\",\"index\":{index},\"delta\":{delta}}}"),
        ));
    };
    let block_stop = |frames: &mut Vec<Bytes>, index: usize| {
        frames.push(named_event(
            "content_block_stop",
            &format!("{{\"type\":\"content_block_stop\",\"index\":{index}}}"),
        ));
    };
    if thinking {
        block_start(&mut frames, index, &thinking_block("", ""));
        block_delta(
            &mut frames,
            index,
            &format!(
                "{{\"type\":\"thinking_delta\",\"thinking\":{}}}",
                js(THINKING_TEXT)
            ),
        );
        block_delta(
            &mut frames,
            index,
            &format!(
                "{{\"type\":\"signature_delta\",\"signature\":{}}}",
                js(THINKING_SIGNATURE)
            ),
        );
        block_stop(&mut frames, index);
        index += 1;
    }
    let deltas: Vec<String> = match reply {
        Reply::Tool(name, id) => {
            block_start(&mut frames, index, &tool_block(name, id, "{}"));
            TOOL_ARG_FRAGMENTS
                .iter()
                .map(|f| {
                    format!(
                        "{{\"type\":\"input_json_delta\",\"partial_json\":{}}}",
                        js(f)
                    )
                })
                .collect()
        }
        Reply::Text(words) => {
            block_start(&mut frames, index, &text_block(""));
            reply_words(words)
                .iter()
                .map(|w| format!("{{\"type\":\"text_delta\",\"text\":{}}}", js(w)))
                .collect()
        }
        Reply::Refusal => {
            block_start(&mut frames, index, &text_block(""));
            Vec::new()
        }
    };
    for delta in &deltas {
        block_delta(&mut frames, index, delta);
        if ctx.scenarios.stream_error {
            break;
        }
    }
    if ctx.scenarios.stream_error {
        frames.push(Bytes::from_static(ANTHROPIC_STREAM_ERROR.as_bytes()));
        return ctx.sse(frames);
    }
    block_stop(&mut frames, index);
    frames.push(named_event(
        "message_delta",
        &format!(
            "{{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":{},\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{output}}}}}",
            js(stop_reason)
        ),
    ));
    frames.push(named_event("message_stop", r#"{"type":"message_stop"}"#));
    ctx.sse(frames)
}
