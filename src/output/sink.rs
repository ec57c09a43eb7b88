//! Sink: the handle the recorder sends finished spans through, and the
//! one bounded queue behind it.
//!
//! The request path only calls [`SpanSink::send`]: a short, uncontended
//! mutex push into the recorder's [`Queue`] that never awaits. Memory is
//! bounded by a byte budget (`queue_max_bytes`); past it the oldest queued
//! spans are dropped and counted. `send` is also where `sample_rate` is
//! applied (from the trace id, so a trace is kept or dropped whole; metrics
//! have already counted the span). A kept span waits here with the
//! request's credentials until the batcher's fan-out (`fanout`) redacts it
//! once and hands the same `Arc<Span>` to the store writer's queue
//! (`batcher`) and to the OTLP exporter's: a slow collector never slows the
//! store's writer, nor the other way round.
//!
//! Must never: block the request path, or let a span reach an output
//! before it is redacted.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use crate::output::fanout::run_batcher;
use crate::output::queue::{Budget, Queue, Throttle, Weigh};
use crate::output::redact::Redactor;
use crate::record::span::Span;

/// Counters, readable at any time (metrics, health, tests).
#[derive(Debug, Default)]
pub struct SinkStats {
    pub enqueued: AtomicU64,
    pub written: AtomicU64,
    pub dropped: AtomicU64,
    pub store_errors: AtomicU64,
    pub batches: AtomicU64,
    /// True from a failed batch write until the next successful one
    /// (`/readyz` reports the store down: a `SELECT 1` still succeeds
    /// while writes are locked out).
    pub store_failing: AtomicBool,
    /// Spans not recorded because `sample_rate` left their trace out.
    pub sampled_out: AtomicU64,
}

/// Where a kept span goes, besides metrics.
#[derive(Clone)]
pub struct Outputs {
    /// Keep spans for the store writer (a store exists).
    pub store: bool,
    /// The OTLP exporter, when configured.
    pub exporter: Option<crate::output::otlp::Exporter>,
    /// `tracing.sample_rate`.
    pub sample_rate: f64,
}

impl Default for Outputs {
    /// No store, no exporter, every trace kept.
    fn default() -> Self {
        Outputs {
            store: false,
            exporter: None,
            sample_rate: 1.0,
        }
    }
}

/// Head sampling decided from the trace id alone, like OpenTelemetry's
/// `TraceIdRatioBased`: the id's low 8 bytes (shifted to 63 bits) below
/// `rate × 2^63` keep the trace. Every span of a trace decides the same.
pub fn sampled(trace_id: &str, rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    if rate <= 0.0 {
        return false;
    }
    let low = trace_id
        .get(trace_id.len().saturating_sub(16)..)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0);
    let bound = (rate * (1u64 << 63) as f64) as u64;
    (low >> 1) < bound
}

/// A queued span not yet redacted, and the request's own credentials
/// (header values), removed wherever they occur before any output sees the
/// span. They live only in memory, and only until the batch is redacted.
pub(crate) struct Pending {
    pub(crate) span: Span,
    pub(crate) literals: Vec<String>,
}

impl Weigh for Pending {
    fn weight(&self) -> usize {
        self.span.approx_bytes() + self.literals.iter().map(String::len).sum::<usize>()
    }
}

pub(crate) struct Shared {
    /// The one queue `send` pushes into (spans waiting for redaction).
    pub(crate) queue: Queue<Pending>,
    /// Redacted spans waiting for the store writer (when a store exists),
    /// older than any in `queue`, with which it shares the byte budget.
    pub(crate) writer: Option<Queue<Arc<Span>>>,
    /// Every span sent is counted here too (Prometheus `/metrics`).
    metrics: Option<Arc<crate::output::metrics::Metrics>>,
    /// Spans handed to `send_after` whose work has not finished.
    pub(crate) deferred: AtomicUsize,
    pub(crate) batch_size: usize,
    pub(crate) stats: SinkStats,
    dropping: Throttle,
    /// Secrets removed from each batch before any output sees it.
    pub(crate) redactor: OnceLock<Redactor>,
    pub(crate) outputs: Outputs,
}

