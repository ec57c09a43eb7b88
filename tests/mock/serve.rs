//! The mock's routing and the controls every format reads: which API a
//! path asks for ([`Route`]), the scenarios and control headers of a
//! request ([`Scenarios`], [`Ctx`]), the credential `echo-auth` echoes,
//! the reply a request gets ([`Reply`]) and the helpers the formats share
//! (prompt token counts, model names, named SSE events).

use super::*;

/// The APIs the mock serves (all `POST`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// `…/chat/completions`
    Chat,
    /// `…/completions` (legacy)
    Completions,
    /// `…/responses`
    Responses,
    /// `…/embeddings`
    Embeddings,
    /// `…/messages` (Anthropic)
    Messages,
    /// `…/messages/count_tokens` (Anthropic)
    CountTokens,
}

impl Route {
    /// The route of a request, by method and path suffix.
    pub(super) fn find(method: &Method, path: &str) -> Option<Route> {
        if *method != Method::POST {
            return None;
        }
        if path.ends_with("/chat/completions") {
            Some(Route::Chat)
        } else if path.ends_with("/completions") {
            Some(Route::Completions)
        } else if path.ends_with("/responses") {
            Some(Route::Responses)
        } else if path.ends_with("/embeddings") {
            Some(Route::Embeddings)
        } else if path.ends_with("/messages/count_tokens") {
            Some(Route::CountTokens)
        } else if path.ends_with("/messages") {
            Some(Route::Messages)
        } else {
            None
        }
    }

    /// Whether the route speaks Anthropic's formats (errors included).
    pub(super) fn is_anthropic(self) -> bool {
        matches!(self, Route::Messages | Route::CountTokens)
    }
}

/// Scenarios requested through `x-mock-scenario`.
#[derive(Default)]
pub(super) struct Scenarios {
    pub(super) error: Option<u16>,
    pub(super) cut: Option<usize>,
    pub(super) delay_headers: Option<u64>,
    pub(super) gzip: bool,
    pub(super) malformed_json: bool,
    pub(super) malformed_sse: bool,
    pub(super) no_usage: bool,
    pub(super) refusal: bool,
    pub(super) choices_null: bool,
    pub(super) stream_error: bool,
    pub(super) incomplete: bool,
    pub(super) response_failed: bool,
    pub(super) echo_auth: bool,
}

impl Scenarios {
    /// Parses every `x-mock-scenario` header; values may be comma-separated.
    /// Unknown or unparsable entries are ignored.
    pub(super) fn parse(headers: &HeaderMap) -> Scenarios {
        let mut s = Scenarios::default();
        for value in headers.get_all("x-mock-scenario") {
            let Ok(value) = value.to_str() else { continue };
            for item in value.split(',').map(str::trim) {
                if let Some(code) = item.strip_prefix("error:") {
                    s.error = code.trim().parse().ok();
                } else if let Some(k) = item.strip_prefix("cut:") {
                    s.cut = k.trim().parse().ok();
                } else if let Some(ms) = item.strip_prefix("delay-headers:") {
                    s.delay_headers = ms.trim().parse().ok();
                } else {
                    match item {
                        "gzip" => s.gzip = true,
                        "malformed-json" => s.malformed_json = true,
                        "malformed-sse" => s.malformed_sse = true,
                        "no-usage" => s.no_usage = true,
                        "refusal" => s.refusal = true,
                        "choices-null" => s.choices_null = true,
                        "stream-error" => s.stream_error = true,
                        "incomplete" => s.incomplete = true,
                        "response-failed" => s.response_failed = true,
                        "echo-auth" => s.echo_auth = true,
                        _ => {}
                    }
                }
            }
        }
        s
    }
}

/// A header value as trimmed text, if present and valid.
pub(super) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// A header value parsed as a number, if present and valid.
pub(super) fn header_num<T: std::str::FromStr>(headers: &HeaderMap, name: &str) -> Option<T> {
    header_str(headers, name).and_then(|v| v.parse().ok())
}

