//! In-process mock LLM provider speaking OpenAI's and Anthropic's wire formats.
//!
//! [`MockProvider::start`] binds `127.0.0.1:0` and serves HTTP/1.1 and
//! cleartext HTTP/2 (prior knowledge) with keep-alive, via
//! `hyper_util::server::conn::auto::Builder`. It is used by the integration
//! tests (`mod mock;`) and by the load-test example
//! (`#[path = "../tests/mock/mod.rs"] mod mock;`), so it depends only on
//! regular crate dependencies and never prints anything.
//!
//! This file holds the server (bind, accept, record, route) and the fixed
//! values; the formats are beside it, as in `src/record/providers/`:
//! `openai.rs` (chat, legacy completions, embeddings), `responses.rs`,
//! `anthropic.rs`, with `serve.rs` (routes, scenarios, control headers) and
//! `body.rs` (JSON, SSE, gzip bodies).
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

mod anthropic;
mod body;
mod openai;
mod responses;
mod serve;

use anthropic::*;
use body::*;
use openai::*;
use responses::*;
use serve::*;

pub use body::MockBody;
// Not every test crate that includes the mock uses these.
#[allow(unused_imports)]
pub use openai::{base64_encode, embedding_vector};

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
