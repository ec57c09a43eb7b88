//! In-process mock LLM provider speaking OpenAI's wire formats.
//!
//! [`MockProvider::start`] binds `127.0.0.1:0` and serves HTTP/1.1 and
//! cleartext HTTP/2 (prior knowledge) with keep-alive, via
//! `hyper_util::server::conn::auto::Builder`. It is used by the integration
//! tests (`mod mock;`) and by the load-test example
//! (`#[path = "../tests/mock/mod.rs"] mod mock;`), so it depends only on
//! regular crate dependencies and never prints anything.
//!
//! Every response is fully deterministic (fixed ids, fixed `created`
//! timestamps, no `date` header), so bytes obtained directly from the mock and
//! through the proxy can be compared byte for byte.
//!
//! # Routing (by path suffix, so any proxy prefix works)
//!
//! * `POST …/chat/completions` — OpenAI Chat Completions (streamed or not).
//! * `GET …/models` — a one-entry model list.
//! * anything else — `404` with an OpenAI-style error body.
//!
//! # Control headers for chat completions
//!
//! * `x-mock-words: N` — reply has `N` words (default 8), see [`reply_words`].
//! * `x-mock-id: S` — response id (default `chatcmpl-mock`).
//! * `x-mock-cached: C` — `usage.prompt_tokens_details.cached_tokens` (default 0).
//! * `x-mock-delay-ms: D` — in streamed bodies, sleep `D` ms before every
//!   frame after the first.
//! * `x-mock-scenario: S` — one of `error:CODE`, `cut:K`, `delay-headers:MS`,
//!   `gzip`, `malformed-json`, `malformed-sse`, `no-usage`. Several scenarios
//!   may be combined, separated by commas (e.g. `gzip,cut:2`).

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
    let resp = if path.ends_with("/chat/completions") && parts.method == Method::POST {
        chat_completions(&state, &parts.headers, &body).await
    } else if path.ends_with("/models") && parts.method == Method::GET {
        json_response(StatusCode::OK, Bytes::from_static(MODELS_JSON.as_bytes()))
    } else {
        error_response(
            StatusCode::NOT_FOUND,
            &format!("mock: unknown path {path}"),
            "invalid_request_error",
            "unknown_path",
        )
    };
    Ok(resp)
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

/// Handles `POST …/chat/completions`, including scenarios and gzip.
async fn chat_completions(
    state: &Arc<MockState>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Response<MockBody> {
    let scenarios = Scenarios::parse(headers);
    if let Some(ms) = scenarios.delay_headers {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let resp = chat_response(state, headers, body, &scenarios);
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

/// Builds the (uncompressed) chat completions response.
fn chat_response(
    state: &Arc<MockState>,
    headers: &HeaderMap,
    body: &Bytes,
    scenarios: &Scenarios,
) -> Response<MockBody> {
    let delay = header_num::<u64>(headers, "x-mock-delay-ms")
        .filter(|&d| d > 0)
        .map(Duration::from_millis);

    if let Some(code) = scenarios.error {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error_response(
            status,
            &format!("mock error {code}"),
            "mock_error",
            &format!("mock_{code}"),
        );
    }
    if scenarios.malformed_json {
        return json_response(
            StatusCode::OK,
            Bytes::from_static(MALFORMED_JSON.as_bytes()),
        );
    }
    if scenarios.malformed_sse {
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
        return sse_response(SseStream::new(
            state.clone(),
            frames,
            delay,
            scenarios.cut,
            true,
        ));
    }

    let Ok(req) = serde_json::from_slice::<serde_json::Value>(body) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "mock: invalid JSON body",
            "invalid_request_error",
            "invalid_json",
        );
    };
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
    let messages = req
        .get("messages")
        .and_then(|v| v.as_array())
        .map_or(0, |a| a.len());

    let words = header_num::<usize>(headers, "x-mock-words").unwrap_or(DEFAULT_WORDS);
    let id = header_str(headers, "x-mock-id").unwrap_or(DEFAULT_ID);
    let cached = header_num::<u64>(headers, "x-mock-cached").unwrap_or(0);
    let prompt_tokens = 7 + 3 * messages as u64;
    let usage = usage_json(prompt_tokens, words as u64, cached);

    let id_js = js(id);
    let model_js = js(&response_model(model));
    let deltas = reply_words(words);

    if stream {
        let include_usage = include_usage && !scenarios.no_usage;
        let usage_null = if include_usage { ",\"usage\":null" } else { "" };
        let chunk = |delta: &str, finish: &str| {
            Bytes::from(format!(
                "data: {{\"id\":{id_js},\"object\":\"chat.completion.chunk\",\"created\":{MOCK_CREATED},\"model\":{model_js},\"system_fingerprint\":\"fp_mock\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}]{usage_null}}}\n\n"
            ))
        };
        let mut frames = Vec::with_capacity(words + 4);
        frames.push(chunk(
            r#"{"role":"assistant","content":"","refusal":null}"#,
            "null",
        ));
        for d in &deltas {
            frames.push(chunk(&format!("{{\"content\":{}}}", js(d)), "null"));
        }
        frames.push(chunk("{}", "\"stop\""));
        if include_usage {
            frames.push(Bytes::from(format!(
                "data: {{\"id\":{id_js},\"object\":\"chat.completion.chunk\",\"created\":{MOCK_CREATED},\"model\":{model_js},\"system_fingerprint\":\"fp_mock\",\"choices\":[],\"usage\":{usage}}}\n\n"
            )));
        }
        frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
        return sse_response(SseStream::new(
            state.clone(),
            frames,
            delay,
            scenarios.cut,
            true,
        ));
    }

    let content = js(&deltas.concat());
    let usage_part = if scenarios.no_usage {
        String::new()
    } else {
        format!(",\"usage\":{usage}")
    };
    let json = format!(
        "{{\"id\":{id_js},\"object\":\"chat.completion\",\"created\":{MOCK_CREATED},\"model\":{model_js},\"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":{content},\"refusal\":null}},\"logprobs\":null,\"finish_reason\":\"stop\"}}]{usage_part},\"system_fingerprint\":\"fp_mock\"}}"
    );
    if scenarios.cut.is_some() {
        // A non-streamed body cut in half: first half, then a body error.
        let bytes = Bytes::from(json);
        let half = bytes.len() / 2;
        let frames = vec![bytes.slice(..half), bytes.slice(half..)];
        let mut resp = Response::new(MockBody::stream(SseStream::new(
            state.clone(),
            frames,
            delay,
            Some(1),
            false,
        )));
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        return resp;
    }
    json_response(StatusCode::OK, Bytes::from(json))
}

/// The usage object, compact JSON with OpenAI's key order.
fn usage_json(prompt: u64, completion: u64, cached: u64) -> String {
    format!(
        "{{\"prompt_tokens\":{prompt},\"completion_tokens\":{completion},\"total_tokens\":{},\"prompt_tokens_details\":{{\"cached_tokens\":{cached},\"audio_tokens\":0}},\"completion_tokens_details\":{{\"reasoning_tokens\":0,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}}",
        prompt + completion
    )
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
