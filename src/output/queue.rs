//! The bounded drop-oldest queue every output stage uses: the recorder's
//! queue that `SpanSink::send` pushes into, the store writer's queue of
//! redacted spans, and the OTLP exporter's queue.
//!
//! Owns the items, their weights (each item reports its own, counted once
//! at push), a count cap and a byte [`Budget`], the wake-up of the one loop
//! that drains it (woken when `wake_at` items are queued, and on close), and
//! the closed flag. A push past either bound drops the oldest items and
//! says how many: the caller counts them in its own stats and warns.
//!
//! Two stages of one pipeline can share a budget (the recorder's queue and
//! the store writer's, behind it): a push into the newer stage
//! ([`Queue::push_after`]) drops from the older stage first, so the oldest
//! spans go whichever stage holds them, and the bytes of both together
//! stay within the one budget.
//!
//! Must never: wait (every operation is one short mutex hold, no `.await`,
//! so the request path may push), or grow past its bounds.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

/// An item that knows how much memory it holds.
pub trait Weigh {
    /// Approximate bytes held, counted against the queue's byte budget.
    fn weight(&self) -> usize;
}

impl Weigh for std::sync::Arc<crate::record::span::Span> {
    fn weight(&self) -> usize {
        self.approx_bytes()
    }
}

/// Bytes held by the queues sharing it, against one limit.
#[derive(Debug)]
pub struct Budget {
    max_bytes: usize,
    /// Updated under the lock of the queue that adds or removes the bytes
    /// (relaxed: only this counter's own value matters, no other memory is
    /// published through it).
    used: AtomicUsize,
}

