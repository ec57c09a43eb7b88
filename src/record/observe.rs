//! Observers: what the tees do with their copies, and the in-flight
//! exchange that turns them into one finished span.
//!
//! `RequestObserver` buffers (bounded) the decoded request body and, at its
//! end, records what the request says. `ResponseObserver` owns the
//! `Exchange`; it decodes the response copy, parses JSON or SSE as the format
//! requires, marks time to first token, and at end of stream finishes the
//! span. `Exchange` is the only place a span is finished and queued: exactly
//! once, with `cancelled` from `Drop` if nothing else finished it; under
//! load on the `Finisher`'s thread, in order. Nothing here can fail the
//! client's stream, and nothing here awaits.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::output::sink::SpanSink;
use crate::path::error::ProxyError;
use crate::path::tee::{End, Observer};
use crate::record::context::Explicit;
use crate::record::decode::Decoder;
use crate::record::providers::{
    self, Endpoint, EventStream, RequestFacts, ResponseFacts, StreamParser,
};
use crate::record::span::{self, Span, SpanStatus};
use crate::record::stitch::{self, PendingCall, Turn};
use crate::record::tokens::{self, Encoding};

/// Recording settings shared by every exchange.
pub struct Recording {
    pub sink: SpanSink,
    pub capture_bodies: bool,
    pub max_capture_bytes: usize,
    pub max_parse_bytes: usize,
    pub api_key_salt: String,
    pub pricing: crate::record::pricing::Pricing,
    /// See `exact_usage`.
    pub exact_stream_usage: bool,
    /// Header values dropped for not being UTF-8.
    pub context_stats: crate::record::context::ContextStats,
    /// The stitching index (`None` when stitching is off).
    pub index: Option<crate::record::stitch::Index>,
    /// Exchanges in flight, for `/api/live`.
    pub live: Arc<crate::record::live::Live>,
    /// Set at shutdown when the drain window ends with exchanges still open:
    /// those dropped from then on were cut by llmtap, not by their client.
    pub drain_over: std::sync::atomic::AtomicBool,
    /// Finishes exchanges off the request path (`None`: where they end).
    pub finisher: Option<Finisher>,
}

// === impl Finisher ===

/// Work done once an exchange has ended: parsing the response, stitching,
/// building the span, metrics, queueing it for the writer.
type Job = Box<dyn FnOnce() + Send>;

/// Most finishes waiting; past it an exchange is finished where it ended.
const FINISH_QUEUE: usize = 4096;

/// The thread that finishes exchanges under load, one at a time and in the
/// order their ends were seen.
///
/// An exchange that ends while the finisher is idle is finished where it
/// ended, before its last byte goes out, as without a finisher: handing it
/// over would cost a thread wake-up per exchange (measured one client at a
/// time: ~15–30 µs more CPU per request, no gain in latency). One that
/// ends while finishes are queued or running joins the queue. Measured at
/// c=32 on 2 cores, that took llmtap's CPU per request from 71–80 to
/// 60–75 µs: the finishing thread does that work back to back with warm
/// caches, and the workers go back to the sockets sooner.
///
/// The order keeps stitching right. A reply's finish (which registers it)
/// is queued, or done, before its last byte goes out, and the client's next
/// turn can only end after that. A request stitches itself as it ends only
/// when the finisher is idle, that is when every queued finish is done;
/// otherwise its stitching waits for its own finish, later in the same
/// queue. Only when the queue is full is an exchange finished where it
/// ended while others wait, and then that order is not promised.
pub struct Finisher {
    tx: std::sync::mpsc::SyncSender<Job>,
    pending: Arc<std::sync::atomic::AtomicUsize>,
}

