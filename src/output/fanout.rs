//! Fan-out: the batcher's first stage, between the recorder's one queue and
//! the outputs.
//!
//! One loop: wake on size (`batch_size` queued) or time (`batch_interval`),
//! take what is queued, redact the batch once on a blocking thread (the
//! request's credentials, then `redact_patterns`), and hand every span as
//! one `Arc<Span>` to the OTLP exporter's queue and to the store writer's
//! queue (`batcher`): both outputs share the redacted span, bodies
//! included, instead of each holding a copy and redacting it again. Under
//! load the takes are at least `min_gap` apart, so the redaction batches
//! grow as the commits do. At shutdown it drains until the queue is closed
//! and empty (and `send_after` work has finished, for at most the
//! shutdown deadline), then closes the writer's queue.
//!
//! Must never: hand a span to an output before it is redacted, or wait on
//! an output (both hand-offs are pushes into bounded queues).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::output::batcher;
use crate::output::redact::Redactor;
use crate::output::sink::{Pending, SpanSink};
use crate::output::store::Store;
use crate::record::span::Span;

/// Most spans taken (redacted, then written in one transaction) at once.
pub(crate) const MAX_BATCH: usize = 5_000;

/// Runs the batcher until the sink is closed and drained: the fan-out here,
/// and the store writer (when there is a store) on its own task, which
/// writes what is queued (up to `exit_deadline` after the close while the
/// store keeps failing) before this returns.
///
/// Commits are at least `min_gap` apart: under load the batches grow
/// instead of the commits multiplying (measured here: 10 spans per
/// transaction write ~10k spans/s with the writer using a whole core,
/// 1,000 per transaction ~55k/s).
pub async fn run_batcher(
    sink: SpanSink,
    store: Option<Store>,
    interval: Duration,
    min_gap: Duration,
    exit_deadline: Duration,
) {
    let writer = match (store, sink.shared.writer.is_some()) {
        (Some(store), true) => Some(tokio::spawn(batcher::run(
            sink.clone(),
            store,
            min_gap,
            exit_deadline,
        ))),
        _ => None,
    };
    fan_out(&sink, interval, min_gap, exit_deadline).await;
    if let Some(queue) = &sink.shared.writer {
        queue.close();
    }
    if let Some(writer) = writer {
        let _ = writer.await;
    }
}

async fn fan_out(sink: &SpanSink, interval: Duration, min_gap: Duration, exit_deadline: Duration) {
    let sh = &sink.shared;
    let queue = &sh.queue;
    let mut closed_at: Option<Instant> = None;
    let mut last_take: Option<Instant> = None;
    loop {
        let closed = queue.is_closed();
        if closed && closed_at.is_none() {
            closed_at = Some(Instant::now());
        }
        let len = queue.len();
        if len == 0 {
            let settled = sh.deferred.load(Ordering::SeqCst) == 0
                || closed_at.is_some_and(|t| t.elapsed() >= exit_deadline);
            if closed && settled {
                return;
            }
            tokio::select! {
                _ = queue.notified() => {}
                _ = tokio::time::sleep(interval) => {}
            }
            continue;
        }
        if len < sh.batch_size && !closed {
            // Not a full batch yet: wait for more or for the interval.
            tokio::select! {
                _ = queue.notified() => {}
                _ = tokio::time::sleep(interval) => {}
            }
        }
        if !closed {
            if let Some(wait) = last_take.and_then(|t| min_gap.checked_sub(t.elapsed())) {
                tokio::time::sleep(wait).await;
            }
        }
        let batch = queue.take(MAX_BATCH);
        if batch.is_empty() {
            continue;
        }
        last_take = Some(Instant::now());
        let spans = redact_batch(sink, batch).await;
        if spans.is_empty() {
            continue;
        }
        if let Some(exporter) = &sh.outputs.exporter {
            exporter.offer_all(&spans);
        }
        if let Some(writer) = &sh.writer {
            sink.count_dropped(writer.push_all(spans));
        }
    }
}

