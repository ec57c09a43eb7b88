//! OpenAI's Chat Completions, legacy Completions and Embeddings, as the
//! mock answers them (streamed or not); see the usage formulas in the
//! module docs of `mod.rs`.

use super::*;

/// The chat `malformed-json` / `malformed-sse` responses.
pub(super) fn chat_malformed(ctx: &Ctx<'_>) -> Response<MockBody> {
    if ctx.scenarios.malformed_json {
        return json_response(
            StatusCode::OK,
            Bytes::from_static(MALFORMED_JSON.as_bytes()),
        );
    }
    let frames = vec![
        Bytes::from_static(b"data: {not json}\n\n"),
        Bytes::from_static(b"event: weird\nid: 7\n\n"),
        Bytes::from_static(b": a comment\n\n"),
        Bytes::from(format!(
            "data: {{\"id\":\"chatcmpl-x\",\"object\":\"chat.completion.chunk\",\"created\":{MOCK_CREATED},\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"ok\"}},\"finish_reason\":null}}]}}\n\n"
        )),
        Bytes::from_static(b"\xff\xfe garbage without newline"),
        Bytes::from_static(b"\n\ndata: [DONE]\n\n"),
    ];
    ctx.sse(frames)
}

/// Builds the (uncompressed) chat completions response.
pub(super) fn chat_response(ctx: &Ctx<'_>, req: &serde_json::Value) -> Response<MockBody> {
    let scenarios = ctx.scenarios;
    let model = req
        .get("model")
        .and_then(|v| v.as_str())
        .unwrap_or(DEFAULT_MODEL);
    let stream = req.get("stream").and_then(|v| v.as_bool()).unwrap_or(false);
    let include_usage = req
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let n = req
        .get("n")
        .and_then(|v| v.as_u64())
        .unwrap_or(1)
        .clamp(1, MAX_CHOICES) as usize;

    let id = ctx.id(DEFAULT_ID);
    let cached = ctx.num("x-mock-cached");
    let reasoning = ctx.num("x-mock-reasoning");
    let reply = ctx.reply(true);
    let completion = reply.tokens() * n as u64 + reasoning;
    let usage = usage_json(prompt_tokens(req), completion, cached, reasoning);
    let finish = match reply {
        Reply::Tool(..) => "tool_calls",
        _ => "stop",
    };

    let id_js = js(id);
    let model_js = js(&response_model(model));

    if stream {
        let include_usage = include_usage && !scenarios.no_usage;
        let usage_null = if include_usage { ",\"usage\":null" } else { "" };
        let chunk = |index: usize, delta: &str, finish: &str| {
            Bytes::from(format!(
                "data: {{\"id\":{id_js},\"object\":\"chat.completion.chunk\",\"created\":{MOCK_CREATED},\"model\":{model_js},\"system_fingerprint\":\"fp_mock\",\"choices\":[{{\"index\":{index},\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}]{usage_null}}}\n\n"
            ))
        };
        let deltas = chat_deltas(reply);
        // `stream-error` fires after the role chunk and the first word.
        let error_after = scenarios.stream_error.then(|| deltas.len().min(2));
        let mut frames = Vec::with_capacity(n * (deltas.len() + 1) + 2);
        for (step, delta) in deltas.iter().enumerate() {
            for index in 0..n {
                frames.push(chunk(index, delta, "null"));
            }
            if error_after == Some(step + 1) {
                frames.push(Bytes::from_static(CHAT_STREAM_ERROR.as_bytes()));
                return ctx.sse(frames);
            }
        }
        let finish_js = js(finish);
        for index in 0..n {
            frames.push(chunk(index, "{}", &finish_js));
        }
        if include_usage {
            let choices = if scenarios.choices_null { "null" } else { "[]" };
            frames.push(Bytes::from(format!(
                "data: {{\"id\":{id_js},\"object\":\"chat.completion.chunk\",\"created\":{MOCK_CREATED},\"model\":{model_js},\"system_fingerprint\":\"fp_mock\",\"choices\":{choices},\"usage\":{usage}}}\n\n"
            )));
        }
        frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
        return ctx.sse(frames);
    }

    let message = match reply {
        Reply::Text(words) => format!(
            "{{\"role\":\"assistant\",\"content\":{},\"refusal\":null}}",
            js(&reply_words(words).concat())
        ),
        Reply::Tool(name, id) => format!(
            "{{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{{\"id\":{},\"type\":\"function\",\"function\":{{\"name\":{},\"arguments\":{}}}}}],\"refusal\":null}}",
            js(or_default(id, "call_mock_0")),
            js(name),
            js(TOOL_ARGS)
        ),
        Reply::Refusal => format!(
            "{{\"role\":\"assistant\",\"content\":null,\"refusal\":{}}}",
            js(&REFUSAL_DELTAS.concat())
        ),
    };
    let choices = (0..n)
        .map(|i| {
            format!(
                "{{\"index\":{i},\"message\":{message},\"logprobs\":null,\"finish_reason\":\"{finish}\"}}"
            )
        })
        .collect::<Vec<_>>()
        .join(",");
    let usage_part = if scenarios.no_usage {
        String::new()
    } else {
        format!(",\"usage\":{usage}")
    };
    ctx.json(format!(
        "{{\"id\":{id_js},\"object\":\"chat.completion\",\"created\":{MOCK_CREATED},\"model\":{model_js},\"choices\":[{choices}]{usage_part},\"system_fingerprint\":\"fp_mock\"}}"
    ))
}