impl Finisher {
    /// Starts the finishing thread; it ends when the `Finisher` is dropped.
    pub fn start() -> std::io::Result<Finisher> {
        use std::sync::atomic::Ordering;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Job>(FINISH_QUEUE);
        let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let left = Arc::clone(&pending);
        std::thread::Builder::new()
            .name("llmtap-finish".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    // A bug in one exchange's finish loses that span, not
                    // the thread.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    left.fetch_sub(1, Ordering::SeqCst);
                }
            })?;
        Ok(Finisher { tx, pending })
    }

    /// Queues `job`, or runs it here when the queue is full.
    fn run(&self, job: Job) {
        use std::sync::atomic::Ordering;
        use std::sync::mpsc::TrySendError;
        self.pending.fetch_add(1, Ordering::SeqCst);
        if let Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) =
            self.tx.try_send(job)
        {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            job();
        }
    }

    /// True while a finish is queued or running. An exchange that ends
    /// while the finisher is idle is finished where it ended: that costs no
    /// thread wake-up (~15–30 µs of CPU per exchange, one client at a time)
    /// and keeps the order, since nothing queued could come before it.
    pub fn busy(&self) -> bool {
        self.pending() > 0
    }

    /// Finishes queued but not yet done.
    pub fn pending(&self) -> usize {
        self.pending.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits (bounded by `deadline`) until every queued finish is done.
    pub async fn settle(&self, deadline: Duration) {
        let end = Instant::now() + deadline;
        while self.pending() > 0 && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Largest single SSE event the parser keeps (bigger ones are skipped).
const MAX_SSE_EVENT_BYTES: usize = 1 << 20;
/// Decoded bytes past which the observer stops decompressing (bomb cap).
const MAX_DECODED_BYTES: usize = 256 << 20;

impl Recording {
    /// Short salted hash of the request's API key, if it carries one
    /// (`Authorization`, `x-api-key` or `api-key`). 16 hex digits.
    pub fn api_key_hash(&self, headers: &HeaderMap) -> Option<String> {
        let key = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim())
            .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
            .or_else(|| headers.get("api-key").and_then(|v| v.to_str().ok()))
            .filter(|k| !k.is_empty())?;
        let mut h = Sha256::new();
        h.update(self.api_key_salt.as_bytes());
        h.update([0u8]);
        h.update(key.as_bytes());
        Some(span::hex(&h.finalize()[..8]))
    }
}

// === impl RequestSide ===

/// What the request observer learned, shared with the exchange.
#[derive(Default)]
pub struct RequestSide {
    facts: Option<RequestFacts>,
    /// The (decoded) body, kept only for token estimation.
    body: Option<Bytes>,
    captured: Option<String>,
    end: Option<End>,
    /// The earlier exchange this request continues (zero-code stitching).
    stitched: Option<Turn>,
    /// Chain value of the request's whole history (the key of this
    /// exchange, with the reply appended, for the next turn).
    chain: Option<u64>,
    /// Stitching of a large request, running off the request path; its
    /// result replaces `stitched` and `chain` when the exchange finishes.
    deferred: Option<Arc<DeferredStitch>>,
}

/// Requests this large (decoded) are stitched on a blocking thread after
/// they have gone upstream, not inline: digesting a 100 KiB chat history
/// took ~350 µs on the request path (a `perf` profile through llmtap),
/// against the ~10 µs a blocking task costs to start.
const DEFER_STITCH_BYTES: usize = 16 * 1024;

/// What stitching needs of a request.
struct StitchInput {
    rec: Arc<Recording>,
    endpoint: Endpoint,
    seed: u64,
    explicit_trace: bool,
    start_us: i64,
    body: Bytes,
}

/// A request's stitching, done by whichever comes first: the blocking
/// task started at the request's end, or the exchange's finish. The lock
/// is held while it runs, so the other waits for the result instead of
/// doing it twice (the finish waits only when the upstream answered
/// before the task was done).
struct DeferredStitch {
    state: Mutex<Stitching>,
}

enum Stitching {
    Pending(StitchInput),
    Done(Option<Turn>, Option<u64>),
}

impl DeferredStitch {
    fn resolve(&self) -> (Option<Turn>, Option<u64>) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (stitched, chain) = match &*state {
            Stitching::Done(stitched, chain) => return (stitched.clone(), *chain),
            Stitching::Pending(input) => stitch(input),
        };
        *state = Stitching::Done(stitched.clone(), chain);
        (stitched, chain)
    }
}

/// Zero-code stitching of one request: which earlier exchange it continues
/// (unless the caller's traceparent decides), the chain value of its
/// history, and the tool calls whose results it carries (sent as spans).
fn stitch(input: &StitchInput) -> (Option<Turn>, Option<u64>) {
    let rec = &input.rec;
    let Some(index) = &rec.index else {
        return (None, None);
    };
    let Some(conv) = providers::conversation(input.endpoint, &input.body) else {
        return (None, None);
    };
    for (call, result) in index.take_calls(input.seed, &conv.results) {
        let span = tool_span(
            rec,
            &call,
            input.start_us,
            SpanStatus::Completed,
            Some(&result.content),
        );
        rec.sink.send(span);
    }
    let stitched = if input.explicit_trace {
        None
    } else {
        index.find(input.seed, &conv)
    };
    (stitched, conv.chains(input.seed).last().copied())
}

/// Tees the client's request body.
pub struct RequestObserver {
    side: Arc<Mutex<RequestSide>>,
    /// For stitching: the recorder, the chain seed, whether the caller's
    /// traceparent decides the trace, and when the request arrived.
    rec: Arc<Recording>,
    seed: u64,
    explicit_trace: bool,
    start_us: i64,
    endpoint: Endpoint,
    decoder: Decoder,
    buf: Vec<u8>,
    limit: usize,
    seen: usize,
    capture: Option<usize>,
    max_parse: usize,
    /// The exchange's entry in the live registry, which learns the model
    /// once the request body is parsed.
    span_id: String,
}

impl RequestObserver {
    fn new(
        side: Arc<Mutex<RequestSide>>,
        endpoint: Endpoint,
        rec: &Arc<Recording>,
        encoding: Option<&str>,
        seed: u64,
        explicit_trace: bool,
        start_us: i64,
    ) -> Self {
        let capture = rec.capture_bodies.then_some(rec.max_capture_bytes);
        let parse = if endpoint.parses_request() {
            rec.max_parse_bytes
        } else {
            0
        };
        RequestObserver {
            side,
            rec: Arc::clone(rec),
            seed,
            explicit_trace,
            start_us,
            endpoint,
            decoder: Decoder::new(encoding, MAX_DECODED_BYTES),
            buf: Vec::new(),
            limit: parse.max(capture.unwrap_or(0)),
            seen: 0,
            capture,
            max_parse: parse,
            span_id: String::new(),
        }
    }
}

impl Observer for RequestObserver {
    fn on_data(&mut self, data: &Bytes) {
        if self.limit == 0 {
            return;
        }
        let (buf, limit, seen) = (&mut self.buf, self.limit, &mut self.seen);
        self.decoder.feed(data, &mut |piece| {
            *seen += piece.len();
            let room = limit.saturating_sub(buf.len());
            buf.extend_from_slice(&piece[..piece.len().min(room)]);
        });
    }

