//! Live: the exchanges in flight right now, in memory, for `GET /api/live`.
//!
//! Owns a bounded, sharded map of in-flight span summaries keyed by span
//! id: `Exchange::start` inserts, `Exchange::finish` removes (every way an
//! exchange ends goes through `finish`, so nothing is left behind). Both are
//! O(1) behind a short std mutex on one of [`SHARDS`] shards, and never
//! await. Past `cap` entries new exchanges are not listed, only counted
//! (`overflow`). It must never block or fail a request, and never grow past
//! its cap.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use serde::Serialize;

use crate::record::context::Explicit;
use crate::record::span::Span;

/// Default most in-flight exchanges listed.
pub const DEFAULT_CAP: usize = 10_000;
/// Shards of the map (spreads the lock over concurrent requests).
pub const SHARDS: usize = 16;

/// What is known of an exchange when it starts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LiveSpan {
    /// As known at the start: the caller's `traceparent` trace, or a fresh
    /// id that stitching may still replace when the exchange finishes.
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub operation_type: String,
    pub provider: String,
    pub route: String,
    pub method: String,
    pub path: String,
    pub start_time_us: i64,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub conversation_id: Option<String>,
    /// The requested model, once the request body has been read.
    pub model: Option<String>,
}

/// See the module docs.
pub struct Live {
    shards: [Mutex<HashMap<String, LiveSpan>>; SHARDS],
    len: AtomicUsize,
    cap: usize,
    overflow: AtomicU64,
}

impl Default for Live {
    fn default() -> Self {
        Live::new(DEFAULT_CAP)
    }
}

impl Live {
    pub fn new(cap: usize) -> Live {
        Live {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            len: AtomicUsize::new(0),
            cap,
            overflow: AtomicU64::new(0),
        }
    }

    fn shard(&self, span_id: &str) -> MutexGuard<'_, HashMap<String, LiveSpan>> {
        let h = span_id
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        // Every update is a single insert or remove: a panic elsewhere while
        // the lock was held cannot leave the map half-changed.
        self.shards[h % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Lists an exchange that has just started (the span as
    /// `Exchange::start` built it, and what the headers said).
    pub fn insert(&self, span: &Span, explicit: &Explicit) {
        if self.len.fetch_add(1, Ordering::Relaxed) >= self.cap {
            self.len.fetch_sub(1, Ordering::Relaxed);
            self.overflow.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let tp = explicit.traceparent.as_ref();
        let entry = LiveSpan {
            trace_id: tp.map_or_else(|| span.trace_id.clone(), |t| t.trace_id.clone()),
            span_id: span.span_id.clone(),
            parent_span_id: tp.map(|t| t.parent_span_id.clone()),
            operation_type: span.operation_type.clone(),
            provider: span.provider.clone(),
            route: span.route.clone(),
            method: span.method.clone(),
            path: span.path.clone(),
            start_time_us: span.start_time_us,
            session_id: explicit.session_id.clone(),
            user_id: explicit.user_id.clone(),
            conversation_id: explicit.conversation_id.clone(),
            model: None,
        };
        if self
            .shard(&span.span_id)
            .insert(span.span_id.clone(), entry)
            .is_some()
        {
            // The same id twice (64 random bits): one entry, counted once.
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Records the requested model of a listed exchange (a no-op when it is
    /// not listed, e.g. already finished).
    pub fn set_model(&self, span_id: &str, model: &str) {
        if let Some(entry) = self.shard(span_id).get_mut(span_id) {
            entry.model = Some(model.to_string());
        }
    }

    /// Unlists an exchange that has finished (a no-op when it was never
    /// listed).
    pub fn remove(&self, span_id: &str) {
        if self.shard(span_id).remove(span_id).is_some() {
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Exchanges in flight now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Most entries listed.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Exchanges that started while the map was full (never listed).
    pub fn overflow(&self) -> u64 {
        self.overflow.load(Ordering::Relaxed)
    }

    /// Up to `limit` entries, newest first. Copies each shard under its
    /// lock, one shard at a time.
    pub fn snapshot(&self, limit: usize) -> Vec<LiveSpan> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let map = shard.lock().unwrap_or_else(|p| p.into_inner());
            out.extend(map.values().cloned());
        }
        out.sort_by(|a, b| (b.start_time_us, &b.span_id).cmp(&(a.start_time_us, &a.span_id)));
        out.truncate(limit);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::context::TraceParent;

    fn span(start: i64) -> Span {
        let mut s = Span::start(start);
        s.operation_type = "llm_call".into();
        s.path = "/v1/chat/completions".into();
        s
    }

    #[test]
    fn insert_remove_snapshot_newest_first() {
        let live = Live::new(100);
        let a = span(1);
        let b = span(2);
        let explicit = Explicit {
            traceparent: Some(TraceParent {
                trace_id: "t".repeat(32),
                parent_span_id: "p".repeat(16),
                flags: 1,
            }),
            session_id: Some("s1".into()),
            ..Explicit::default()
        };
        live.insert(&a, &Explicit::default());
        live.insert(&b, &explicit);
        assert_eq!(live.len(), 2);
        let snap = live.snapshot(10);
        assert_eq!(snap[0].span_id, b.span_id);
        assert_eq!(snap[0].trace_id, "t".repeat(32));
        assert_eq!(snap[0].session_id.as_deref(), Some("s1"));
        assert_eq!(snap[1].trace_id, a.trace_id);
        assert_eq!(live.snapshot(1).len(), 1);
        live.remove(&a.span_id);
        live.remove(&a.span_id);
        live.remove("never-listed");
        assert_eq!(live.len(), 1);
        live.remove(&b.span_id);
        assert!(live.is_empty() && live.snapshot(10).is_empty());
    }

    #[test]
    fn bounded_and_counts_what_does_not_fit() {
        let live = Live::new(3);
        let spans: Vec<Span> = (0..5).map(span).collect();
        for s in &spans {
            live.insert(s, &Explicit::default());
        }
        assert_eq!((live.len(), live.overflow()), (3, 2));
        // Finishing one that was never listed frees nothing.
        live.remove(&spans[4].span_id);
        assert_eq!(live.len(), 3);
        live.remove(&spans[0].span_id);
        live.insert(&span(9), &Explicit::default());
        assert_eq!((live.len(), live.overflow()), (3, 2));
    }

    #[test]
    fn concurrent_inserts_and_removes_balance() {
        let live = std::sync::Arc::new(Live::new(DEFAULT_CAP));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let live = std::sync::Arc::clone(&live);
                std::thread::spawn(move || {
                    for i in 0..500 {
                        let s = span(i);
                        live.insert(&s, &Explicit::default());
                        live.remove(&s.span_id);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!((live.len(), live.overflow()), (0, 0));
    }
}
