//! In-process mock LLM provider speaking OpenAI's and Anthropic's wire formats.
//!
//! [`MockProvider::start`] binds `127.0.0.1:0` and serves HTTP/1.1 and
//! cleartext HTTP/2 (prior knowledge) with keep-alive, via
//! `hyper_util::server::conn::auto::Builder`. It is used by the integration
//! tests (`mod mock;`) and by the load-test example
//! (`#[path = "../tests/mock/mod.rs"] mod mock;`), so it depends only on
//! regular crate dependencies and never prints anything.
//!
//! Every response is fully deterministic (fixed ids, fixed `created` /
//! `created_at` timestamps ([`MOCK_CREATED`]), no `date` header), so bytes
//! obtained directly from the mock and through the proxy can be compared byte
//! for byte. JSON is compact, with keys in the order the real APIs emit them.
//!
//! # Routing (by path suffix, so any proxy prefix works)
//!
//! * `POST …/chat/completions` — OpenAI Chat Completions (streamed or not).
//! * `POST …/responses` — OpenAI Responses API (streamed or not).
//! * `POST …/embeddings` — OpenAI Embeddings (`float` or `base64`).
//! * `POST …/completions` (not `/chat/completions`) — OpenAI legacy
//!   Completions (streamed or not).
//! * `POST …/messages` — Anthropic Messages (streamed or not).
//! * `POST …/messages/count_tokens` — Anthropic token counting.
//! * `GET …/models` — a one-entry model list.
//! * anything else — `404` with an OpenAI-style error body. So does an
//!   Anthropic route whose body is valid JSON without a `messages` array
//!   (e.g. `{}`), as before those routes existed.
//!
//! A body that is not valid JSON gets a `400` (OpenAI-style error body on the
//! OpenAI routes, Anthropic-style on the Anthropic ones).
//!
//! # Reply text
//!
//! Text replies are [`reply_words`]`(N)`: `"w0"`, `" w1"`, `" w2"`, …
//! streamed one word per event, `N` = `x-mock-words` (default 8).
//!
//! # Control headers
//!
//! * `x-mock-words: N` — reply has `N` words (default 8). All text routes.
//! * `x-mock-id: S` — response id. Defaults: `chatcmpl-mock` (chat),
//!   `resp_mock` (responses), `cmpl-mock` (legacy completions), `msg_mock`
//!   (Anthropic).
//! * `x-mock-cached: C` — cached prompt tokens (default 0): chat
//!   `usage.prompt_tokens_details.cached_tokens`, responses
//!   `usage.input_tokens_details.cached_tokens`, Anthropic
//!   `usage.cache_read_input_tokens`.
//! * `x-mock-cache-write: W` — Anthropic `usage.cache_creation_input_tokens`
//!   (default 0).
//! * `x-mock-reasoning: R` — reasoning tokens (default 0): chat
//!   `usage.completion_tokens_details.reasoning_tokens` (added to
//!   `completion_tokens`), responses `usage.output_tokens_details.reasoning_tokens`
//!   (added to `output_tokens`).
//! * `x-mock-tool-call: NAME` — the assistant calls tool `NAME` with
//!   arguments [`TOOL_ARGS`] (`{"city":"Paris"}`, streamed as the fragments
//!   [`TOOL_ARG_FRAGMENTS`]) instead of replying with text; the reply counts
//!   9 output tokens and `x-mock-words` is ignored. `x-mock-call-id: ID`
//!   replaces the call id below (all three formats). Chat (id `call_mock_0`,
//!   finish reason `tool_calls`), responses (item `fc_mock`, call id
//!   `call_mock_0`) and Anthropic (block `toolu_mock_0`, stop reason
//!   `tool_use`).
//! * `x-mock-thinking: 1` — Anthropic only: a thinking block (`"Let me
//!   think."`, signature `sig_mock`) precedes the reply block. It does not
//!   change `output_tokens`.
//! * `x-mock-delay-ms: D` — in streamed bodies, sleep `D` ms before every
//!   frame after the first.
//! * `x-mock-scenario: S` — see below. Several scenarios may be combined,
//!   separated by commas (e.g. `gzip,cut:2`); unknown ones are ignored.
//!
//! # Scenarios (`x-mock-scenario`)
//!
//! Every route:
//!
//! * `error:CODE` — status `CODE` with an error body: OpenAI shape
//!   `{"error":{"message":"mock error CODE","type":"mock_error","param":null,"code":"mock_CODE"}}`,
//!   or on the Anthropic routes
//!   `{"type":"error","error":{"type":T,"message":"mock error CODE"}}` with
//!   `T` = `rate_limit_error` (429), `overloaded_error` (529), `api_error`
//!   (other 5xx) or `invalid_request_error` (anything else).
//! * `cut:K` — streamed: the body fails after `K` SSE frames; non-streamed:
//!   the first half of the JSON body, then a body error.
//! * `delay-headers:MS` — sleep before sending the response headers.
//! * `gzip` — gzip the body when the request accepts gzip (streamed bodies
//!   are sync-flushed per frame).
//! * `echo-auth` — the response echoes the request's credential (the
//!   `Authorization` value without `Bearer `, else `x-api-key`, else
//!   `api-key`, else the query's `key=` / `api-key=`), as careless real
//!   upstreams do: with `error:CODE` the error message is
//!   `Incorrect API key provided: CRED`; otherwise the response id is
//!   `echo-CRED` (in the body, and in every streamed chunk).
//!
//! Chat completions only: `malformed-json`, `malformed-sse`, `no-usage`,
//! `refusal` (content `null`, refusal `"I can't help with that."`, streamed as
//! `"I can't"` + `" help with that."`, 6 completion tokens per choice),
//! `choices-null` (the streamed usage chunk has `"choices":null`, vLLM
//! style), `stream-error` (streamed: after the role chunk and the first word
//! of every choice, an `{"error":{…,"type":"server_error",…}}` data event,
//! then the body ends cleanly without `[DONE]`).
//!
//! Responses only: `incomplete` (status `incomplete`, `incomplete_details`
//! `{"reason":"max_output_tokens"}`, the output item `incomplete`; streamed
//! final event `response.incomplete`), `response-failed` (status `failed`,
//! error `{"code":"server_error","message":"mock failure"}`, output `[]`,
//! usage `null`; streamed: `response.created`, `response.in_progress`,
//! `response.failed`), `stream-error` (streamed: after the first delta an
//! `event: error` frame, then the body ends).
//!
//! Anthropic Messages only: `stream-error` (streamed: after the first delta
//! of the reply block an `overloaded_error` `event: error` frame, then the
//! body ends).
//!
//! # Usage formulas
//!
//! `N` = words (or 9 for a tool call, 6 for a refusal), `n` = the chat
//! request's `n` (default 1), `R` = `x-mock-reasoning`, `C` =
//! `x-mock-cached`, `W` = `x-mock-cache-write`.
//!
//! * Chat: `prompt_tokens` = 7 + 3 × messages, `completion_tokens` = N × n + R.
//! * Responses: `input_tokens` = 7 + 3 × input items (a string input is one
//!   item), `output_tokens` = N + R, `total_tokens` = their sum.
//! * Embeddings: `prompt_tokens` = `total_tokens` = 2 × inputs + 3 (a string
//!   or one token array is one input).
//! * Legacy completions: `prompt_tokens` = 5, `completion_tokens` = N.
//! * Anthropic: `input_tokens` = 7 + 3 × messages (`count_tokens` too),
//!   `output_tokens` = N (1 in `message_start`).