/// The handle the request path holds. Cloning is cheap.
#[derive(Clone)]
pub struct SpanSink {
    pub(crate) shared: Arc<Shared>,
}

impl SpanSink {
    pub fn new(batch_size: usize, max_bytes: usize) -> SpanSink {
        SpanSink::with_metrics(batch_size, max_bytes, None)
    }

    /// A sink that also records every span in `metrics`.
    pub fn with_metrics(
        batch_size: usize,
        max_bytes: usize,
        metrics: Option<Arc<crate::output::metrics::Metrics>>,
    ) -> SpanSink {
        SpanSink::with_outputs(
            batch_size,
            max_bytes,
            metrics,
            Outputs {
                store: true,
                exporter: None,
                sample_rate: 1.0,
            },
        )
    }

    /// A sink delivering to `outputs` (store writer, exporter, sampling).
    pub fn with_outputs(
        batch_size: usize,
        max_bytes: usize,
        metrics: Option<Arc<crate::output::metrics::Metrics>>,
        outputs: Outputs,
    ) -> SpanSink {
        // One budget for the spans of both stages (`queue_max_bytes`).
        let budget = Budget::new(max_bytes);
        SpanSink {
            shared: Arc::new(Shared {
                queue: Queue::sharing(usize::MAX, Arc::clone(&budget), batch_size),
                // Woken by every hand-off: the fan-out has batched already.
                writer: outputs.store.then(|| Queue::sharing(usize::MAX, budget, 1)),
                metrics,
                deferred: AtomicUsize::new(0),
                batch_size,
                stats: SinkStats::default(),
                dropping: Throttle::default(),
                redactor: OnceLock::new(),
                outputs,
            }),
        }
    }

    /// Sets the patterns every span is redacted with (once, in the
    /// batcher's fan-out) before any output sees it. Only the first call
    /// counts.
    pub fn set_redactor(&self, redactor: Redactor) {
        let _ = self.shared.redactor.set(redactor);
    }

    /// Queues a finished span. Never waits on the store.
    pub fn send(&self, span: Span) {
        self.send_redacting(span, Vec::new());
    }

    /// Queues a finished span whose text fields must not contain any of
    /// `literals` (the request's credentials): the fan-out replaces them,
    /// with the configured patterns, before any output sees the span.
    pub fn send_redacting(&self, span: Span, literals: Vec<String>) {
        let sh = &self.shared;
        if let Some(m) = &sh.metrics {
            m.record(&span);
        }
        let out = &sh.outputs;
        if !sampled(&span.trace_id, out.sample_rate) {
            sh.stats.sampled_out.fetch_add(1, Ordering::Relaxed);
            return;
        }
        sh.stats.enqueued.fetch_add(1, Ordering::Relaxed);
        if !out.store && out.exporter.is_none() {
            return;
        }
        // Past the budget the oldest go first: the writer's, then this
        // queue's.
        let dropped = sh
            .queue
            .push_after(Pending { span, literals }, sh.writer.as_ref());
        self.count_dropped(dropped);
    }

    /// Queues `span` after `work` has run on it on a blocking thread (for
    /// CPU-heavy finishing such as token estimation, kept off the request
    /// path). The batcher does not exit while such work is pending.
    pub fn send_after(&self, span: Span, work: impl FnOnce(&mut Span) + Send + 'static) {
        self.send_after_redacting(span, Vec::new(), work);
    }

