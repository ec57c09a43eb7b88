//! The `Exchange`: one request/response in flight, and the one span it
//! becomes.
//!
//! Owns the span from `start` (where the request observer is made and the
//! live registry learns of it) to its finish: placing it in a trace
//! (explicit context, else stitching), its status (see `status`), the
//! response's fields and tokens, remembering the turn and its tool calls
//! for stitching, pricing, and the hand-off to the queue (estimation and
//! pricing off the path via `SpanSink::send_after_redacting` when tokens
//! must be counted).
//!
//! An exchange is finished exactly once: by the response observer's end,
//! by `fail`, or by `Drop` (`cancelled`); under load on the `Finisher`'s
//! thread, in order (ARCHITECTURE.md, invariants 4 and 5). Nothing here
//! can fail the client's stream, and nothing here awaits.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderMap;

use crate::path::error::ProxyError;
use crate::path::tee::End;
use crate::record::context::Explicit;
use crate::record::providers::{self, Endpoint, ResponseFacts};
use crate::record::recording::Recording;
use crate::record::request::{RequestObserver, RequestSide};
use crate::record::span::{self, Span, SpanStatus};
use crate::record::status::{self, Ending};
use crate::record::stitch::{self, PendingCall, Turn};
use crate::record::tokens::{self, StreamCounter};
use crate::record::tool_calls::{pending_calls, tool_span};

/// One request/response in flight, and the span it becomes.
pub struct Exchange {
    pub(super) rec: Arc<Recording>,
    span: Span,
    pub(super) started: Instant,
    pub(super) endpoint: Endpoint,
    /// The model named by the path (Azure deployments), used when the body
    /// names none.
    path_model: Option<String>,
    pub(super) request: Arc<Mutex<RequestSide>>,
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
pub(super) struct Outcome {
    /// When the end was seen (the finish may run later).
    pub ended: Instant,
    pub http_status: Option<u16>,
    pub end: End,
    /// llmtap's own error (no response from upstream).
    pub proxy_error: Option<(String, String)>,
    pub response: Option<ResponseFacts>,
    pub ttft: Option<Duration>,
    pub response_body: Option<String>,
    pub stream_incomplete: bool,
}

/// Token counts left to estimate after the finish, off the path.
#[derive(Default)]
struct Estimate {
    /// The generated text seen, when the response reported no output count.
    output: Option<StreamCounter>,
    /// The (decoded) request body, when it reported no input count.
    input: Option<bytes::Bytes>,
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