#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use http::header::{CACHE_CONTROL, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The fixed `created` timestamp used in every mock response.
pub const MOCK_CREATED: u64 = 1700000000;

/// Default response id when `x-mock-id` is absent.
const DEFAULT_ID: &str = "chatcmpl-mock";
/// Default model when the request body has no `model`.
const DEFAULT_MODEL: &str = "gpt-4o-mini";
/// Default number of reply words when `x-mock-words` is absent.
const DEFAULT_WORDS: usize = 8;
/// Date suffix appended to undated model names in responses.
const MODEL_DATE_SUFFIX: &str = "-2024-07-18";
/// Body of the `malformed-json` scenario (deliberately truncated).
const MALFORMED_JSON: &str = r#"{"id":"chatcmpl-bad","choices":[{"message":{"content":"trunc"#;
/// Pause before failing a `cut:K` body, so the frames before the cut reach
/// the client first.
const CUT_FLUSH_GRACE: Duration = Duration::from_millis(10);
/// Body of `GET …/models`.
const MODELS_JSON: &str = r#"{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","created":1700000000,"owned_by":"mock"}]}"#;

/// Default response id of the Responses API.
const DEFAULT_RESPONSE_ID: &str = "resp_mock";
/// Default response id of the legacy Completions API.
const DEFAULT_COMPLETION_ID: &str = "cmpl-mock";
/// Default message id of the Anthropic Messages API.
const DEFAULT_MESSAGE_ID: &str = "msg_mock";
/// Default model of the legacy Completions API.
const DEFAULT_COMPLETION_MODEL: &str = "gpt-3.5-turbo-instruct";
/// Default model of the Embeddings API.
const DEFAULT_EMBEDDING_MODEL: &str = "text-embedding-3-small";
/// Default model of the Anthropic Messages API.
const DEFAULT_ANTHROPIC_MODEL: &str = "claude-sonnet-4-20250514";
/// Upper bound on the chat `n` parameter (keeps a bogus request cheap).
const MAX_CHOICES: u64 = 128;
/// Number of floats in every mock embedding.
pub const EMBEDDING_DIMS: usize = 8;