    fn on_end(self, end: End) {
        let complete = end == End::Complete && self.decoder.error().is_none();
        let parsable = complete && self.seen <= self.max_parse;
        let facts = if parsable && self.endpoint.parses_request() {
            providers::parse_request(&self.buf)
        } else {
            None
        };
        if let Some(model) = facts.as_ref().and_then(|f| f.model.as_deref()) {
            self.rec.live.set_model(&self.span_id, model);
        }
        let captured = self
            .capture
            .map(|max| capture_text(&self.buf, self.seen, max));
        let large = self.buf.len() >= DEFER_STITCH_BYTES;
        let buf = Bytes::from(self.buf);
        // Zero-code stitching: which earlier exchange this one continues, and
        // which pending tool calls it carries the results of.
        let (mut stitched, mut chain, mut deferred) = (None, None, None);
        if self.rec.index.is_some() && parsable {
            let input = StitchInput {
                rec: Arc::clone(&self.rec),
                endpoint: self.endpoint,
                seed: self.seed,
                explicit_trace: self.explicit_trace,
                start_us: self.start_us,
                body: buf.clone(),
            };
            match tokio::runtime::Handle::try_current() {
                // Finishes are queued: stitching waits for them, in the
                // exchange's own finish (see `Finisher`).
                _ if self.rec.finisher.as_ref().is_some_and(Finisher::busy) => {
                    deferred = Some(Arc::new(DeferredStitch {
                        state: Mutex::new(Stitching::Pending(input)),
                    }));
                }
                Ok(runtime) if large => {
                    let job = Arc::new(DeferredStitch {
                        state: Mutex::new(Stitching::Pending(input)),
                    });
                    let run = Arc::clone(&job);
                    runtime.spawn_blocking(move || {
                        run.resolve();
                    });
                    deferred = Some(job);
                }
                _ => (stitched, chain) = stitch(&input),
            }
        }
        let body = (parsable && facts.is_some()).then_some(buf);
        let mut side = self.side.lock().unwrap_or_else(|p| p.into_inner());
        side.stitched = stitched;
        side.chain = chain;
        side.deferred = deferred;
        side.facts = facts;
        side.body = body;
        side.captured = captured;
        side.end = Some(end);
    }
}

/// The first `max` bytes as text, marked when cut.
fn capture_text(buf: &[u8], total: usize, max: usize) -> String {
    let cut = buf.len().min(max);
    let mut s = String::from_utf8_lossy(&buf[..cut]).into_owned();
    if total > cut {
        s.push_str(&format!("…[truncated {} bytes]", total - cut));
    }
    s
}

// === impl Exchange ===

/// One request/response in flight, and the span it becomes.
pub struct Exchange {
    rec: Arc<Recording>,
    span: Span,
    started: Instant,
    endpoint: Endpoint,
    /// The model named by the path (Azure deployments), used when the body
    /// names none.
    path_model: Option<String>,
    request: Arc<Mutex<RequestSide>>,
    /// What the caller's headers say.
    explicit: Explicit,
    /// The stitching chain seed (API key hash + route).
    seed: u64,
    /// llmtap asked for the usage chunk (see `exact_usage`).
    injected_usage: bool,
    /// The request's header credentials, removed from the span before it
    /// is written (see `redact`). In memory only.
    secrets: Vec<String>,
    done: bool,
}

/// How an exchange ended, as seen by whoever finishes it.
struct Outcome {
    /// When the end was seen (the finish may run later).
    ended: Instant,
    http_status: Option<u16>,
    end: End,
    /// llmtap's own error (no response from upstream).
    proxy_error: Option<(String, String)>,
    response: Option<ResponseFacts>,
    ttft: Option<Duration>,
    response_body: Option<String>,
    stream_incomplete: bool,
}

