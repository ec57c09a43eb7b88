//! The request side of an exchange: `RequestObserver` tees the client's
//! body (decoded, bounded by `max_parse_bytes` / `max_capture_bytes`) and,
//! at its end, records what the request says in the `RequestSide` it
//! shares with the `Exchange`; zero-code stitching of that request, inline
//! for small bodies, deferred (`DeferredStitch`) for large ones or while
//! the finisher is busy.
//!
//! Never fails or delays the client's upload, and never awaits: a deferred
//! stitch runs on a blocking thread or in the exchange's own finish,
//! whichever comes first (ARCHITECTURE.md, invariant 5).

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::path::tee::{End, Observer};
use crate::record::decode::Decoder;
use crate::record::providers::{self, Endpoint, RequestFacts};
use crate::record::recording::{capture_text, Recording, MAX_DECODED_BYTES};
use crate::record::span::SpanStatus;
use crate::record::stitch::Turn;
use crate::record::tool_calls::tool_span;

// === impl RequestSide ===

/// What the request observer learned, shared with the exchange.
#[derive(Default)]
pub struct RequestSide {
    pub(super) facts: Option<RequestFacts>,
    /// The (decoded) body, kept only for token estimation.
    pub(super) body: Option<Bytes>,
    pub(super) captured: Option<String>,
    pub(super) end: Option<End>,
    /// The earlier exchange this request continues (zero-code stitching).
    pub(super) stitched: Option<Turn>,
    /// Chain value of the request's whole history (the key of this
    /// exchange, with the reply appended, for the next turn).
    pub(super) chain: Option<u64>,
    /// Stitching of a large request, running off the request path; its
    /// result replaces `stitched` and `chain` when the exchange finishes.
    pub(super) deferred: Option<Arc<DeferredStitch>>,
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
pub(super) struct DeferredStitch {
    state: Mutex<Stitching>,
}

enum Stitching {
    Pending(StitchInput),
    Done(Option<Turn>, Option<u64>),
}

impl DeferredStitch {
    pub(super) fn resolve(&self) -> (Option<Turn>, Option<u64>) {
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
    pub(super) span_id: String,
}

impl RequestObserver {
    pub(super) fn new(
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
                _ if self.rec.finisher_busy() => {
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
