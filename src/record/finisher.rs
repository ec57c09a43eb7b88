//! The `Finisher`: one thread that finishes exchanges under load, one at a
//! time and in the order their ends were seen (ARCHITECTURE.md, invariant
//! 5).
//!
//! Owns the bounded finish queue (4,096) and its pending count. Never
//! blocks the request path: when the queue is full the job runs where it
//! ended. A panic in one job loses that span, not the thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// Work done once an exchange has ended: parsing the response, stitching,
/// building the span, metrics, queueing it for the writer.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

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
    pub(crate) fn run(&self, job: Job) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

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
}
