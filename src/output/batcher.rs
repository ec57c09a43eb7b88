//! The store writer: the batcher's second stage, draining the queue of
//! redacted spans the fan-out fills into the store.
//!
//! One loop: wake when the fan-out hands spans over, take everything queued
//! (up to [`MAX_BATCH`]), write it in one transaction, and on a store error
//! put the spans back at the front (oldest first, still under the budget,
//! the oldest dropped and counted past it) and retry with backoff;
//! `store_failing` says so to `/readyz` until a write succeeds. Commits are
//! at least `min_gap` apart. At shutdown it drains until its queue is
//! closed (by the fan-out, once that has drained) and empty, or until
//! `exit_deadline` after the close passes while the store keeps failing.
//!
//! Must never: write a span the fan-out has not redacted (it only sees the
//! fan-out's `Arc<Span>`s), or hold the exporter back (it has its own queue).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::output::fanout::MAX_BATCH;
use crate::output::sink::SpanSink;
use crate::output::store::Store;

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

pub(crate) async fn run(sink: SpanSink, store: Store, min_gap: Duration, exit_deadline: Duration) {
    let Some(queue) = &sink.shared.writer else {
        return;
    };
    let stats = sink.stats();
    let mut backoff = BACKOFF_START;
    let mut closed_at: Option<Instant> = None;
    let mut last_commit: Option<Instant> = None;
    loop {
        let closed = queue.is_closed();
        if closed && closed_at.is_none() {
            closed_at = Some(Instant::now());
        }
        if queue.is_empty() {
            if closed {
                return;
            }
            // Woken by each hand-off from the fan-out, and by its close.
            queue.notified().await;
            continue;
        }
        if !closed {
            if let Some(wait) = last_commit.and_then(|t| min_gap.checked_sub(t.elapsed())) {
                tokio::time::sleep(wait).await;
            }
        }
        let batch = queue.take(MAX_BATCH);
        if batch.is_empty() {
            continue;
        }
        last_commit = Some(Instant::now());
        match store.write_spans(&batch).await {
            Ok(()) => {
                backoff = BACKOFF_START;
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
                stats.store_errors.fetch_add(1, Ordering::Relaxed);
                stats.store_failing.store(true, Ordering::Relaxed);
                let n = batch.len();
                if closed_at.is_some_and(|t| t.elapsed() >= exit_deadline) {
                    let lost = n as u64 + queue.clear();
                    stats.dropped.fetch_add(lost, Ordering::Relaxed);
                    tracing::error!(%error, lost, "Store still failing at shutdown deadline; spans lost");
                    return;
                }
                tracing::warn!(%error, spans = n, retry_in_ms = backoff.as_millis() as u64, "Span batch write failed; will retry");
                sink.count_dropped(queue.requeue(batch));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}