impl Exchange {
    /// Starts an exchange and its request observer.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        rec: Arc<Recording>,
        started: Instant,
        start_us: i64,
        endpoint: Endpoint,
        provider: &str,
        route: &str,
        method: &http::Method,
        path: &str,
        upstream_path: &str,
        headers: &HeaderMap,
    ) -> (Exchange, RequestObserver) {
        let mut span = Span::start(start_us);
        span.operation_type = endpoint.operation_type().to_string();
        span.provider = provider.to_string();
        span.route = route.to_string();
        span.method = method.as_str().to_string();
        span.path = path.to_string();
        span.api_key_hash = rec.api_key_hash(headers);
        let side = Arc::new(Mutex::new(RequestSide::default()));
        let encoding = headers
            .get(http::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok());
        let explicit = crate::record::context::from_headers(headers, &rec.context_stats);
        let seed = stitch::seed(span.api_key_hash.as_deref(), route);
        rec.live.insert(&span, &explicit);
        let mut observer = RequestObserver::new(
            Arc::clone(&side),
            endpoint,
            &rec,
            encoding,
            seed,
            explicit.traceparent.is_some(),
            start_us,
        );
        observer.span_id.clone_from(&span.span_id);
        let exchange = Exchange {
            rec,
            span,
            started,
            endpoint,
            path_model: providers::model_from_path(upstream_path).map(str::to_string),
            request: side,
            explicit,
            seed,
            injected_usage: false,
            secrets: crate::output::redact::header_secrets(headers),
            done: false,
        };
        (exchange, observer)
    }

    /// Ends the exchange with llmtap's own error response.
    pub fn fail(mut self, error: &ProxyError) {
        // If the client's upload broke, that is why the upstream call
        // failed: the exchange was cancelled, not failed. (A body dropped
        // unread because the connection failed is not the client's doing.)
        // (A body llmtap itself cut for its size is not the client's doing.)
        let client_gone = !matches!(error, ProxyError::BodyTooLarge { .. }) && {
            let side = self.request.lock().unwrap_or_else(|p| p.into_inner());
            matches!(side.end, Some(End::Error(_)))
        };
        let outcome = if client_gone {
            Outcome::simple(None, End::Cancelled)
        } else {
            let mut o = Outcome::simple(Some(error.status().as_u16()), End::Complete);
            o.proxy_error = Some((error.code().to_string(), error.to_string()));
            o
        };
        self.finish(outcome);
    }

    /// The endpoint being called.
    pub fn endpoint(&self) -> Endpoint {
        self.endpoint
    }

    /// Whether exact stream usage applies to this exchange.
    pub fn wants_exact_usage(&self) -> bool {
        self.rec.exact_stream_usage && self.endpoint == Endpoint::Chat
    }

    /// Most bytes of a body the observers parse.
    pub fn max_parse_bytes(&self) -> usize {
        self.rec.max_parse_bytes
    }

    /// Marks that llmtap added `include_usage` to the request.
    pub fn set_injected_usage(&mut self) {
        self.injected_usage = true;
    }

    /// True when llmtap added `include_usage` to the request.
    pub fn injected_usage(&self) -> bool {
        self.injected_usage
    }

    /// Builds the response observer that will finish this exchange.
    pub fn into_response_observer(self, status: u16, headers: &HeaderMap) -> ResponseObserver {
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let is_sse = content_type
            .split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"));
        let ok = (200..300).contains(&status);
        let (model, count_text) = {
            let side = self.request.lock().unwrap_or_else(|p| p.into_inner());
            let f = side.facts.as_ref();
            (
                f.and_then(|f| f.model.clone()),
                !self.injected_usage && !f.is_some_and(|f| f.include_usage),
            )
        };
        let enc = tokens::encoding_for(model.as_deref());
        let stream = if ok && is_sse {
            StreamParser::for_endpoint(self.endpoint, enc, count_text)
        } else {
            None
        };
        let mode = match stream {
            Some(stream) => Mode::Sse(Box::new(EventStream::new(stream, MAX_SSE_EVENT_BYTES))),
            None if !ok || self.endpoint.parses_request() => Mode::Json {
                buf: Vec::new(),
                seen: 0,
            },
            None => Mode::Skip,
        };
        let encoding = headers
            .get(http::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok());
        ResponseObserver {
            max_parse: self.rec.max_parse_bytes,
            capture: self
                .rec
                .capture_bodies
                .then(|| Capture::new(self.rec.max_capture_bytes)),
            decoder: Decoder::new(encoding, MAX_DECODED_BYTES),
            exchange: self,
            status,
            mode,
            enc,
            ttft: None,
        }
    }

    /// Finishes the exchange on the finishing thread (see [`Finisher`]),
    /// or here without one.
    fn finish(&mut self, o: Outcome) {
        if self.done {
            return;
        }
        if self.rec.finisher.as_ref().is_some_and(Finisher::busy) {
            let mut detached = self.detach();
            let rec = Arc::clone(&self.rec);
            if let Some(f) = &rec.finisher {
                f.run(Box::new(move || detached.finish_now(o)));
            }
            return;
        }
        self.finish_now(o);
    }

    /// Moves the exchange out of `self`, which is left done.
    fn detach(&mut self) -> Exchange {
        self.done = true;
        Exchange {
            rec: Arc::clone(&self.rec),
            span: std::mem::replace(&mut self.span, Span::start(0)),
            started: self.started,
            endpoint: self.endpoint,
            path_model: self.path_model.take(),
            request: Arc::clone(&self.request),
            explicit: std::mem::take(&mut self.explicit),
            seed: self.seed,
            injected_usage: self.injected_usage,
            secrets: std::mem::take(&mut self.secrets),
            done: false,
        }
    }

    fn finish_now(&mut self, o: Outcome) {
        if self.done {
            return;
        }
        self.done = true;
        self.rec.live.remove(&self.span.span_id);
        let elapsed = o.ended.saturating_duration_since(self.started);
        let s = &mut self.span;
        s.end_time_us = s.start_time_us + elapsed.as_micros() as i64;
        s.duration_ms = elapsed.as_secs_f64() * 1000.0;
        s.ttft_ms = o.ttft.map(|d| d.as_secs_f64() * 1000.0);
        s.http_status = o.http_status;

        let mut side = self.request.lock().unwrap_or_else(|p| p.into_inner());
        let mut side = std::mem::take(&mut *side);
        if let Some(job) = side.deferred.take() {
            (side.stitched, side.chain) = job.resolve();
        }
        // Where the span belongs: the caller's traceparent, else the exchange
        // this one continues, else the new trace it was born with.
        let e = &self.explicit;
        if let Some(tp) = &e.traceparent {
            s.trace_id.clone_from(&tp.trace_id);
            s.parent_span_id = Some(tp.parent_span_id.clone());
        } else if let Some(t) = &side.stitched {
            s.trace_id.clone_from(&t.trace_id);
            s.parent_span_id = Some(t.root_span_id.clone());
        }
        s.session_id.clone_from(&e.session_id);
        // A header names the user first; the body's user field after.
        s.user_id.clone_from(&e.user_id);
        s.conversation_id = e
            .conversation_id
            .clone()
            .or_else(|| side.stitched.as_ref().map(|t| t.conversation_id.clone()))
            .or_else(|| {
                // A new conversation, where the format has them.
                let conversational = matches!(
                    self.endpoint,
                    Endpoint::Chat | Endpoint::Messages | Endpoint::Responses
                );
                (self.rec.index.is_some() && conversational).then(|| s.trace_id.clone())
            });
        s.properties = e.properties_json();
        s.model = self.path_model.take();
        if let Some(f) = &side.facts {
            if f.model.is_some() {
                s.model = f.model.clone();
            }
            s.stream = f.stream;
            if s.user_id.is_none() {
                s.user_id = f.user.clone();
            }
        }
        s.request_body = side.captured;
        s.response_body = o.response_body;
        s.name = match (self.endpoint.operation_name(), &s.model) {
            (Some(op), Some(model)) => format!("{op} {model}"),
            (Some(op), None) => op.to_string(),
            (None, _) => format!("{} {}", s.method, s.path),
        };

        // Status and error.
        let http_error = o.http_status.filter(|&c| c >= 400);
        let api_error = o.response.as_ref().and_then(|r| r.error.clone());
        match (&o.end, &o.proxy_error) {
            (End::Cancelled, _)
                if self
                    .rec
                    .drain_over
                    .load(std::sync::atomic::Ordering::SeqCst) =>
            {
                s.status = SpanStatus::Cancelled;
                s.error_type = Some("shutdown".into());
                s.error_message = Some(
                    "llmtap shut down before the response ended (shutdown.drain_timeout_ms passed)"
                        .into(),
                );
            }
            (End::Cancelled, _) => {
                s.status = SpanStatus::Cancelled;
                s.error_type = Some("client_disconnected".into());
                s.error_message =
                    Some("client closed the connection before the response ended".into());
            }
            (End::Error(msg), _) => {
                s.status = SpanStatus::Failed;
                s.error_type = Some(if msg.starts_with(crate::path::error::IDLE_TIMEOUT) {
                    crate::path::error::IDLE_TIMEOUT.into()
                } else {
                    "upstream_stream_error".into()
                });
                s.error_message = Some(format!("upstream stream ended abnormally: {msg}"));
            }
            (End::Complete, Some((code, message))) => {
                s.status = SpanStatus::Failed;
                s.error_type = Some(code.clone());
                s.error_message = Some(message.clone());
            }
            (End::Complete, None) => {
                if let Some(code) = http_error {
                    s.status = SpanStatus::Failed;
                    s.error_type = Some(
                        api_error
                            .as_ref()
                            .and_then(|e| e.kind.clone())
                            .unwrap_or_else(|| code.to_string()),
                    );
                    s.error_message = Some(
                        api_error
                            .as_ref()
                            .map(|e| e.message.clone())
                            .filter(|m| !m.is_empty())
                            .unwrap_or_else(|| format!("upstream answered HTTP {code}")),
                    );
                } else if let Some(e) = api_error {
                    s.status = SpanStatus::Failed;
                    s.error_type = Some(e.kind.unwrap_or_else(|| "api_error".into()));
                    s.error_message = Some(e.message);
                } else if o.stream_incomplete {
                    s.status = SpanStatus::Failed;
                    s.error_type = Some("stream_incomplete".into());
                    s.error_message = Some("stream ended without a finish reason or [DONE]".into());
                } else {
                    s.status = SpanStatus::Completed;
                }
            }
        }

        // Response fields and tokens (none are billed for HTTP errors).
        let mut estimate_output = None;
        let mut estimate_input = None;
        let mut expired = Vec::new();
        if let Some(r) = o.response {
            if let (Some(index), SpanStatus::Completed) = (&self.rec.index, s.status) {
                // Remember this turn for the next one, and its tool calls
                // until their results arrive.
                let turn = Turn {
                    trace_id: s.trace_id.clone(),
                    root_span_id: side
                        .stitched
                        .as_ref()
                        .map_or_else(|| s.span_id.clone(), |t| t.root_span_id.clone()),
                    conversation_id: s
                        .conversation_id
                        .clone()
                        .unwrap_or_else(|| s.trace_id.clone()),
                };
                let key = side
                    .chain
                    .zip(r.assistant_digest)
                    .map(|(c, d)| stitch::chain(c, d));
                let by_id = (self.endpoint == Endpoint::Responses)
                    .then_some(r.response_id.as_deref())
                    .flatten();
                if key.is_some() || by_id.is_some() {
                    expired.extend(index.register(key, by_id, turn));
                }
                let calls: Vec<PendingCall> = r
                    .tool_calls
                    .iter()
                    .filter(|c| !c.id.is_empty())
                    .map(|c| PendingCall {
                        call_id: c.id.clone(),
                        name: c.name.clone(),
                        arguments: c.arguments.clone(),
                        trace_id: s.trace_id.clone(),
                        parent_span_id: s.span_id.clone(),
                        conversation_id: s.conversation_id.clone(),
                        session_id: s.session_id.clone(),
                        user_id: s.user_id.clone(),
                        api_key_hash: s.api_key_hash.clone(),
                        provider: s.provider.clone(),
                        route: s.route.clone(),
                        asked_at_us: s.end_time_us,
                    })
                    .collect();
                if !calls.is_empty() {
                    expired.extend(index.add_calls(self.seed, calls));
                }
            }
            s.response_id = r.response_id;
            s.response_model = r.response_model;
            s.finish_reason = r.finish_reason;
            if http_error.is_none() {
                let u = r.usage;
                s.input_tokens = u.input;
                s.output_tokens = u.output;
                s.cached_input_tokens = u.cached_input;
                s.cache_write_tokens = u.cache_write;
                s.reasoning_tokens = u.reasoning;
                if s.output_tokens.is_none() {
                    estimate_output = r.output_text;
                }
                if s.input_tokens.is_none() && self.endpoint.operation_type() == "llm_call" {
                    estimate_input = side.body;
                }
            }
        }
        let mut span = std::mem::replace(s, Span::start(0));
        let now = span::now_us();
        for call in expired {
            let cancelled = tool_span(&self.rec, &call, now, SpanStatus::Cancelled, None);
            self.rec.sink.send(cancelled);
        }
        if estimate_output.is_none() && estimate_input.is_none() {
            price(&self.rec, &mut span);
            let secrets = std::mem::take(&mut self.secrets);
            self.rec.sink.send_redacting(span, secrets);
            return;
        }
        // Tokenizing is CPU work (and may load an encoder): off the path.
        let enc = tokens::encoding_for(span.model.as_deref());
        let endpoint = self.endpoint;
        let rec = Arc::clone(&self.rec);
        let secrets = std::mem::take(&mut self.secrets);
        self.rec.sink.send_after_redacting(span, secrets, move |s| {
            if let Some(counter) = estimate_output {
                s.output_tokens = Some(counter.total() as i64);
                s.tokens_estimated = true;
            }
            if let Some(n) =
                estimate_input.and_then(|b| providers::estimate_input(endpoint, &b, enc))
            {
                s.input_tokens = Some(n);
                s.tokens_estimated = true;
            }
            price(&rec, s);
        });
    }
}

