//! Sink: the bounded span queue and the background batcher that drains it
//! into the store.
//!
//! The request path only calls [`SpanSink::send`]: a short, uncontended
//! mutex push that never awaits. Memory is bounded by a byte budget; past it
//! the oldest queued spans are dropped and counted. The batcher is one loop:
//! wake on size (`batch_size` queued) or time (`batch_interval`), take
//! everything queued, write it in one transaction of multi-row inserts, and
//! on a store error put the spans back (oldest first, still under the
//! budget) and retry with backoff. At shutdown it drains until the queue is
//! closed and empty.
//!
//! `send` is also where `sample_rate` is applied (from the trace id, so a
//! trace is kept or dropped whole; metrics have already counted the span)
//! and where kept spans are handed to the OTLP exporter's own queue
//! (`otlp::Exporter::offer`, another short push, with the request's
//! credentials: the exporter redacts like the batcher): a slow collector
//! never slows the store's writer, nor the other way round. With
//! `store = "none"` there is no batcher and spans go to the exporter only.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::output::store::Store;
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

/// Where `send` delivers a kept span, besides metrics.
#[derive(Clone)]
pub struct Outputs {
    /// Keep spans for the batcher (a store exists).
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

/// A queued span: its size, and the request's own credentials (header
/// values), removed wherever they occur before the span is written. They
/// live only in memory, and only until the batch is redacted.
struct Entry {
    span: Span,
    size: usize,
    literals: Vec<String>,
}

#[derive(Default)]
struct Inner {
    spans: VecDeque<Entry>,
    bytes: usize,
}

struct Queue {
    inner: Mutex<Inner>,
    /// Every span sent is counted here too (Prometheus `/metrics`).
    metrics: Option<Arc<crate::output::metrics::Metrics>>,
    notify: Notify,
    closed: AtomicBool,
    /// Spans handed to `send_after` whose work has not finished.
    deferred: std::sync::atomic::AtomicUsize,
    batch_size: usize,
    max_bytes: usize,
    stats: SinkStats,
    last_drop_warning: Mutex<Option<Instant>>,
    /// Secrets removed from each batch before it is written (`redact`).
    redactor: std::sync::OnceLock<crate::output::redact::Redactor>,
    outputs: Outputs,
}

/// The handle the request path holds. Cloning is cheap.
#[derive(Clone)]
pub struct SpanSink {
    queue: Arc<Queue>,
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

    /// A sink delivering to `outputs` (store queue, exporter, sampling).
    pub fn with_outputs(
        batch_size: usize,
        max_bytes: usize,
        metrics: Option<Arc<crate::output::metrics::Metrics>>,
        outputs: Outputs,
    ) -> SpanSink {
        SpanSink {
            queue: Arc::new(Queue {
                inner: Mutex::new(Inner::default()),
                metrics,
                notify: Notify::new(),
                closed: AtomicBool::new(false),
                deferred: std::sync::atomic::AtomicUsize::new(0),
                batch_size,
                max_bytes,
                stats: SinkStats::default(),
                last_drop_warning: Mutex::new(None),
                redactor: std::sync::OnceLock::new(),
                outputs,
            }),
        }
    }

    /// Sets the patterns the batcher redacts every span with before it is
    /// written. Only the first call counts.
    pub fn set_redactor(&self, redactor: crate::output::redact::Redactor) {
        let _ = self.queue.redactor.set(redactor);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave `Inner` inconsistent
        // (every update is a push/pop plus a counter), so poisoning is ignored.
        self.queue.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a finished span. Never waits on the store.
    pub fn send(&self, span: Span) {
        self.send_redacting(span, Vec::new());
    }

    /// Queues a finished span whose text fields must not contain any of
    /// `literals` (the request's credentials): the batcher replaces them,
    /// with the configured patterns, before writing.
    pub fn send_redacting(&self, span: Span, literals: Vec<String>) {
        let q = &self.queue;
        if let Some(m) = &q.metrics {
            m.record(&span);
        }
        let out = &q.outputs;
        if !sampled(&span.trace_id, out.sample_rate) {
            q.stats.sampled_out.fetch_add(1, Ordering::Relaxed);
            return;
        }
        q.stats.enqueued.fetch_add(1, Ordering::Relaxed);
        match (&out.exporter, out.store) {
            (Some(e), true) => e.offer(span.clone(), literals.clone()),
            (Some(e), false) => return e.offer(span, literals),
            (None, true) => {}
            (None, false) => return,
        }
        let size = span.approx_bytes() + literals.iter().map(String::len).sum::<usize>();
        let (len, dropped) = {
            let mut inner = self.lock();
            inner.spans.push_back(Entry {
                span,
                size,
                literals,
            });
            inner.bytes += size;
            let dropped = evict_over_budget(&mut inner, q.max_bytes);
            (inner.spans.len(), dropped)
        };
        if dropped > 0 {
            q.stats.dropped.fetch_add(dropped, Ordering::Relaxed);
            self.warn_dropped();
        }
        if len >= q.batch_size {
            q.notify.notify_one();
        }
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
        self.queue.deferred.fetch_add(1, Ordering::SeqCst);
        let sink = self.clone();
        let job = move || {
            let mut span = span;
            work(&mut span);
            sink.send_redacting(span, literals);
            sink.queue.deferred.fetch_sub(1, Ordering::SeqCst);
            sink.queue.notify.notify_one();
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(job);
            }
            Err(_) => job(),
        }
    }