    /// Finishes the exchange on the finishing thread (see
    /// [`Finisher`](crate::record::finisher::Finisher)), or here without
    /// one.
    fn finish(&mut self, o: Outcome) {
        if self.done {
            return;
        }
        if self.rec.finisher_busy() {
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

    /// Builds the span from what both sides saw and queues it (once).
    pub(super) fn finish_now(&mut self, o: Outcome) {
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

        let mut side = self.take_request_side();
        self.place(&side);
        self.describe(&mut side, o.response_body);
        // Status and error.
        let drain_over = matches!(o.end, End::Cancelled)
            && self
                .rec
                .drain_over
                .load(std::sync::atomic::Ordering::SeqCst);
        self.set_status(status::classify(&Ending {
            end: &o.end,
            proxy_error: o.proxy_error.as_ref(),
            drain_over,
            http_status: o.http_status,
            api_error: o.response.as_ref().and_then(|r| r.error.as_ref()),
            stream_incomplete: o.stream_incomplete,
        }));

        // Response fields and tokens (none are billed for HTTP errors).
        let mut estimate = Estimate::default();
        let mut expired = Vec::new();
        if let Some(r) = o.response {
            if let (Some(index), SpanStatus::Completed) = (&self.rec.index, self.span.status) {
                expired = self.remember(index, &side, &r);
            }
            let billed = o.http_status.filter(|&c| c >= 400).is_none();
            estimate = self.read_response(r, billed, side.body);
        }
        self.send(expired, estimate);
    }

    /// What the request observer left, with its deferred stitching (if
    /// any) resolved: done by its blocking task already, or here.
    fn take_request_side(&self) -> RequestSide {
        let mut side = self.request.lock().unwrap_or_else(|p| p.into_inner());
        let mut side = std::mem::take(&mut *side);
        if let Some(job) = side.deferred.take() {
            (side.stitched, side.chain) = job.resolve();
        }
        side
    }

    /// Where the span belongs and who it is for: the caller's traceparent,
    /// else the exchange this one continues, else the new trace it was born
    /// with; session, user and conversation from the headers first.
    fn place(&mut self, side: &RequestSide) {
        let s = &mut self.span;
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
    }

    /// What the request said (model, stream, the body's user), the captured
    /// bodies, and the span's name.
    fn describe(&mut self, side: &mut RequestSide, response_body: Option<String>) {
        let s = &mut self.span;
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
        s.request_body = side.captured.take();
        s.response_body = response_body;
        s.name = match (self.endpoint.operation_name(), &s.model) {
            (Some(op), Some(model)) => format!("{op} {model}"),
            (Some(op), None) => op.to_string(),
            (None, _) => format!("{} {}", s.method, s.path),
        };
    }

    /// Sets the status fields (see [`status::classify`]).
    fn set_status(&mut self, c: status::Classified) {
        let s = &mut self.span;
        s.status = c.status;
        s.error_type = c.error_type;
        s.error_message = c.error_message;
    }

    /// Remembers this completed turn for the next one, and its tool calls
    /// until their results arrive; returns the tool calls the index let go
    /// to make room (written `cancelled`).
    fn remember(
        &self,
        index: &stitch::Index,
        side: &RequestSide,
        r: &ResponseFacts,
    ) -> Vec<PendingCall> {
        let s = &self.span;
        let mut expired = Vec::new();
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
        let calls = pending_calls(s, r);
        if !calls.is_empty() {
            expired.extend(index.add_calls(self.seed, calls));
        }
        expired
    }

    /// The response's fields and, when `billed` (no HTTP error), its token
    /// counts; returns what is left to estimate.
    fn read_response(
        &mut self,
        r: ResponseFacts,
        billed: bool,
        request_body: Option<bytes::Bytes>,
    ) -> Estimate {
        let s = &mut self.span;
        s.response_id = r.response_id;
        s.response_model = r.response_model;
        s.finish_reason = r.finish_reason;
        let mut estimate = Estimate::default();
        if billed {
            s.set_usage(r.usage);
            if s.output_tokens.is_none() {
                estimate.output = r.output_text;
            }
            if s.input_tokens.is_none() && self.endpoint.operation_type() == "llm_call" {
                estimate.input = request_body;
            }
        }
        estimate
    }

    /// Queues the tool calls that expired and the span: priced here, or,
    /// when tokens must be estimated (CPU work that may load an encoder),
    /// estimated and priced off the path.
    fn send(&mut self, expired: Vec<PendingCall>, estimate: Estimate) {
        let span = std::mem::replace(&mut self.span, Span::start(0));
        let now = span::now_us();
        for call in expired {
            let cancelled = tool_span(&self.rec, &call, now, SpanStatus::Cancelled, None);
            self.rec.sink.send(cancelled);
        }
        let secrets = std::mem::take(&mut self.secrets);
        let Estimate { output, input } = estimate;
        if output.is_none() && input.is_none() {
            let mut span = span;
            self.rec.pricing.price_span(&mut span);
            self.rec.sink.send_redacting(span, secrets);
            return;
        }
        let enc = tokens::encoding_for(span.model.as_deref());
        let endpoint = self.endpoint;
        let rec = Arc::clone(&self.rec);
        self.rec.sink.send_after_redacting(span, secrets, move |s| {
            if let Some(counter) = output {
                s.output_tokens = Some(counter.total() as i64);
                s.tokens_estimated = true;
            }
            if let Some(n) = input.and_then(|b| providers::estimate_input(endpoint, &b, enc)) {
                s.input_tokens = Some(n);
                s.tokens_estimated = true;
            }
            rec.pricing.price_span(s);
        });
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if !self.done {
            self.finish(Outcome::simple(None, End::Cancelled));
        }
    }
}

impl Outcome {
    pub(super) fn simple(http_status: Option<u16>, end: End) -> Outcome {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::sink::SpanSink;
    use crate::path::tee::Observer;
    use crate::record::finisher::Finisher;
    use crate::record::pricing::{PriceTable, Pricing};
    use bytes::Bytes;

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
            pricing: Pricing::new(PriceTable::default()),
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
}