/// The span of a tool call: from the response that asked for it to the
/// request that carried its result (`completed`), or to the moment the
/// index gave up waiting (`cancelled`).
fn tool_span(
    rec: &Recording,
    call: &PendingCall,
    end_us: i64,
    status: SpanStatus,
    result: Option<&str>,
) -> Span {
    let mut s = Span::start(call.asked_at_us);
    s.trace_id.clone_from(&call.trace_id);
    s.parent_span_id = Some(call.parent_span_id.clone());
    s.name = format!("execute_tool {}", call.name);
    s.operation_type = "tool_call".into();
    s.provider.clone_from(&call.provider);
    s.route.clone_from(&call.route);
    s.status = status;
    if status == SpanStatus::Cancelled {
        s.error_type = Some("tool_result_missing".into());
        s.error_message = Some("no request carried this tool call's result in time".into());
    }
    s.end_time_us = end_us.max(call.asked_at_us);
    s.duration_ms = (s.end_time_us - s.start_time_us) as f64 / 1000.0;
    s.conversation_id.clone_from(&call.conversation_id);
    s.session_id.clone_from(&call.session_id);
    s.user_id.clone_from(&call.user_id);
    s.api_key_hash.clone_from(&call.api_key_hash);
    s.properties = Some(
        serde_json::json!({"gen_ai.tool.call.id": call.call_id, "gen_ai.tool.name": call.name})
            .to_string(),
    );
    if rec.capture_bodies {
        let cap = |t: &str| capture_text(t.as_bytes(), t.len(), rec.max_capture_bytes);
        s.request_body = Some(cap(&call.arguments));
        s.response_body = result.map(cap);
    }
    s
}