    fn warn_dropped(&self) {
        let mut last = self
            .queue
            .last_drop_warning
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
            *last = Some(Instant::now());
            tracing::warn!(
                dropped_total = self.queue.stats.dropped.load(Ordering::Relaxed),
                budget_bytes = self.queue.max_bytes,
                "Span queue over its memory budget; dropping the oldest spans"
            );
        }
    }

    /// Spans and bytes waiting.
    pub fn depth(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.spans.len(), inner.bytes)
    }

    pub fn stats(&self) -> &SinkStats {
        &self.queue.stats
    }

    /// No more spans are expected: the batcher drains and exits.
    pub fn close(&self) {
        self.queue.closed.store(true, Ordering::SeqCst);
        self.queue.notify.notify_one();
    }

    /// Waits (bounded by `deadline`) for `send_after` work still running;
    /// used at shutdown when there is no batcher to wait for it.
    pub async fn settle(&self, deadline: Duration) {
        let end = Instant::now() + deadline;
        while self.queue.deferred.load(Ordering::SeqCst) > 0 && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// True once `close` was called.
    pub fn is_closed(&self) -> bool {
        self.queue.closed.load(Ordering::SeqCst)
    }

    pub(crate) fn take(&self, max: usize) -> Vec<(Span, Vec<String>)> {
        let mut inner = self.lock();
        let n = inner.spans.len().min(max);
        let mut freed = 0;
        let out: Vec<(Span, Vec<String>)> = inner
            .spans
            .drain(..n)
            .map(|e| {
                freed += e.size;
                (e.span, e.literals)
            })
            .collect();
        inner.bytes -= freed;
        out
    }

    /// Puts spans that failed to write back at the front, oldest first.
    fn requeue(&self, spans: Vec<Span>) {
        let dropped = {
            let mut inner = self.lock();
            for span in spans.into_iter().rev() {
                let size = span.approx_bytes();
                inner.bytes += size;
                inner.spans.push_front(Entry {
                    span,
                    size,
                    literals: Vec::new(),
                });
            }
            evict_over_budget(&mut inner, self.queue.max_bytes)
        };
        if dropped > 0 {
            self.queue
                .stats
                .dropped
                .fetch_add(dropped, Ordering::Relaxed);
            self.warn_dropped();
        }
    }
}

fn evict_over_budget(inner: &mut Inner, max_bytes: usize) -> u64 {
    let mut dropped = 0;
    while inner.bytes > max_bytes {
        match inner.spans.pop_front() {
            Some(e) => {
                inner.bytes -= e.size;
                dropped += 1;
            }
            None => break,
        }
    }
    dropped
}