/// The arguments of every mock tool call.
pub const TOOL_ARGS: &str = r#"{"city":"Paris"}"#;
/// The streamed fragments of [`TOOL_ARGS`], in order.
pub const TOOL_ARG_FRAGMENTS: [&str; 5] = ["{\"", "city", "\":\"", "Paris", "\"}"];
/// Output tokens reported for a tool-call reply.
pub const TOOL_CALL_TOKENS: u64 = 9;
/// The chat refusal text, as streamed.
pub const REFUSAL_DELTAS: [&str; 2] = ["I can't", " help with that."];
/// Completion tokens reported for a refusal (per choice).
pub const REFUSAL_TOKENS: u64 = 6;
/// The Anthropic thinking text (`x-mock-thinking: 1`).
pub const THINKING_TEXT: &str = "Let me think.";
/// The Anthropic thinking signature (`x-mock-thinking: 1`).
pub const THINKING_SIGNATURE: &str = "sig_mock";
/// The chat `stream-error` event.
const CHAT_STREAM_ERROR: &str = "data: {\"error\":{\"message\":\"The server had an error while processing your request.\",\"type\":\"server_error\",\"param\":null,\"code\":null}}\n\n";
/// The Anthropic `stream-error` event.
const ANTHROPIC_STREAM_ERROR: &str = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";

/// A running mock provider. Dropping it stops the accept loop and closes every
/// connection it still has open.
pub struct MockProvider {
    /// The bound address (`127.0.0.1:<ephemeral port>`).
    pub addr: SocketAddr,
    /// Shared state: recorded requests and stream counters.
    pub state: Arc<MockState>,
    /// Dropping this sender signals the accept loop and all connection tasks
    /// to stop.
    shutdown: Option<watch::Sender<()>>,
    /// The accept loop task.
    task: Option<JoinHandle<()>>,
}