/// Writes the tool calls whose results never came as `cancelled`: those
/// past the stitching TTL, or all of them (`all`, at shutdown).
pub fn expire_tool_calls(rec: &Recording, all: bool) -> usize {
    let Some(index) = &rec.index else { return 0 };
    let calls = if all {
        index.drain_calls()
    } else {
        index.sweep()
    };
    let now = span::now_us();
    let n = calls.len();
    for call in calls {
        rec.sink
            .send(tool_span(rec, &call, now, SpanStatus::Cancelled, None));
    }
    n
}

/// Fills `cost_usd` from the span's tokens, for billed calls (LLM calls and
/// embeddings; token counting, for one, is free).
fn price(rec: &Recording, s: &mut Span) {
    let billed = matches!(s.operation_type.as_str(), "llm_call" | "embedding");
    if !billed || (s.input_tokens.is_none() && s.output_tokens.is_none()) {
        return;
    }
    let tokens = crate::record::pricing::TokenCounts {
        input: s.input_tokens.unwrap_or(0),
        output: s.output_tokens.unwrap_or(0),
        cached_input: s.cached_input_tokens.unwrap_or(0),
        cache_write: s.cache_write_tokens.unwrap_or(0),
        reasoning: s.reasoning_tokens.unwrap_or(0),
    };
    s.cost_usd = rec
        .pricing
        .price(s.response_model.as_deref(), s.model.as_deref(), &tokens);
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if !self.done {
            self.finish(Outcome::simple(None, End::Cancelled));
        }
    }
}