/// Most spans written in one transaction.
const MAX_SPANS_PER_TRANSACTION: usize = 5_000;
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Runs the batcher until the sink is closed and empty, or until `deadline`
/// (set once the sink closes) passes while the store keeps failing.
///
/// Commits are at least `min_gap` apart: under load the batches grow
/// instead of the commits multiplying (measured here: 10 spans per
/// transaction write ~10k spans/s with the writer using a whole core,
/// 1,000 per transaction ~55k/s).
pub async fn run_batcher(
    sink: SpanSink,
    store: Store,
    interval: Duration,
    min_gap: Duration,
    exit_deadline: Duration,
) {
    let mut backoff = BACKOFF_START;
    let mut closed_at: Option<Instant> = None;
    let mut last_commit: Option<Instant> = None;
    loop {
        let closed = sink.is_closed();
        if closed && closed_at.is_none() {
            closed_at = Some(Instant::now());
        }
        let (len, _) = sink.depth();
        if len == 0 {
            if closed && sink.queue.deferred.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::select! {
                _ = sink.queue.notify.notified() => {}
                _ = tokio::time::sleep(interval) => {}
            }
            continue;
        }
        if len < sink.queue.batch_size && !closed {
            // Not a full batch yet: wait for more or for the interval.
            tokio::select! {
                _ = sink.queue.notify.notified() => {}
                _ = tokio::time::sleep(interval) => {}
            }
        }
        if !closed {
            if let Some(wait) = last_commit.and_then(|t| min_gap.checked_sub(t.elapsed())) {
                tokio::time::sleep(wait).await;
            }
        }
        let batch = sink.take(MAX_SPANS_PER_TRANSACTION);
        if batch.is_empty() {
            continue;
        }
        let batch = redact_batch(&sink, batch).await;
        if batch.is_empty() {
            continue;
        }
        last_commit = Some(Instant::now());
        match store.write_spans(&batch).await {
            Ok(()) => {
                backoff = BACKOFF_START;
                let stats = sink.stats();
                if stats.store_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(spans = batch.len(), "Span store writable again");
                }
                stats
                    .written
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                stats.batches.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(spans = batch.len(), "Wrote span batch");
            }
            Err(error) => {
                sink.stats().store_errors.fetch_add(1, Ordering::Relaxed);
                sink.stats().store_failing.store(true, Ordering::Relaxed);
                let n = batch.len();
                if closed_at.is_some_and(|t| t.elapsed() >= exit_deadline) {
                    let (left, _) = sink.depth();
                    let lost = (n + left) as u64;
                    sink.stats().dropped.fetch_add(lost, Ordering::Relaxed);
                    tracing::error!(%error, lost, "Store still failing at shutdown deadline; spans lost");
                    return;
                }
                tracing::warn!(%error, spans = n, retry_in_ms = backoff.as_millis() as u64, "Span batch write failed; will retry");
                sink.requeue(batch);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Redacts a batch on a blocking thread (regex work stays off the async
/// workers that serve traffic).
async fn redact_batch(sink: &SpanSink, batch: Vec<(Span, Vec<String>)>) -> Vec<Span> {
    let no_patterns = sink.queue.redactor.get().is_none_or(|r| r.is_empty());
    if no_patterns && batch.iter().all(|(_, l)| l.is_empty()) {
        return batch.into_iter().map(|(s, _)| s).collect();
    }
    let n = batch.len() as u64;
    let queue = Arc::clone(&sink.queue);
    let job = move || {
        let none = crate::output::redact::Redactor::default();
        let r = queue.redactor.get().unwrap_or(&none);
        batch
            .into_iter()
            .map(|(mut span, literals)| {
                crate::output::redact::redact_literals(&mut span, &literals);
                r.redact_span(&mut span);
                span
            })
            .collect::<Vec<Span>>()
    };
    match tokio::task::spawn_blocking(job).await {
        Ok(batch) => batch,
        Err(error) => {
            // Only a panic inside the regex engine gets here; the spans are
            // lost rather than stored unredacted.
            sink.stats().dropped.fetch_add(n, Ordering::Relaxed);
            tracing::error!(%error, spans = n, "Redaction failed; spans dropped");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(sink.queue.deferred.load(Ordering::SeqCst), 0);
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

    #[test]
    fn requeue_keeps_order_and_budget() {
        let one = span(10).approx_bytes();
        let sink = SpanSink::new(10, one * 4);
        let a: Vec<Span> = (0..3).map(|_| span(10)).collect();
        let ids: Vec<String> = a.iter().map(|s| s.span_id.clone()).collect();
        for s in a {
            sink.send(s);
        }
        let taken = sink.take(2).into_iter().map(|s| s.0).collect();
        let newer = span(10);
        let newer_id = newer.span_id.clone();
        sink.send(newer);
        sink.requeue(taken);
        let order: Vec<String> = sink.take(10).into_iter().map(|s| s.0.span_id).collect();
        assert_eq!(
            order,
            vec![ids[0].clone(), ids[1].clone(), ids[2].clone(), newer_id]
        );
    }
}