/// Everything the mock observed, shared between the server and the test.
#[derive(Default)]
pub struct MockState {
    /// Every request received, in order, with its full body.
    pub requests: Mutex<Vec<RecordedRequest>>,
    /// When the most recent streamed response yielded its final chunk.
    pub last_chunk_sent_at: Mutex<Option<Instant>>,
    /// Streamed bodies dropped before their last chunk was yielded (the
    /// client or proxy hung up). Bodies cut on purpose (`cut:K`) are not
    /// counted.
    pub streams_dropped: AtomicUsize,
    /// Streamed bodies that yielded their final chunk.
    pub streams_completed: AtomicUsize,
    /// TCP connections currently open (incremented on accept, decremented
    /// when the connection task ends).
    pub open_connections: AtomicUsize,
    /// Set for load tests: do not keep request copies (memory stays flat).
    pub skip_recording: std::sync::atomic::AtomicBool,
}

/// One request as received by the mock.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// The request method.
    pub method: Method,
    /// Path and query as received (scheme/authority stripped for HTTP/2).
    pub uri: Uri,
    /// All request headers.
    pub headers: HeaderMap,
    /// The full request body.
    pub body: Bytes,
}

impl MockState {
    /// Number of requests received so far.
    pub fn request_count(&self) -> usize {
        lock(&self.requests).len()
    }

    /// A clone of the most recent request, if any.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        lock(&self.requests).last().cloned()
    }
}

/// Locks a mutex, ignoring poisoning (a panicking test must not cascade).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The exact streamed deltas the mock produces for `words` words:
/// `"w0"`, `" w1"`, `" w2"`, … The non-streamed content is their
/// concatenation.
pub fn reply_words(words: usize) -> Vec<String> {
    (0..words)
        .map(|i| {
            if i == 0 {
                "w0".to_string()
            } else {
                format!(" w{i}")
            }
        })
        .collect()
}

impl MockProvider {
    /// Binds `127.0.0.1:0` and starts serving in the background.
    ///
    /// # Panics
    ///
    /// Panics if the loopback listener cannot be bound (there is no sensible
    /// way for a test fixture to continue).
    pub async fn start() -> MockProvider {
        MockProvider::bind("127.0.0.1:0", true).await
    }

    /// Binds `addr` (a load-test server: requests are not recorded).
    ///
    /// # Panics
    ///
    /// Panics if `addr` cannot be bound.
    pub async fn start_on(addr: &str) -> MockProvider {
        MockProvider::bind(addr, false).await
    }