impl Outcome {
    fn simple(http_status: Option<u16>, end: End) -> Outcome {
        Outcome {
            ended: Instant::now(),
            http_status,
            end,
            proxy_error: None,
            response: None,
            ttft: None,
            response_body: None,
            stream_incomplete: false,
        }
    }
}

// === impl ResponseObserver ===

enum Mode {
    /// A streamed chat completion.
    Sse(Box<EventStream>),
    /// A JSON body (or an error body) parsed whole at the end, if it fits.
    Json { buf: Vec<u8>, seen: usize },
    /// Timing and status only.
    Skip,
}

struct Capture {
    buf: Vec<u8>,
    seen: usize,
    max: usize,
}

impl Capture {
    fn new(max: usize) -> Capture {
        Capture {
            buf: Vec::new(),
            seen: 0,
            max,
        }
    }
}

/// Tees the upstream's response body; finishes the exchange at its end.
pub struct ResponseObserver {
    exchange: Exchange,
    status: u16,
    decoder: Decoder,
    mode: Mode,
    capture: Option<Capture>,
    max_parse: usize,
    enc: Encoding,
    ttft: Option<Duration>,
}

impl Observer for ResponseObserver {
    fn on_data(&mut self, data: &Bytes) {
        let started = self.exchange.started;
        let (mode, capture, ttft, max_parse) = (
            &mut self.mode,
            &mut self.capture,
            &mut self.ttft,
            self.max_parse,
        );
        if matches!(mode, Mode::Skip) && capture.is_none() {
            return;
        }
        self.decoder.feed(data, &mut |piece| {
            if let Some(c) = capture.as_mut() {
                c.seen += piece.len();
                let room = c.max.saturating_sub(c.buf.len());
                c.buf.extend_from_slice(&piece[..piece.len().min(room)]);
            }
            match mode {
                Mode::Sse(stream) => {
                    if stream.feed(piece) && ttft.is_none() {
                        *ttft = Some(started.elapsed());
                    }
                }
                Mode::Json { buf, seen } => {
                    *seen += piece.len();
                    let room = max_parse.saturating_sub(buf.len());
                    buf.extend_from_slice(&piece[..piece.len().min(room)]);
                }
                Mode::Skip => {}
            }
        });
    }

    fn on_end(self, end: End) {
        let ended = Instant::now();
        if !self
            .exchange
            .rec
            .finisher
            .as_ref()
            .is_some_and(Finisher::busy)
        {
            return self.end_at(end, ended);
        }
        let rec = Arc::clone(&self.exchange.rec);
        if let Some(f) = &rec.finisher {
            f.run(Box::new(move || self.end_at(end, ended)));
        }
    }
}