    /// [`send_after`](Self::send_after) with the request's credentials (see
    /// [`send_redacting`](Self::send_redacting)).
    pub fn send_after_redacting(
        &self,
        span: Span,
        literals: Vec<String>,
        work: impl FnOnce(&mut Span) + Send + 'static,
    ) {
        self.shared.deferred.fetch_add(1, Ordering::SeqCst);
        let sink = self.clone();
        let job = move || {
            let mut span = span;
            work(&mut span);
            sink.send_redacting(span, literals);
            sink.shared.deferred.fetch_sub(1, Ordering::SeqCst);
            sink.shared.queue.wake();
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(job);
            }
            Err(_) => job(),
        }
    }

    /// Counts spans a queue dropped over its budget, with a rate-limited
    /// warning.
    pub(crate) fn count_dropped(&self, dropped: u64) {
        if dropped == 0 {
            return;
        }
        let sh = &self.shared;
        sh.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
        if sh.dropping.ready(Duration::from_secs(10)) {
            tracing::warn!(
                dropped_total = sh.stats.dropped.load(Ordering::Relaxed),
                budget_bytes = sh.queue.budget().max_bytes(),
                "Span queue over its memory budget; dropping the oldest spans"
            );
        }
    }

    /// Spans and bytes waiting to be written (or, with `store = "none"`,
    /// to be redacted and handed to the exporter).
    pub fn depth(&self) -> (usize, usize) {
        let sh = &self.shared;
        // The writer's first: a span the fan-out moves between the two
        // reads is then counted once, not twice.
        let at_writer = sh.writer.as_ref().map_or(0, Queue::len);
        (at_writer + sh.queue.len(), sh.queue.budget().used())
    }

    pub fn stats(&self) -> &SinkStats {
        &self.shared.stats
    }

    /// No more spans are expected: the batcher drains and exits.
    pub fn close(&self) {
        self.shared.queue.close();
    }

    /// True once `close` was called.
    pub fn is_closed(&self) -> bool {
        self.shared.queue.is_closed()
    }

    /// Takes up to `max` spans not yet redacted, with their credentials.
    #[cfg(test)]
    pub(crate) fn take(&self, max: usize) -> Vec<(Span, Vec<String>)> {
        self.shared
            .queue
            .take(max)
            .into_iter()
            .map(|p| (p.span, p.literals))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn span(body: usize) -> Span {
        let mut s = Span::start(0);
        s.request_body = Some("x".repeat(body));
        s
    }

    #[test]
    fn budget_drops_oldest_and_counts() {
        let one = span(1000).approx_bytes();
        let sink = SpanSink::new(10, one * 3);
        let mut ids = Vec::new();
        for _ in 0..5 {
            let s = span(1000);
            ids.push(s.span_id.clone());
            sink.send(s);
        }
        assert_eq!(sink.depth(), (3, one * 3));
        assert_eq!(sink.stats().dropped.load(Ordering::Relaxed), 2);
        let kept: Vec<String> = sink.take(10).into_iter().map(|s| s.0.span_id).collect();
        assert_eq!(kept, ids[2..].to_vec());
        assert_eq!(sink.depth(), (0, 0));
    }

    #[tokio::test]
    async fn send_after_runs_the_work_then_queues() {
        let sink = SpanSink::new(10, 1 << 20);
        let mut s = span(1);
        s.output_tokens = None;
        sink.send_after(s, |s| s.output_tokens = Some(42));
        let deadline = Instant::now() + Duration::from_secs(5);
        while sink.depth().0 == 0 {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(sink.take(1)[0].0.output_tokens, Some(42));
        assert_eq!(sink.shared.deferred.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn sampling_follows_the_trace_id() {
        assert!(sampled("0af7651916cd43dd0000000000000000", 0.01));
        assert!(!sampled("0af7651916cd43ddffffffffffffffff", 0.99));
        assert!(sampled("0af7651916cd43ddffffffffffffffff", 1.0));
        assert!(!sampled("0af7651916cd43dd0000000000000000", 0.0));
        // Half of random ids, within a wide margin.
        let kept = (0..10_000)
            .filter(|_| sampled(&crate::record::span::new_trace_id(), 0.5))
            .count();
        assert!((4_500..=5_500).contains(&kept), "{kept}");
    }

    #[test]
    fn sampled_out_spans_are_counted_not_queued() {
        let sink = SpanSink::with_outputs(
            10,
            1 << 20,
            None,
            Outputs {
                store: true,
                exporter: None,
                sample_rate: 0.5,
            },
        );
        let mut kept = 0;
        for _ in 0..200 {
            let s = span(1);
            kept += usize::from(sampled(&s.trace_id, 0.5));
            sink.send(s);
        }
        assert_eq!(sink.depth().0, kept);
        assert_eq!(
            sink.stats().sampled_out.load(Ordering::Relaxed) as usize,
            200 - kept
        );
        let none = SpanSink::with_outputs(10, 1 << 20, None, Outputs::default());
        none.send(span(1));
        assert_eq!(none.depth().0, 0, "no store: nothing queued for a batcher");
    }
}
