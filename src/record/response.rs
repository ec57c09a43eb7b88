//! The response side of an exchange: `ResponseObserver` owns the
//! `Exchange`, decodes the response copy, parses it as the format requires
//! (SSE events as they come, or a JSON body whole at the end, if it fits
//! `max_parse_bytes`), marks time to first token, captures the body, and at
//! the end of the stream hands the `Outcome` to the exchange's finish.
//!
//! Never changes, delays or fails a frame, and never awaits: under load
//! the end's parsing and finish are queued on the `Finisher`, in the order
//! the ends were seen.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderMap;

use crate::path::tee::{End, Observer};
use crate::record::decode::Decoder;
use crate::record::exchange::{Exchange, Outcome};
use crate::record::providers::{self, EventStream, ResponseFacts, StreamParser};
use crate::record::recording::{capture_text, MAX_DECODED_BYTES};
use crate::record::tokens::{self, Encoding};

/// Largest single SSE event the parser keeps (bigger ones are skipped).
const MAX_SSE_EVENT_BYTES: usize = 1 << 20;

impl Exchange {
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
                !self.injected_usage() && !f.is_some_and(|f| f.include_usage),
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
        if !self.exchange.rec.finisher_busy() {
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