impl ResponseObserver {
    /// Parses what the response said and finishes the exchange (on the
    /// finishing thread when there is one).
    fn end_at(mut self, end: End, ended: Instant) {
        let ok = (200..300).contains(&self.status);
        let mut stream_incomplete = false;
        let response = match std::mem::replace(&mut self.mode, Mode::Skip) {
            Mode::Sse(stream) => {
                let done = stream.saw_end();
                let facts = stream.finish();
                stream_incomplete = end == End::Complete
                    && !done
                    && facts.finish_reason.is_none()
                    && self.decoder.error().is_none();
                Some(facts)
            }
            Mode::Json { buf, seen } if seen <= self.max_parse && end == End::Complete => {
                if ok {
                    providers::parse_response(self.exchange.endpoint, &buf, self.enc)
                } else {
                    providers::parse_error_body(&buf).map(|error| ResponseFacts {
                        error: Some(error),
                        ..ResponseFacts::default()
                    })
                }
            }
            _ => None,
        };
        let response_body = self
            .capture
            .take()
            .map(|c| capture_text(&c.buf, c.seen, c.max));
        let outcome = Outcome {
            ended,
            http_status: Some(self.status),
            end,
            proxy_error: None,
            response,
            ttft: self.ttft,
            response_body,
            stream_incomplete,
        };
        self.exchange.finish_now(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_hash_is_short_salted_and_stable() {
        let rec = Recording {
            sink: SpanSink::new(10, 1 << 20),
            capture_bodies: true,
            max_capture_bytes: 10,
            max_parse_bytes: 100,
            api_key_salt: "salt".into(),
            pricing: crate::record::pricing::Pricing::new(
                crate::record::pricing::PriceTable::default(),
            ),
            exact_stream_usage: false,
            context_stats: Default::default(),
            index: None,
            live: Default::default(),
            drain_over: Default::default(),
            finisher: None,
        };
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer sk-secret".parse().unwrap());
        let a = rec.api_key_hash(&h).unwrap();
        assert_eq!(a.len(), 16);
        assert!(!a.contains("secret"));
        let mut h2 = HeaderMap::new();
        h2.insert("x-api-key", "sk-secret".parse().unwrap());
        assert_eq!(rec.api_key_hash(&h2).unwrap(), a);
        let other = Recording {
            api_key_salt: "pepper".into(),
            ..rec
        };
        assert_ne!(other.api_key_hash(&h).unwrap(), a);
        assert!(other.api_key_hash(&HeaderMap::new()).is_none());
    }

    #[tokio::test]
    async fn the_finisher_runs_jobs_in_the_order_they_came() {
        let f = Finisher::start().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        for i in 0..1000 {
            let seen = Arc::clone(&seen);
            f.run(Box::new(move || {
                if i % 100 == 0 {
                    // A slow job holds the ones behind it back.
                    std::thread::sleep(Duration::from_millis(2));
                }
                seen.lock().unwrap().push(i);
            }));
        }
        f.settle(Duration::from_secs(10)).await;
        assert_eq!(f.pending(), 0);
        assert_eq!(*seen.lock().unwrap(), (0..1000).collect::<Vec<_>>());
        // A job that panics loses itself, not the thread.
        f.run(Box::new(|| panic!("a bug in one finish")));
        let after = Arc::clone(&seen);
        f.run(Box::new(move || after.lock().unwrap().push(1000)));
        f.settle(Duration::from_secs(10)).await;
        assert_eq!(seen.lock().unwrap().last(), Some(&1000));
    }

    /// One chat exchange through both observers, as the proxy drives them.
    fn exchange(rec: &Arc<Recording>, messages: &str, reply: &str) {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer sk-test-key".parse().unwrap());
        let (exchange, mut req) = Exchange::start(
            Arc::clone(rec),
            Instant::now(),
            span::now_us(),
            Endpoint::Chat,
            "openai",
            "/v1",
            &http::Method::POST,
            "/v1/chat/completions",
            "/v1/chat/completions",
            &headers,
        );
        let body = format!(r#"{{"model":"gpt-4o-mini","messages":[{messages}]}}"#);
        req.on_data(&Bytes::from(body));
        req.on_end(End::Complete);
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/json".parse().unwrap());
        let mut resp = exchange.into_response_observer(200, &h);
        let answer = format!(
            r#"{{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini","choices":[{{"index":0,"message":{{"role":"assistant","content":"{reply}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}}}"#
        );
        resp.on_data(&Bytes::from(answer));
        resp.on_end(End::Complete);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_turn_is_stitched_to_a_reply_still_waiting_in_the_finish_queue() {
        let rec = Arc::new(Recording {
            sink: SpanSink::new(1000, 1 << 24),
            capture_bodies: false,
            max_capture_bytes: 0,
            max_parse_bytes: 1 << 20,
            api_key_salt: "salt".into(),
            pricing: crate::record::pricing::Pricing::new(
                crate::record::pricing::PriceTable::default(),
            ),
            exact_stream_usage: false,
            context_stats: Default::default(),
            index: Some(crate::record::stitch::Index::new(
                Duration::from_secs(60),
                1000,
                1000,
            )),
            live: Default::default(),
            drain_over: Default::default(),
            finisher: Some(Finisher::start().unwrap()),
        });
        let f = rec.finisher.as_ref().unwrap();
        // The finisher is busy: both exchanges below queue their finish.
        let (release, hold) = std::sync::mpsc::channel::<()>();
        f.run(Box::new(move || {
            let _ = hold.recv();
        }));
        let first = r#"{"role":"user","content":"Name a colour."}"#;
        exchange(&rec, first, "Teal.");
        // The client's next turn, sent once it had the reply, which is
        // still in the queue (not yet registered for stitching).
        let second = format!(
            r#"{first},{{"role":"assistant","content":"Teal."}},{{"role":"user","content":"Another?"}}"#
        );
        exchange(&rec, &second, "Plum.");
        assert!(
            rec.sink.take(10).is_empty(),
            "finished before the queue ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        release.send(()).unwrap();
        f.settle(Duration::from_secs(10)).await;
        let spans: Vec<Span> = rec.sink.take(10).into_iter().map(|(s, _)| s).collect();
        assert_eq!(spans.len(), 2);
        assert_eq!(
            spans[1].trace_id, spans[0].trace_id,
            "second turn not stitched"
        );
        assert_eq!(
            spans[1].parent_span_id.as_deref(),
            Some(spans[0].span_id.as_str())
        );
        // Each span's duration ends when its exchange ended, not when the
        // queue got to it (the queue was held for longer than both).
        assert!(spans.iter().all(|s| s.duration_ms < 50.0), "{spans:?}");
    }

    #[tokio::test]
    async fn a_full_finish_queue_runs_the_job_where_it_ended() {
        let f = Finisher::start().unwrap();
        let (hold, release) = std::sync::mpsc::channel::<()>();
        f.run(Box::new(move || {
            let _ = release.recv();
        }));
        let here = std::thread::current().id();
        let ran_on = Arc::new(Mutex::new(Vec::new()));
        for _ in 0..FINISH_QUEUE + 10 {
            let ran_on = Arc::clone(&ran_on);
            f.run(Box::new(move || {
                ran_on.lock().unwrap().push(std::thread::current().id())
            }));
        }
        // The queue filled behind the blocked job: the rest ran here (one
        // more if the blocked job had not yet left the queue).
        let inline = ran_on
            .lock()
            .unwrap()
            .iter()
            .filter(|t| **t == here)
            .count();
        assert!((10..=11).contains(&inline), "{inline} ran inline");
        hold.send(()).unwrap();
        f.settle(Duration::from_secs(10)).await;
        assert_eq!(ran_on.lock().unwrap().len(), FINISH_QUEUE + 10);
    }

    #[test]
    fn capture_marks_truncation() {
        assert_eq!(capture_text(b"hello", 5, 10), "hello");
        assert_eq!(capture_text(b"hello", 9, 3), "hel…[truncated 6 bytes]");
    }
}