/// Applies the scenarios every route shares (`delay-headers`, `error:CODE`,
/// `gzip`) around the route's own response.
pub(super) async fn serve(
    state: &Arc<MockState>,
    route: Route,
    headers: &HeaderMap,
    query: Option<&str>,
    body: &Bytes,
) -> Response<MockBody> {
    let scenarios = Scenarios::parse(headers);
    if let Some(ms) = scenarios.delay_headers {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let echoed = scenarios
        .echo_auth
        .then(|| credential(headers, query))
        .flatten();
    let mut echo_headers;
    let headers = match &echoed {
        Some(cred) if scenarios.error.is_none() => {
            echo_headers = headers.clone();
            if let Ok(v) = HeaderValue::from_str(&format!("echo-{cred}")) {
                echo_headers.insert("x-mock-id", v);
            }
            &echo_headers
        }
        _ => headers,
    };
    let resp = match scenarios.error {
        Some(code) if echoed.is_some() => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::UNAUTHORIZED);
            let message = format!(
                "Incorrect API key provided: {}",
                echoed.as_deref().unwrap_or_default()
            );
            if route.is_anthropic() {
                anthropic_error_response(status, "authentication_error", &message)
            } else {
                error_response(status, &message, "invalid_request_error", "invalid_api_key")
            }
        }
        Some(code) if route.is_anthropic() => anthropic_error(code),
        Some(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            error_response(
                status,
                &format!("mock error {code}"),
                "mock_error",
                &format!("mock_{code}"),
            )
        }
        None => {
            let ctx = Ctx {
                state,
                headers,
                scenarios: &scenarios,
                delay: header_num::<u64>(headers, "x-mock-delay-ms")
                    .filter(|&d| d > 0)
                    .map(Duration::from_millis),
            };
            match (route, serde_json::from_slice::<serde_json::Value>(body)) {
                (Route::Chat, _) if scenarios.malformed_json || scenarios.malformed_sse => {
                    chat_malformed(&ctx)
                }
                (Route::Chat, Ok(req)) => chat_response(&ctx, &req),
                (Route::Completions, Ok(req)) => completions_response(&ctx, &req),
                (Route::Responses, Ok(req)) => responses_response(&ctx, &req),
                (Route::Embeddings, Ok(req)) => embeddings_response(&ctx, &req),
                (Route::Messages, Ok(req)) => messages_response(&ctx, &req),
                (Route::CountTokens, Ok(req)) => {
                    ctx.json(format!("{{\"input_tokens\":{}}}", prompt_tokens(&req)))
                }
                (route, Err(_)) if route.is_anthropic() => anthropic_error_response(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "mock: invalid JSON body",
                ),
                (_, Err(_)) => error_response(
                    StatusCode::BAD_REQUEST,
                    "mock: invalid JSON body",
                    "invalid_request_error",
                    "invalid_json",
                ),
            }
        }
    };
    let accepts_gzip = headers
        .get_all(http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("gzip"));
    if scenarios.gzip && accepts_gzip {
        gzip_response(resp)
    } else {
        resp
    }
}

/// The request's credential, for `echo-auth`.
pub(super) fn credential(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let header = |name: &str| header_str(headers, name).filter(|v| !v.is_empty());
    header("authorization")
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).to_string())
        .or_else(|| header("x-api-key").map(str::to_string))
        .or_else(|| header("api-key").map(str::to_string))
        .or_else(|| {
            query?.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                matches!(k, "key" | "api-key").then(|| v.to_string())
            })
        })
}

/// What a route builder needs besides the request body.
pub(super) struct Ctx<'a> {
    pub(super) state: &'a Arc<MockState>,
    pub(super) headers: &'a HeaderMap,
    pub(super) scenarios: &'a Scenarios,
    /// `x-mock-delay-ms`, if positive.
    pub(super) delay: Option<Duration>,
}