    async fn bind(addr: &str, record: bool) -> MockProvider {
        let listener = TcpListener::bind(addr)
            .await
            .expect("mock: cannot bind the listen address");
        let addr = listener
            .local_addr()
            .expect("mock: bound listener has no local address");
        let state = Arc::new(MockState::default());
        let (tx, rx) = watch::channel(());
        state.skip_recording.store(!record, Ordering::Relaxed);
        let task = tokio::spawn(accept_loop(listener, state.clone(), rx));
        MockProvider {
            addr,
            state,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Base URL, e.g. `http://127.0.0.1:12345`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for MockProvider {
    fn drop(&mut self) {
        // Dropping the sender wakes every `changed()` waiter with an error,
        // which ends the accept loop and all connection tasks.
        drop(self.shutdown.take());
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Decrements `open_connections` when a connection task ends (however it ends).
struct ConnGuard(Arc<MockState>);

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Accepts connections until the shutdown sender is dropped.
async fn accept_loop(
    listener: TcpListener,
    state: Arc<MockState>,
    mut shutdown: watch::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        // E.g. EMFILE under load: back off briefly and retry.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                state.open_connections.fetch_add(1, Ordering::SeqCst);
                let guard = ConnGuard(state.clone());
                let conn_state = state.clone();
                let mut conn_shutdown = shutdown.clone();
                tokio::spawn(async move {
                    let _guard = guard;
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    builder.http1().timer(TokioTimer::new()).auto_date_header(false);
                    builder.http2().timer(TokioTimer::new()).auto_date_header(false);
                    let svc = service_fn(move |req| handle(conn_state.clone(), req));
                    let conn = builder.serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = conn_shutdown.changed() => {}
                    }
                });
            }
        }
    }
}

/// Records the request, then routes it.
async fn handle(
    state: Arc<MockState>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let (parts, body) = req.into_parts();
    // A body read error (client hung up mid-upload) records what we have: nothing.
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let uri = parts
        .uri
        .path_and_query()
        .map(|pq| Uri::from(pq.clone()))
        .unwrap_or_else(|| parts.uri.clone());
    if !state.skip_recording.load(Ordering::Relaxed) {
        lock(&state.requests).push(RecordedRequest {
            method: parts.method.clone(),
            uri,
            headers: parts.headers.clone(),
            body: body.clone(),
        });
    }

    let path = parts.uri.path();
    let resp = match Route::find(&parts.method, path) {
        Some(route) if route.is_anthropic() && !has_messages_array(&body) => unknown_path(path),
        Some(route) => serve(&state, route, &parts.headers, parts.uri.query(), &body).await,
        None if path.ends_with("/models") && parts.method == Method::GET => {
            json_response(StatusCode::OK, Bytes::from_static(MODELS_JSON.as_bytes()))
        }
        None => unknown_path(path),
    };
    Ok(resp)
}

/// The `404` answer for a path the mock does not serve.
fn unknown_path(path: &str) -> Response<MockBody> {
    error_response(
        StatusCode::NOT_FOUND,
        &format!("mock: unknown path {path}"),
        "invalid_request_error",
        "unknown_path",
    )
}

/// Whether `body` is not valid JSON (that is a `400` later) or is a JSON
/// value with a `messages` array. Anthropic routes answer `404` otherwise,
/// as they did before they were served.
fn has_messages_array(body: &Bytes) -> bool {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => v.get("messages").is_some_and(serde_json::Value::is_array),
        Err(_) => true,
    }
}

/// The APIs the mock serves (all `POST`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
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
    fn find(method: &Method, path: &str) -> Option<Route> {
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
    fn is_anthropic(self) -> bool {
        matches!(self, Route::Messages | Route::CountTokens)
    }
}

/// Scenarios requested through `x-mock-scenario`.
#[derive(Default)]
struct Scenarios {
    error: Option<u16>,
    cut: Option<usize>,
    delay_headers: Option<u64>,
    gzip: bool,
    malformed_json: bool,
    malformed_sse: bool,
    no_usage: bool,
    refusal: bool,
    choices_null: bool,
    stream_error: bool,
    incomplete: bool,
    response_failed: bool,
    echo_auth: bool,
}