impl Budget {
    pub fn new(max_bytes: usize) -> Arc<Budget> {
        Arc::new(Budget {
            max_bytes,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes held now, by every queue sharing the budget.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    fn over(&self) -> bool {
        self.used() > self.max_bytes
    }
}

struct Inner<T> {
    /// Items, oldest first, with the weight each was counted at.
    items: VecDeque<(T, usize)>,
    /// This queue's share of the budget's bytes.
    bytes: usize,
}

/// A bounded FIFO that drops its oldest items past `max_items` or past its
/// byte budget.
pub struct Queue<T> {
    inner: Mutex<Inner<T>>,
    notify: Notify,
    closed: AtomicBool,
    max_items: usize,
    budget: Arc<Budget>,
    wake_at: usize,
}

impl<T: Weigh> Queue<T> {
    /// A queue holding at most `max_items` items and `max_bytes` bytes,
    /// whose consumer is woken once `wake_at` items are queued.
    pub fn new(max_items: usize, max_bytes: usize, wake_at: usize) -> Queue<T> {
        Queue::sharing(max_items, Budget::new(max_bytes), wake_at)
    }

    /// A queue whose bytes count against `budget`, shared with other
    /// queues.
    pub fn sharing(max_items: usize, budget: Arc<Budget>, wake_at: usize) -> Queue<T> {
        Queue {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                bytes: 0,
            }),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
            max_items,
            budget,
            wake_at: wake_at.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        // Every update is a push/pop plus a counter under the lock: a panic
        // cannot leave `Inner` inconsistent, so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `item`; returns how many of the oldest items were dropped to
    /// stay within the bounds (`item` itself when it alone is too big).
    pub fn push(&self, item: T) -> u64 {
        self.push_after::<T>(item, None)
    }

    /// [`push`](Self::push) into the newer of two stages sharing a budget:
    /// past it, the oldest items of `older` (the stage this one feeds,
    /// whose items are all older than this one's) are dropped first, then
    /// this queue's own oldest.
    pub fn push_after<U: Weigh>(&self, item: T, older: Option<&Queue<U>>) -> u64 {
        let weight = item.weight();
        let (len, dropped) = {
            let mut inner = self.lock();
            inner.items.push_back((item, weight));
            inner.bytes += weight;
            self.budget.used.fetch_add(weight, Ordering::Relaxed);
            let mut dropped = 0;
            if self.budget.over() {
                // Lock order: the newer stage, then the older (the older
                // never locks the newer).
                if let Some(older) = older {
                    dropped += older.evict_now();
                }
            }
            dropped += self.evict(&mut inner);
            (inner.items.len(), dropped)
        };
        if len >= self.wake_at {
            self.notify.notify_one();
        }
        dropped
    }

    /// Appends every item of `items` in order under one lock; returns how
    /// many of the oldest were dropped. Wakes the consumer when anything is
    /// queued afterwards and `wake_at` is reached.
    pub fn push_all(&self, items: impl IntoIterator<Item = T>) -> u64 {
        let items: Vec<(T, usize)> = items
            .into_iter()
            .map(|item| {
                let w = item.weight();
                (item, w)
            })
            .collect();
        let (len, dropped) = {
            let mut inner = self.lock();
            for (item, weight) in items {
                inner.items.push_back((item, weight));
                inner.bytes += weight;
                self.budget.used.fetch_add(weight, Ordering::Relaxed);
            }
            let dropped = self.evict(&mut inner);
            (inner.items.len(), dropped)
        };
        if len >= self.wake_at {
            self.notify.notify_one();
        }
        dropped
    }

    /// Takes up to `max` of the oldest items.
    pub fn take(&self, max: usize) -> Vec<T> {
        let mut inner = self.lock();
        let n = inner.items.len().min(max);
        let mut freed = 0;
        let out = inner
            .items
            .drain(..n)
            .map(|(item, weight)| {
                freed += weight;
                item
            })
            .collect();
        inner.bytes -= freed;
        self.budget.used.fetch_sub(freed, Ordering::Relaxed);
        out
    }

    /// Puts `items` (taken earlier, oldest first) back at the front, in
    /// their order, for a retry; returns how many of the oldest were
    /// dropped to stay within the bounds (the requeued ones go first).
    pub fn requeue(&self, items: Vec<T>) -> u64 {
        let mut inner = self.lock();
        for item in items.into_iter().rev() {
            let weight = item.weight();
            inner.bytes += weight;
            self.budget.used.fetch_add(weight, Ordering::Relaxed);
            inner.items.push_front((item, weight));
        }
        self.evict(&mut inner)
    }

    /// Empties the queue; returns how many items it held.
    pub fn clear(&self) -> u64 {
        let mut inner = self.lock();
        let n = inner.items.len() as u64;
        inner.items.clear();
        self.budget.used.fetch_sub(inner.bytes, Ordering::Relaxed);
        inner.bytes = 0;
        n
    }

    /// Drops the oldest items while over the bounds.
    fn evict_now(&self) -> u64 {
        let mut inner = self.lock();
        self.evict(&mut inner)
    }

    fn evict(&self, inner: &mut Inner<T>) -> u64 {
        let mut dropped = 0;
        while inner.items.len() > self.max_items || self.budget.over() {
            match inner.items.pop_front() {
                Some((_, weight)) => {
                    inner.bytes -= weight;
                    self.budget.used.fetch_sub(weight, Ordering::Relaxed);
                    dropped += 1;
                }
                None => break,
            }
        }
        dropped
    }
}

impl<T> Queue<T> {
    /// Items and bytes queued here (the budget's [`used`](Budget::used)
    /// counts every queue sharing it).
    pub fn depth(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        (inner.items.len(), inner.bytes)
    }

    /// Items queued.
    pub fn len(&self) -> usize {
        self.depth().0
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The byte budget, maybe shared.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Resolves when the consumer should look again: `wake_at` reached,
    /// [`wake`](Self::wake) or [`close`](Self::close) called (a wake-up
    /// given while nobody waited is kept for the next wait).
    pub fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }

    /// Wakes the consumer.
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// No more items will come: the consumer drains and exits.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// True once `close` was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// A rate limit for the warning a dropping queue logs.
#[derive(Default)]
pub struct Throttle {
    last: Mutex<Option<Instant>>,
}

impl Throttle {
    /// True at most once per `period`.
    pub fn ready(&self, period: Duration) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_none_or(|t| t.elapsed() > period) {
            *last = Some(Instant::now());
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An item weighing `.1` bytes, named `.0`.
    #[derive(Debug, PartialEq)]
    struct W(u32, usize);

    impl Weigh for W {
        fn weight(&self) -> usize {
            self.1
        }
    }

    fn names(items: Vec<W>) -> Vec<u32> {
        items.into_iter().map(|w| w.0).collect()
    }

    #[test]
    fn byte_budget_drops_the_oldest_and_says_how_many() {
        let q = Queue::new(usize::MAX, 30, 100);
        assert_eq!(q.push(W(1, 10)), 0);
        assert_eq!(q.push(W(2, 10)), 0);
        assert_eq!(q.push(W(3, 10)), 0);
        assert_eq!(q.push(W(4, 15)), 2, "1 and 2 make room for 4");
        assert_eq!(q.depth(), (2, 25));
        assert_eq!(names(q.take(10)), vec![3, 4]);
        assert_eq!(q.depth(), (0, 0));
        // An item over the whole budget drops itself too.
        q.push(W(5, 10));
        assert_eq!(q.push(W(6, 31)), 2);
        assert_eq!(q.depth(), (0, 0));
    }

    #[test]
    fn count_cap_drops_the_oldest() {
        let q = Queue::new(3, usize::MAX, 100);
        let dropped: u64 = (0..5).map(|i| q.push(W(i, 1))).sum();
        assert_eq!(dropped, 2);
        assert_eq!(q.depth(), (3, 3));
        assert_eq!(names(q.take(10)), vec![2, 3, 4]);
        assert_eq!(q.push_all((5..10).map(|i| W(i, 1))), 2);
        assert_eq!(names(q.take(2)), vec![7, 8]);
        assert_eq!(names(q.take(2)), vec![9]);
    }

    #[test]
    fn requeue_puts_back_in_order_ahead_of_newer_items() {
        let q = Queue::new(usize::MAX, 40, 100);
        q.push_all((0..3).map(|i| W(i, 10)));
        let taken = q.take(2);
        q.push(W(3, 10));
        assert_eq!(q.requeue(taken), 0);
        assert_eq!(q.depth(), (4, 40));
        assert_eq!(names(q.take(10)), vec![0, 1, 2, 3]);
        // Over the budget, the requeued (oldest) items are dropped first.
        q.push_all((0..3).map(|i| W(i, 10)));
        let taken = q.take(2);
        q.push_all([W(3, 10), W(4, 10), W(5, 10)]);
        assert_eq!(q.requeue(taken), 2);
        assert_eq!(names(q.take(10)), vec![2, 3, 4, 5]);
    }

    #[test]
    fn stages_sharing_a_budget_drop_the_oldest_of_both() {
        let budget = Budget::new(50);
        let newer: Queue<W> = Queue::sharing(usize::MAX, Arc::clone(&budget), 100);
        let older: Queue<W> = Queue::sharing(usize::MAX, Arc::clone(&budget), 1);
        older.push_all((0..3).map(|i| W(i, 10)));
        newer.push_after(W(3, 10), Some(&older));
        assert_eq!(budget.used(), 40);
        // 20 more bytes: 0 and 1 (the older stage's oldest) make room.
        assert_eq!(newer.push_after(W(4, 10), Some(&older)), 0);
        assert_eq!(newer.push_after(W(5, 10), Some(&older)), 1);
        assert_eq!(newer.push_after(W(6, 10), Some(&older)), 1);
        assert_eq!(budget.used(), 50);
        assert_eq!(names(older.take(10)), vec![2]);
        // The older stage empty, the newer drops its own oldest.
        assert_eq!(newer.push_after(W(7, 20), Some(&older)), 1);
        assert_eq!(names(newer.take(10)), vec![4, 5, 6, 7]);
        assert_eq!(budget.used(), 0);
        // A hand-off into the older stage makes room in that stage.
        newer.push_all((8..12).map(|i| W(i, 10)));
        assert_eq!(older.push_all([W(12, 10), W(13, 10)]), 1);
        assert_eq!(older.push(W(14, 10)), 1);
        assert_eq!(budget.used(), 50);
        assert_eq!(older.clear(), 1);
        assert_eq!(budget.used(), 40);
        assert_eq!(newer.depth(), (4, 40));
    }

    #[tokio::test]
    async fn wakes_at_the_threshold_and_on_close() {
        let q = Queue::new(usize::MAX, usize::MAX, 2);
        q.push(W(0, 1));
        let quiet = tokio::time::timeout(Duration::from_millis(20), q.notified()).await;
        assert!(quiet.is_err(), "woken below wake_at");
        q.push(W(1, 1));
        tokio::time::timeout(Duration::from_secs(5), q.notified())
            .await
            .unwrap();
        assert!(!q.is_closed());
        q.close();
        assert!(q.is_closed());
        tokio::time::timeout(Duration::from_secs(5), q.notified())
            .await
            .unwrap();
        assert_eq!(q.clear(), 2);
        assert!(q.is_empty());
    }

    #[test]
    fn throttle_lets_one_through_per_period() {
        let t = Throttle::default();
        assert!(t.ready(Duration::from_secs(60)));
        assert!(!t.ready(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(2));
        assert!(t.ready(Duration::from_millis(1)));
    }
}