/// The streamed deltas of one chat choice: the role delta, then one delta
/// per word / argument fragment / refusal part.
pub(super) fn chat_deltas(reply: Reply<'_>) -> Vec<String> {
    match reply {
        Reply::Text(words) => {
            let mut deltas =
                vec![r#"{"role":"assistant","content":"","refusal":null}"#.to_string()];
            deltas.extend(
                reply_words(words)
                    .iter()
                    .map(|d| format!("{{\"content\":{}}}", js(d))),
            );
            deltas
        }
        Reply::Tool(name, id) => {
            let mut deltas = vec![format!(
                "{{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{{\"index\":0,\"id\":{},\"type\":\"function\",\"function\":{{\"name\":{},\"arguments\":\"\"}}}}],\"refusal\":null}}",
                js(or_default(id, "call_mock_0")),
                js(name)
            )];
            deltas.extend(TOOL_ARG_FRAGMENTS.iter().map(|f| {
                format!(
                    "{{\"tool_calls\":[{{\"index\":0,\"function\":{{\"arguments\":{}}}}}]}}",
                    js(f)
                )
            }));
            deltas
        }
        Reply::Refusal => {
            let mut deltas =
                vec![r#"{"role":"assistant","content":null,"refusal":""}"#.to_string()];
            deltas.extend(
                REFUSAL_DELTAS
                    .iter()
                    .map(|d| format!("{{\"refusal\":{}}}", js(d))),
            );
            deltas
        }
    }
}

/// The chat usage object, compact JSON with OpenAI's key order.
pub(super) fn usage_json(prompt: u64, completion: u64, cached: u64, reasoning: u64) -> String {
    format!(
        "{{\"prompt_tokens\":{prompt},\"completion_tokens\":{completion},\"total_tokens\":{},\"prompt_tokens_details\":{{\"cached_tokens\":{cached},\"audio_tokens\":0}},\"completion_tokens_details\":{{\"reasoning_tokens\":{reasoning},\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}}",
        prompt + completion
    )
}

/// Builds the legacy Completions response (`POST …/completions`).
pub(super) fn completions_response(ctx: &Ctx<'_>, req: &serde_json::Value) -> Response<MockBody> {
    let model = req
        .get("model")
        .and_then(|v| v.as_str())
        .unwrap_or(DEFAULT_COMPLETION_MODEL);
    let stream = req.get("stream").and_then(|v| v.as_bool()).unwrap_or(false);
    let include_usage = req
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let words = ctx.words();
    let id_js = js(ctx.id(DEFAULT_COMPLETION_ID));
    let model_js = js(&response_model(model));
    let usage = format!(
        "{{\"prompt_tokens\":5,\"completion_tokens\":{words},\"total_tokens\":{}}}",
        5 + words
    );
    let head = format!(
        "{{\"id\":{id_js},\"object\":\"text_completion\",\"created\":{MOCK_CREATED},\"model\":{model_js}"
    );

    if stream {
        let chunk = |text: &str, finish: &str| {
            Bytes::from(format!(
                "data: {head},\"choices\":[{{\"text\":{},\"index\":0,\"logprobs\":null,\"finish_reason\":{finish}}}]}}\n\n",
                js(text)
            ))
        };
        let mut frames: Vec<Bytes> = reply_words(words)
            .iter()
            .map(|w| chunk(w, "null"))
            .collect();
        frames.push(chunk("", "\"stop\""));
        if include_usage {
            frames.push(Bytes::from(format!(
                "data: {head},\"choices\":[],\"usage\":{usage}}}\n\n"
            )));
        }
        frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
        return ctx.sse(frames);
    }
    ctx.json(format!(
        "{head},\"choices\":[{{\"text\":{},\"index\":0,\"logprobs\":null,\"finish_reason\":\"stop\"}}],\"usage\":{usage}}}",
        js(&reply_words(words).concat())
    ))
}

/// The embedding of input `i`: `(i + 1) × 0.125 × k` for `k` in `1..=8`.
pub fn embedding_vector(i: usize) -> [f32; EMBEDDING_DIMS] {
    let base = (i as f32 + 1.0) * 0.125;
    std::array::from_fn(|k| base * (k as f32 + 1.0))
}

/// Standard base64 (RFC 4648, with padding).
pub fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = (u32::from(chunk[0]) << 16) | (u32::from(b1) << 8) | u32::from(b2);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Builds the Embeddings response (`POST …/embeddings`).
pub(super) fn embeddings_response(ctx: &Ctx<'_>, req: &serde_json::Value) -> Response<MockBody> {
    use serde_json::Value;
    let model = req
        .get("model")
        .and_then(|v| v.as_str())
        .unwrap_or(DEFAULT_EMBEDDING_MODEL);
    let base64 = req.get("encoding_format").and_then(|v| v.as_str()) == Some("base64");
    let inputs = match req.get("input") {
        Some(Value::String(_)) => 1,
        // One token array.
        Some(Value::Array(a)) if !a.is_empty() && a.iter().all(Value::is_number) => 1,
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    };
    let data = (0..inputs)
        .map(|i| {
            let vector = embedding_vector(i);
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                js(&base64_encode(&bytes))
            } else {
                let floats: Vec<String> = vector
                    .iter()
                    .map(|&x| serde_json::to_string(&f64::from(x)).unwrap_or_else(|_| "0.0".into()))
                    .collect();
                format!("[{}]", floats.join(","))
            };
            format!("{{\"object\":\"embedding\",\"index\":{i},\"embedding\":{embedding}}}")
        })
        .collect::<Vec<_>>()
        .join(",");
    let tokens = 2 * inputs + 3;
    ctx.json(format!(
        "{{\"object\":\"list\",\"data\":[{data}],\"model\":{},\"usage\":{{\"prompt_tokens\":{tokens},\"total_tokens\":{tokens}}}}}",
        js(model)
    ))
}