impl Ctx<'_> {
    /// `x-mock-words` (default 8).
    pub(super) fn words(&self) -> usize {
        header_num(self.headers, "x-mock-words").unwrap_or(DEFAULT_WORDS)
    }

    /// `x-mock-id`, or `default`.
    pub(super) fn id<'b>(&'b self, default: &'b str) -> &'b str {
        header_str(self.headers, "x-mock-id").unwrap_or(default)
    }

    /// A numeric header, 0 when absent or invalid.
    pub(super) fn num(&self, name: &str) -> u64 {
        header_num(self.headers, name).unwrap_or(0)
    }

    /// The kind of reply: a tool call (`x-mock-tool-call`), a refusal (only
    /// where `refusal_allowed`, with the `refusal` scenario) or text.
    pub(super) fn reply(&self, refusal_allowed: bool) -> Reply<'_> {
        match header_str(self.headers, "x-mock-tool-call").filter(|n| !n.is_empty()) {
            Some(name) => Reply::Tool(
                name,
                header_str(self.headers, "x-mock-call-id").unwrap_or(""),
            ),
            None if refusal_allowed && self.scenarios.refusal => Reply::Refusal,
            None => Reply::Text(self.words()),
        }
    }

    /// A streamed `200 text/event-stream` response over `frames`, honouring
    /// `x-mock-delay-ms` and `cut:K`.
    pub(super) fn sse(&self, frames: Vec<Bytes>) -> Response<MockBody> {
        sse_response(SseStream::new(
            self.state.clone(),
            frames,
            self.delay,
            self.scenarios.cut,
            true,
        ))
    }

    /// A complete JSON response; with `cut:K`, the first half of the body
    /// and then a body error.
    pub(super) fn json(&self, json: String) -> Response<MockBody> {
        if self.scenarios.cut.is_some() {
            let bytes = Bytes::from(json);
            let half = bytes.len() / 2;
            let frames = vec![bytes.slice(..half), bytes.slice(half..)];
            let mut resp = Response::new(MockBody::stream(SseStream::new(
                self.state.clone(),
                frames,
                self.delay,
                Some(1),
                false,
            )));
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            return resp;
        }
        json_response(StatusCode::OK, Bytes::from(json))
    }
}

/// The kind of assistant reply.
#[derive(Clone, Copy)]
pub(super) enum Reply<'a> {
    /// [`reply_words`] of that many words.
    Text(usize),
    /// One call of the named tool with [`TOOL_ARGS`].
    /// A tool call: (name, call id; empty = the format's default id).
    Tool(&'a str, &'a str),
    /// The chat refusal ([`REFUSAL_DELTAS`]).
    Refusal,
}

impl Reply<'_> {
    /// Output tokens of the reply (per choice).
    pub(super) fn tokens(self) -> u64 {
        match self {
            Reply::Text(words) => words as u64,
            Reply::Tool(..) => TOOL_CALL_TOKENS,
            Reply::Refusal => REFUSAL_TOKENS,
        }
    }
}

/// `7 + 3 × messages`, the prompt tokens of chat and Anthropic requests.
pub(super) fn prompt_tokens(req: &serde_json::Value) -> u64 {
    let messages = req
        .get("messages")
        .and_then(|v| v.as_array())
        .map_or(0, |a| a.len());
    7 + 3 * messages as u64
}

/// A `data: …` event of a named-event SSE stream (`event: NAME`).
pub(super) fn named_event(name: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// `value`, or `default` when it is empty.
pub(super) fn or_default<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.is_empty() {
        default
    } else {
        value
    }
}

/// The model name reported in responses: the requested model with
/// `-2024-07-18` appended unless it already ends in a `-YYYY-MM-DD` date.
pub(super) fn response_model(model: &str) -> String {
    if has_date_suffix(model) {
        model.to_string()
    } else {
        format!("{model}{MODEL_DATE_SUFFIX}")
    }
}

/// Whether `model` ends in `-YYYY-MM-DD`.
pub(super) fn has_date_suffix(model: &str) -> bool {
    let b = model.as_bytes();
    if b.len() < 11 {
        return false;
    }
    let s = &b[b.len() - 11..];
    s[0] == b'-'
        && s[5] == b'-'
        && s[8] == b'-'
        && [1, 2, 3, 4, 6, 7, 9, 10]
            .iter()
            .all(|&i| s[i].is_ascii_digit())
}