impl Scenarios {
    /// Parses every `x-mock-scenario` header; values may be comma-separated.
    /// Unknown or unparsable entries are ignored.
    fn parse(headers: &HeaderMap) -> Scenarios {
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
fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// A header value parsed as a number, if present and valid.
fn header_num<T: std::str::FromStr>(headers: &HeaderMap, name: &str) -> Option<T> {
    header_str(headers, name).and_then(|v| v.parse().ok())
}

/// Applies the scenarios every route shares (`delay-headers`, `error:CODE`,
/// `gzip`) around the route's own response.
async fn serve(
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
fn credential(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
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
struct Ctx<'a> {
    state: &'a Arc<MockState>,
    headers: &'a HeaderMap,
    scenarios: &'a Scenarios,
    /// `x-mock-delay-ms`, if positive.
    delay: Option<Duration>,
}

impl Ctx<'_> {
    /// `x-mock-words` (default 8).
    fn words(&self) -> usize {
        header_num(self.headers, "x-mock-words").unwrap_or(DEFAULT_WORDS)
    }

    /// `x-mock-id`, or `default`.
    fn id<'b>(&'b self, default: &'b str) -> &'b str {
        header_str(self.headers, "x-mock-id").unwrap_or(default)
    }

    /// A numeric header, 0 when absent or invalid.
    fn num(&self, name: &str) -> u64 {
        header_num(self.headers, name).unwrap_or(0)
    }

    /// The kind of reply: a tool call (`x-mock-tool-call`), a refusal (only
    /// where `refusal_allowed`, with the `refusal` scenario) or text.
    fn reply(&self, refusal_allowed: bool) -> Reply<'_> {
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
    fn sse(&self, frames: Vec<Bytes>) -> Response<MockBody> {
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
    fn json(&self, json: String) -> Response<MockBody> {
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
enum Reply<'a> {
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
    fn tokens(self) -> u64 {
        match self {
            Reply::Text(words) => words as u64,
            Reply::Tool(..) => TOOL_CALL_TOKENS,
            Reply::Refusal => REFUSAL_TOKENS,
        }
    }
}

/// `7 + 3 × messages`, the prompt tokens of chat and Anthropic requests.
fn prompt_tokens(req: &serde_json::Value) -> u64 {
    let messages = req
        .get("messages")
        .and_then(|v| v.as_array())
        .map_or(0, |a| a.len());
    7 + 3 * messages as u64
}

/// A `data: …` event of a named-event SSE stream (`event: NAME`).
fn named_event(name: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// The chat `malformed-json` / `malformed-sse` responses.
fn chat_malformed(ctx: &Ctx<'_>) -> Response<MockBody> {
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
fn chat_response(ctx: &Ctx<'_>, req: &serde_json::Value) -> Response<MockBody> {
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
fn chat_deltas(reply: Reply<'_>) -> Vec<String> {
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
fn usage_json(prompt: u64, completion: u64, cached: u64, reasoning: u64) -> String {
    format!(
        "{{\"prompt_tokens\":{prompt},\"completion_tokens\":{completion},\"total_tokens\":{},\"prompt_tokens_details\":{{\"cached_tokens\":{cached},\"audio_tokens\":0}},\"completion_tokens_details\":{{\"reasoning_tokens\":{reasoning},\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}}",
        prompt + completion
    )
}

/// Builds the legacy Completions response (`POST …/completions`).
fn completions_response(ctx: &Ctx<'_>, req: &serde_json::Value) -> Response<MockBody> {
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
fn embeddings_response(ctx: &Ctx<'_>, req: &serde_json::Value) -> Response<MockBody> {
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

/// Events of a Responses API stream, numbered by `sequence_number`.
#[derive(Default)]
struct ResponseEvents {
    frames: Vec<Bytes>,
    seq: u64,
}

impl ResponseEvents {
    /// Adds `event: KIND` with data `{"type":KIND<fields>,"sequence_number":K}`;
    /// `fields` is empty or starts with a comma.
    fn push(&mut self, kind: &str, fields: &str) {
        let data = format!(
            "{{\"type\":\"{kind}\"{fields},\"sequence_number\":{}}}",
            self.seq
        );
        self.frames.push(named_event(kind, &data));
        self.seq += 1;
    }

    /// Adds the `stream-error` event.
    fn push_error(&mut self) {
        self.push(
            "error",
            ",\"code\":\"server_error\",\"message\":\"mock stream error\",\"param\":null",
        );
    }
}

/// A Responses API `response` object.
fn response_object(
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
fn output_text_part(text: &str) -> String {
    format!(
        "{{\"type\":\"output_text\",\"text\":{},\"annotations\":[],\"logprobs\":[]}}",
        js(text)
    )
}

/// A Responses API `message` output item.
fn message_item(status: &str, content: &str) -> String {
    format!(
        "{{\"type\":\"message\",\"id\":\"msg_mock\",\"status\":\"{status}\",\"role\":\"assistant\",\"content\":[{content}]}}"
    )
}

/// `value`, or `default` when it is empty.
fn or_default<'a>(value: &'a str, default: &'a str) -> &'a str {
    if value.is_empty() {
        default
    } else {
        value
    }
}

/// A Responses API `function_call` output item.
fn function_call_item(name: &str, call_id: &str, arguments: &str, status: &str) -> String {
    format!(
        "{{\"type\":\"function_call\",\"id\":\"fc_mock\",\"call_id\":{},\"name\":{},\"arguments\":{},\"status\":\"{status}\"}}",
        js(or_default(call_id, "call_mock_0")),
        js(name),
        js(arguments)
    )
}

/// Builds the Responses API response (`POST …/responses`).
fn responses_response(ctx: &Ctx<'_>, req: &serde_json::Value) -> Response<MockBody> {
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

/// An Anthropic-style error response.
fn anthropic_error_response(status: StatusCode, kind: &str, message: &str) -> Response<MockBody> {
    let body = format!(
        "{{\"type\":\"error\",\"error\":{{\"type\":{},\"message\":{}}}}}",
        js(kind),
        js(message)
    );
    json_response(status, Bytes::from(body))
}

/// The Anthropic `error:CODE` response.
fn anthropic_error(code: u16) -> Response<MockBody> {
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
fn messages_response(ctx: &Ctx<'_>, req: &serde_json::Value) -> Response<MockBody> {
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

/// The model name reported in responses: the requested model with
/// `-2024-07-18` appended unless it already ends in a `-YYYY-MM-DD` date.
fn response_model(model: &str) -> String {
    if has_date_suffix(model) {
        model.to_string()
    } else {
        format!("{model}{MODEL_DATE_SUFFIX}")
    }
}

/// Whether `model` ends in `-YYYY-MM-DD`.
fn has_date_suffix(model: &str) -> bool {
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

/// A JSON string literal for `s`.
fn js(s: &str) -> String {
    // Serializing a `&str` cannot fail; the fallback is never used.
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

/// A complete JSON response with an explicit `content-length`.
fn json_response(status: StatusCode, body: Bytes) -> Response<MockBody> {
    let len = body.len() as u64;
    let mut resp = Response::new(MockBody::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

/// An OpenAI-style error response.
fn error_response(status: StatusCode, message: &str, kind: &str, code: &str) -> Response<MockBody> {
    let body = format!(
        "{{\"error\":{{\"message\":{},\"type\":{},\"param\":null,\"code\":{}}}}}",
        js(message),
        js(kind),
        js(code)
    );
    json_response(status, Bytes::from(body))
}

/// A `200 text/event-stream` response over `stream`.
fn sse_response(stream: SseStream) -> Response<MockBody> {
    let mut resp = Response::new(MockBody::stream(stream));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// Gzips a response body: whole-body for complete bodies (with a new
/// `content-length`), per-frame sync-flushed for streamed bodies.
fn gzip_response(resp: Response<MockBody>) -> Response<MockBody> {
    let (mut parts, body) = resp.into_parts();
    let body = match body.kind {
        Kind::Full(bytes) => {
            let plain = bytes.unwrap_or_default();
            let mut enc = GzEncoder::new(Vec::new(), Compression::default());
            // Writing into a Vec cannot fail; on the impossible error keep
            // the plain body.
            match enc.write_all(&plain).and_then(|()| enc.finish()) {
                Ok(gz) => {
                    parts
                        .headers
                        .insert(CONTENT_LENGTH, HeaderValue::from(gz.len() as u64));
                    parts
                        .headers
                        .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                    MockBody::full(Bytes::from(gz))
                }
                Err(_) => MockBody::full(plain),
            }
        }
        Kind::Stream(mut stream) => {
            stream.gzip = Some(GzEncoder::new(Vec::new(), Compression::default()));
            parts.headers.remove(CONTENT_LENGTH);
            parts
                .headers
                .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            MockBody {
                kind: Kind::Stream(stream),
            }
        }
    };
    Response::from_parts(parts, body)
}

/// The response body type of the mock: either a complete buffer or a
/// frame-by-frame stream.
pub struct MockBody {
    kind: Kind,
}

/// The two shapes of [`MockBody`].
enum Kind {
    /// A complete body, yielded as one frame (`None` once yielded).
    Full(Option<Bytes>),
    /// A streamed body, one frame per SSE event.
    Stream(Box<SseStream>),
}

impl MockBody {
    fn full(bytes: Bytes) -> MockBody {
        MockBody {
            kind: Kind::Full(Some(bytes)),
        }
    }

    fn stream(stream: SseStream) -> MockBody {
        MockBody {
            kind: Kind::Stream(Box::new(stream)),
        }
    }
}

/// A streamed body: yields `frames` one at a time, optionally sleeping
/// before each frame after the first, optionally failing after `cut_after`
/// frames, optionally gzip-encoding with a sync flush per frame.
struct SseStream {
    state: Arc<MockState>,
    frames: VecDeque<Bytes>,
    yielded: usize,
    delay: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether the wait before the next frame has already elapsed.
    waited: bool,
    cut_after: Option<usize>,
    gzip: Option<GzEncoder<Vec<u8>>>,
    /// Whether this stream updates the `MockState` stream counters.
    track: bool,
    /// Set once the last frame (or the cut error) has been yielded.
    finished: bool,
}

impl SseStream {
    fn new(
        state: Arc<MockState>,
        frames: Vec<Bytes>,
        delay: Option<Duration>,
        cut_after: Option<usize>,
        track: bool,
    ) -> SseStream {
        SseStream {
            state,
            frames: frames.into(),
            yielded: 0,
            delay,
            sleep: None,
            waited: false,
            cut_after,
            gzip: None,
            track,
            finished: false,
        }
    }

    /// Gzip-encodes one frame (sync flush), finishing the gzip stream when
    /// `last` is set. Without gzip, returns the frame unchanged.
    fn encode(&mut self, frame: Bytes, last: bool) -> std::io::Result<Bytes> {
        let Some(enc) = self.gzip.as_mut() else {
            return Ok(frame);
        };
        enc.write_all(&frame)?;
        if last {
            match self.gzip.take() {
                Some(enc) => enc.finish().map(Bytes::from),
                None => Ok(Bytes::new()),
            }
        } else {
            enc.flush()?;
            Ok(Bytes::from(std::mem::take(enc.get_mut())))
        }
    }

    /// Whether the body must fail instead of yielding the next frame.
    fn cut_now(&self) -> bool {
        self.cut_after.is_some_and(|k| self.yielded >= k)
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.finished {
            return Poll::Ready(None);
        }
        if !self.waited {
            // One sleep per position: the per-chunk delay (after the first
            // frame) plus, before a cut, a grace period so the server flushes
            // the frames already yielded before the body fails (hyper drops
            // unflushed output when a body errors).
            let mut wait = Duration::ZERO;
            if self.yielded > 0 {
                wait += self.delay.unwrap_or_default();
            }
            if self.cut_now() {
                wait += CUT_FLUSH_GRACE;
            }
            if !wait.is_zero() {
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(wait)));
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
            }
            self.waited = true;
        }
        if self.cut_now() {
            self.finished = true;
            return Poll::Ready(Some(Err(std::io::Error::other("mock: stream cut"))));
        }
        let Some(frame) = self.frames.pop_front() else {
            self.finished = true;
            return Poll::Ready(None);
        };
        let last = self.frames.is_empty();
        let data = match self.encode(frame, last) {
            Ok(data) => data,
            Err(e) => {
                self.finished = true;
                return Poll::Ready(Some(Err(e)));
            }
        };
        self.yielded += 1;
        self.waited = false;
        if last {
            self.finished = true;
            if self.track {
                *lock(&self.state.last_chunk_sent_at) = Some(Instant::now());
                self.state.streams_completed.fetch_add(1, Ordering::SeqCst);
            }
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }
}

impl Drop for SseStream {
    fn drop(&mut self) {
        if self.track && !self.finished {
            self.state.streams_dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Stream(stream) => stream.poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Stream(stream) => stream.finished,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Stream(_) => SizeHint::default(),
        }
    }
}