/// Redacts a batch on a blocking thread (regex work stays off the async
/// workers that serve traffic), each span once, and wraps each for sharing.
async fn redact_batch(sink: &SpanSink, batch: Vec<Pending>) -> Vec<Arc<Span>> {
    let no_patterns = sink.shared.redactor.get().is_none_or(Redactor::is_empty);
    if no_patterns && batch.iter().all(|p| p.literals.is_empty()) {
        return batch.into_iter().map(|p| Arc::new(p.span)).collect();
    }
    let n = batch.len() as u64;
    let shared = Arc::clone(&sink.shared);
    let job = move || {
        let none = Redactor::default();
        let r = shared.redactor.get().unwrap_or(&none);
        batch
            .into_iter()
            .map(|Pending { mut span, literals }| {
                r.redact_output(&mut span, &literals);
                Arc::new(span)
            })
            .collect::<Vec<_>>()
    };
    match tokio::task::spawn_blocking(job).await {
        Ok(spans) => spans,
        Err(error) => {
            // Only a panic inside the regex engine gets here; the spans are
            // lost rather than recorded unredacted.
            sink.stats().dropped.fetch_add(n, Ordering::Relaxed);
            tracing::error!(%error, spans = n, "Redaction failed; spans dropped");
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::Mutex;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    use crate::config::OtlpConfig;
    use crate::output::otlp;
    use crate::output::sink::Outputs;
    use crate::output::store::StoreUrl;

    /// An OTLP/HTTP receiver answering 200 to everything; the bodies it got.
    async fn collector() -> (String, Arc<Mutex<Vec<Bytes>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let bodies = Arc::clone(&got);
        tokio::spawn(async move {
            loop {
                let (io, _) = listener.accept().await.unwrap();
                let bodies = Arc::clone(&bodies);
                let service = hyper::service::service_fn(move |req: http::Request<_>| {
                    let bodies = Arc::clone(&bodies);
                    async move {
                        let body: hyper::body::Incoming = req.into_body();
                        let body = body.collect().await.unwrap().to_bytes();
                        bodies.lock().unwrap().push(body);
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::new())))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(io), service),
                );
            }
        });
        (url, got)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_span_is_redacted_once_for_both_outputs() {
        const N: u64 = 60;
        let (endpoint, bodies) = collector().await;
        let config = OtlpConfig {
            endpoint,
            batch_interval_ms: 10,
            batch_size: 16,
            ..OtlpConfig::default()
        };
        let settings = otlp::Settings::new(&config, &[]).unwrap();
        let (exporter, export_task) = otlp::spawn(&config, settings);
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreUrl::Sqlite(dir.path().join("t.db")))
            .await
            .unwrap();
        let sink = SpanSink::with_outputs(
            10,
            1 << 24,
            None,
            Outputs {
                store: true,
                exporter: Some(exporter.clone()),
                sample_rate: 1.0,
            },
        );
        let redactor = Redactor::defaults();
        sink.set_redactor(redactor.clone());
        let batcher = tokio::spawn(run_batcher(
            sink.clone(),
            Some(store.clone()),
            Duration::from_millis(10),
            Duration::from_millis(1),
            Duration::from_secs(5),
        ));
        let mut ids = Vec::new();
        for i in 0..N {
            let mut s = Span::start(1_700_000_000_000_000);
            s.name = "chat m".into();
            s.request_body = Some(format!(
                r#"{{"key":"sk-abcdefghijklmnop{i}","note":"LITERAL-SECRET-{i}"}}"#
            ));
            s.response_body = Some("a reply".repeat(200));
            ids.push(s.span_id.clone());
            sink.send_redacting(s, vec![format!("LITERAL-SECRET-{i}")]);
        }
        // Shutdown order: close → the batcher drains → the exporter flushes.
        sink.close();
        tokio::time::timeout(Duration::from_secs(20), batcher)
            .await
            .unwrap()
            .unwrap();
        exporter.close();
        tokio::time::timeout(Duration::from_secs(20), export_task)
            .await
            .unwrap()
            .unwrap();

        assert_eq!(sink.stats().written.load(Ordering::Relaxed), N);
        assert_eq!(exporter.stats().exported.load(Ordering::Relaxed), N);
        assert_eq!(sink.stats().dropped.load(Ordering::Relaxed), 0);
        assert_eq!(
            redactor.passes(),
            N,
            "every span redacted exactly once, for the store and the export"
        );
        assert_eq!(sink.depth(), (0, 0));
        assert_eq!(exporter.depth(), 0);
        // Both outputs got the redacted text.
        for id in &ids {
            let stored = store.span(id).await.unwrap().unwrap();
            let body = stored.request_body.unwrap();
            assert!(
                !body.contains("sk-abc") && !body.contains("LITERAL-SECRET"),
                "{body}"
            );
            assert!(body.contains(crate::output::redact::REDACTED), "{body}");
        }
        let exported: Vec<u8> = bodies.lock().unwrap().concat();
        assert!(!exported.is_empty());
        for secret in [&b"sk-abc"[..], b"LITERAL-SECRET"] {
            assert!(
                !exported.windows(secret.len()).any(|w| w == secret),
                "a secret reached the collector"
            );
        }
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_store_does_not_hold_the_export_back() {
        use sqlx::Connection;
        const N: u64 = 20;
        let (endpoint, _) = collector().await;
        let config = OtlpConfig {
            endpoint,
            batch_interval_ms: 10,
            ..OtlpConfig::default()
        };
        let settings = otlp::Settings::new(&config, &[]).unwrap();
        let (exporter, _export_task) = otlp::spawn(&config, settings);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let store = Store::open(&StoreUrl::Sqlite(path.clone())).await.unwrap();
        // Another connection holds the write lock: the writer's attempts
        // wait out the busy timeout (5 s), then fail and retry.
        let mut lock = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::raw_sql("BEGIN EXCLUSIVE")
            .execute(&mut lock)
            .await
            .unwrap();
        let sink = SpanSink::with_outputs(
            10,
            1 << 24,
            None,
            Outputs {
                store: true,
                exporter: Some(exporter.clone()),
                sample_rate: 1.0,
            },
        );
        sink.set_redactor(Redactor::defaults());
        let batcher = tokio::spawn(run_batcher(
            sink.clone(),
            Some(store.clone()),
            Duration::from_millis(10),
            Duration::from_millis(1),
            Duration::from_secs(5),
        ));
        for _ in 0..N {
            sink.send(Span::start(1_700_000_000_000_000));
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while exporter.stats().exported.load(Ordering::Relaxed) < N {
            assert!(Instant::now() < deadline, "the export waited on the store");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(sink.stats().written.load(Ordering::Relaxed), 0);
        sqlx::raw_sql("ROLLBACK").execute(&mut lock).await.unwrap();
        sink.close();
        tokio::time::timeout(Duration::from_secs(30), batcher)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(sink.stats().written.load(Ordering::Relaxed), N);
        assert_eq!(sink.stats().dropped.load(Ordering::Relaxed), 0);
        store.close().await;
    }

    #[tokio::test]
    async fn without_a_store_spans_go_to_the_exporter_only() {
        let config = OtlpConfig {
            // Nothing listens: the spans stay queued in the exporter.
            endpoint: "http://127.0.0.1:9".into(),
            batch_interval_ms: 3_600_000,
            batch_size: 1000,
            ..OtlpConfig::default()
        };
        let settings = otlp::Settings::new(&config, &[]).unwrap();
        let (exporter, export_task) = otlp::spawn(&config, settings);
        let sink = SpanSink::with_outputs(
            2,
            1 << 20,
            None,
            Outputs {
                store: false,
                exporter: Some(exporter.clone()),
                sample_rate: 1.0,
            },
        );
        for _ in 0..5 {
            sink.send(Span::start(0));
        }
        assert_eq!(sink.depth().0, 5, "queued for the fan-out");
        sink.close();
        run_batcher(
            sink.clone(),
            None,
            Duration::from_millis(5),
            Duration::ZERO,
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(sink.depth(), (0, 0));
        assert_eq!(exporter.depth(), 5);
        assert_eq!(sink.stats().enqueued.load(Ordering::Relaxed), 5);
        export_task.abort();
        assert_eq!(exporter.abandon(), 5);
    }
}
