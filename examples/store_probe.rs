//! Store write throughput, two ways:
//!
//! 1. sustained spans/s through the real recorder path: a producer calls
//!    `SpanSink::send` as fast as the queue takes it (kept under its byte
//!    budget, so nothing is dropped) while `sink::run_batcher` writes into
//!    the store with llmtap's default batching settings;
//! 2. (SQLite) raw `write_spans` by transaction size (the batcher's commit
//!    shape).
//!
//! ```sh
//! cargo run --release --example store_probe                     # SQLite, temp file
//! cargo run --release --example store_probe -- postgres://postgres@127.0.0.1:5432/llmtap
//! cargo run --release --example store_probe -- URL --seconds 20
//! ```
//! A PostgreSQL database must exist and should be empty (its spans table
//! grows by what the run writes).
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use llmtap::config::Config;
use llmtap::output::sink::{run_batcher, SpanSink};
use llmtap::output::store::{Store, StoreUrl};
use llmtap::record::span::{Span, SpanStatus};

fn span(i: i64, bodies: bool) -> Span {
    let mut s = Span::start(1_700_000_000_000_000 + i);
    s.name = "chat gpt-4o-mini".into();
    s.operation_type = "llm_call".into();
    s.provider = "openai".into();
    s.route = "/v1".into();
    s.method = "POST".into();
    s.path = "/v1/chat/completions".into();
    s.model = Some("gpt-4o-mini".into());
    s.response_model = Some("gpt-4o-mini-2024-07-18".into());
    s.status = SpanStatus::Completed;
    s.http_status = Some(200);
    s.duration_ms = (i % 2000) as f64 / 3.0;
    s.input_tokens = Some(19);
    s.output_tokens = Some(10);
    s.cost_usd = Some(0.000_012);
    if bodies {
        s.request_body = Some(
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say eight words."}]}"#
                .into(),
        );
        s.response_body = Some("{\"id\":\"chatcmpl-x\",\"choices\":[]}".repeat(8));
    }
    s
}

/// Sends spans into a sink drained by the real batcher for `secs`, and
/// returns (spans written, seconds, spans dropped, batches).
async fn sustained(store: Store, secs: f64) -> (u64, f64, u64, u64) {
    let d = Config::default();
    let t = &d.tracing;
    let sink = SpanSink::new(t.batch_size, t.queue_max_bytes);
    let batcher = tokio::spawn(run_batcher(
        sink.clone(),
        Some(store),
        Duration::from_millis(t.batch_interval_ms),
        Duration::from_millis(t.min_flush_gap_ms),
        Duration::from_millis(d.shutdown.flush_timeout_ms),
    ));
    // Keep the queue well under its budget: a producer that outran the
    // writer would only measure drop-oldest.
    let cap = t.queue_max_bytes / span(0, true).approx_bytes() / 2;
    let start = Instant::now();
    let deadline = Duration::from_secs_f64(secs);
    let mut i = 0i64;
    while start.elapsed() < deadline {
        if sink.depth().0 >= cap {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        for _ in 0..100 {
            sink.send(span(i, true));
            i += 1;
        }
        tokio::task::yield_now().await;
    }
    // Count what is written by the deadline, then drain.
    let written = sink.stats().written.load(Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    sink.close();
    let _ = tokio::time::timeout(Duration::from_secs(120), batcher).await;
    let dropped = sink.stats().dropped.load(Ordering::Relaxed);
    let batches = sink.stats().batches.load(Ordering::Relaxed);
    (written, elapsed, dropped, batches)
}

#[tokio::main]
async fn main() {
    let mut url: Option<String> = None;
    let mut secs = 10.0;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--seconds" => secs = args.next().and_then(|v| v.parse().ok()).unwrap_or(secs),
            _ => url = Some(a),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let url = url.unwrap_or_else(|| format!("sqlite://{}/p.db", dir.path().display()));
    let parsed = StoreUrl::parse(&url).unwrap();
    let store = Store::open(&parsed).await.unwrap();
    let kind = store.kind();
    let (written, elapsed, dropped, batches) = sustained(store.clone(), secs).await;
    println!(
        "{kind}: sustained {:.0} spans/s through the batcher ({written} spans in {elapsed:.1} s, \
         {batches} transactions, {dropped} dropped)",
        written as f64 / elapsed
    );
    store.close().await;

    if matches!(parsed, StoreUrl::Sqlite(_)) {
        for (label, tx) in [
            ("tx10", 10usize),
            ("tx100", 100),
            ("tx1000", 1000),
            ("tx5000", 5000),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let url = StoreUrl::parse(&format!("sqlite://{}/p.db", dir.path().display())).unwrap();
            let store = Store::open(&url).await.unwrap();
            let n = 20_000;
            let spans: Vec<Span> = (0..n).map(|i| span(i, true)).collect();
            let t = Instant::now();
            for chunk in spans.chunks(tx) {
                store.write_spans(chunk).await.unwrap();
            }
            println!(
                "{kind} {label}: {:.0} spans/s",
                n as f64 / t.elapsed().as_secs_f64()
            );
        }
    }
}
