//! Shutdown under load, through the shipped binary (real processes,
//! loopback only, every wait bounded, only our own PIDs signalled).
//!
//! * SIGTERM with open streams: llmtap stops accepting at once (new
//!   connections are refused or closed unserved), every open stream
//!   finishes within the drain window with the upstream's exact bytes, the
//!   process exits 0 within drain + flush timeout, and the store then holds
//!   exactly one span per request that got a complete response.
//! * SIGTERM with a drain window shorter than the streams: the streams
//!   still open at its end are cut, and their spans (`cancelled`) are
//!   written before exit all the same.
//! * SIGKILL under load: the next start on the same SQLite file is clean
//!   (WAL recovery, `PRAGMA integrity_check` = ok, serves and records), and
//!   the spans lost are bounded by the batch window: every request that
//!   completed more than `batch_interval_ms + min_flush_gap_ms + MARGIN`
//!   before the kill is in the store. `MARGIN` (2 s) is slack for a loaded
//!   CI machine, not part of the design: a span is queued when its response
//!   ends and committed by the next batch, at most one interval (plus the
//!   gap between commits) later.

mod mock;
mod procs;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use procs::*;

/// Streams held open at the signal.
const STREAMS: usize = 8;
/// Words per stream: about 43 SSE frames.
const WORDS: &str = "40";
const BATCH_INTERVAL_MS: u64 = 100;
const MIN_FLUSH_GAP_MS: u64 = 25;
/// Slack for a loaded CI machine in the SIGKILL bound.
const MARGIN: Duration = Duration::from_secs(2);
const FLUSH_TIMEOUT_MS: u64 = 5_000;

fn chat(stream: bool) -> String {
    serde_json::json!({
        "model": "gpt-4o-mini",
        "stream": stream,
        "messages": [{"role": "user", "content": "hello"}],
    })
    .to_string()
}

fn tap_config(mock: &mock::MockProvider, db: &std::path::Path, drain_ms: u64) -> String {
    config(
        &mock.url(),
        db,
        &format!("min_flush_gap_ms = {MIN_FLUSH_GAP_MS}"),
        &format!("drain_timeout_ms = {drain_ms}\nflush_timeout_ms = {FLUSH_TIMEOUT_MS}"),
    )
}

/// The bytes the mock sends for a request, asked directly (the delay
/// header only spaces the frames; the bytes are the same).
async fn direct(mock: &mock::MockProvider, stream: bool) -> Bytes {
    let words = if stream { WORDS } else { "8" };
    post_json(
        &client(),
        &format!("{}/v1/chat/completions", mock.url()),
        &[("x-mock-words", words)],
        &chat(stream),
    )
    .await
    .body
}

/// One streamed request, on its own connection.
struct Stream {
    /// The bytes received, and the error that cut the body, if one did.
    task: tokio::task::JoinHandle<(Bytes, Option<String>)>,
}

fn open_streams(url: &str, delay_ms: u64, opened: &Arc<AtomicUsize>) -> Vec<Stream> {
    (0..STREAMS)
        .map(|i| {
            let url = url.to_string();
            let opened = Arc::clone(opened);
            let task = tokio::spawn(async move {
                let c = client();
                let req = Request::builder()
                    .method(Method::POST)
                    .uri(url)
                    .header("content-type", "application/json")
                    .header("x-mock-words", WORDS)
                    .header("x-mock-delay-ms", delay_ms.to_string())
                    .header("x-llmtap-property-kind", "stream")
                    .header("x-llmtap-property-seq", i.to_string())
                    .body(Full::new(Bytes::from(chat(true))))
                    .unwrap();
                let resp = match c.request(req).await {
                    Ok(r) => r,
                    Err(e) => return (Bytes::new(), Some(e.to_string())),
                };
                assert_eq!(resp.status(), 200);
                opened.fetch_add(1, Ordering::SeqCst);
                // Read frame by frame so a cut keeps what had arrived.
                let mut body = resp.into_body();
                let mut got = Vec::new();
                while let Some(frame) = body.frame().await {
                    match frame {
                        Ok(f) => {
                            if let Some(d) = f.data_ref() {
                                got.extend_from_slice(d);
                            }
                        }
                        Err(e) => return (Bytes::from(got), Some(e.to_string())),
                    }
                }
                (Bytes::from(got), None)
            });
            Stream { task }
        })
        .collect()
}

/// Short non-streamed requests, in sequence, on pooled connections, until
/// `stop`; each outcome is kept with its sequence number and end time.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<Mutex<Vec<(u64, Instant)>>>,
    errors: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

fn steady_load(url: String, want: Bytes, workers: u64, gap: Duration) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(AtomicUsize::new(0));
    let (st, dn, er) = (Arc::clone(&stop), Arc::clone(&done), Arc::clone(&errors));
    let task = tokio::spawn(async move {
        let mut set = tokio::task::JoinSet::new();
        for w in 0..workers {
            let (url, want, st, dn, er) = (
                url.clone(),
                want.clone(),
                Arc::clone(&st),
                Arc::clone(&dn),
                Arc::clone(&er),
            );
            set.spawn(async move {
                let c = client();
                // Bounded: at most 10,000 requests per worker.
                for i in 0..10_000u64 {
                    if st.load(Ordering::SeqCst) {
                        break;
                    }
                    let seq = w * 1_000_000 + i;
                    let req = Request::builder()
                        .method(Method::POST)
                        .uri(&url)
                        .header("content-type", "application/json")
                        .header("x-llmtap-property-kind", "short")
                        .header("x-llmtap-property-seq", seq.to_string())
                        .body(Full::new(Bytes::from(chat(false))))
                        .unwrap();
                    let outcome = match c.request(req).await {
                        Ok(resp) => {
                            let status = resp.status();
                            match resp.into_body().collect().await {
                                Ok(b) => Some((status, b.to_bytes())),
                                Err(_) => None,
                            }
                        }
                        Err(_) => None,
                    };
                    match outcome {
                        Some((status, body)) => {
                            // A response that comes whole is the real one.
                            assert_eq!(status, 200, "{body:?}");
                            assert_eq!(body, want, "bytes differ");
                            dn.lock().unwrap().push((seq, Instant::now()));
                        }
                        None => {
                            er.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    tokio::time::sleep(gap).await;
                }
            });
        }
        while set.join_next().await.is_some() {}
    });
    Load {
        stop,
        done,
        errors,
        task,
    }
}

impl Load {
    async fn finish(self) -> (Vec<(u64, Instant)>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("load did not stop")
            .unwrap();
        let done = std::mem::take(&mut *self.done.lock().unwrap());
        (done, self.errors.load(Ordering::SeqCst))
    }
}

/// What a new connection gets.
#[derive(Debug, PartialEq)]
enum Probe {
    Refused,
    /// Accepted at the TCP level, then closed (or left) without an answer.
    Unserved,
    Served,
}

async fn probe(addr: &str) -> Probe {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connect = tokio::net::TcpStream::connect(addr);
    let mut s = match tokio::time::timeout(Duration::from_secs(1), connect).await {
        Ok(Ok(s)) => s,
        _ => return Probe::Refused,
    };
    let req = format!("GET /v1/models HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return Probe::Unserved;
    }
    let mut head = [0u8; 12];
    match tokio::time::timeout(Duration::from_millis(500), s.read_exact(&mut head)).await {
        Ok(Ok(_)) if head.starts_with(b"HTTP/1.1 ") => Probe::Served,
        _ => Probe::Unserved,
    }
}

/// Waits (bounded) until the log says the signal arrived.
fn wait_log(tap: &Llmtap, needle: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !tap.log_text().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log: {}",
            tap.log_text()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Span rows: (kind, seq, stream, status, error_type).
async fn spans(db: &std::path::Path) -> Vec<(String, u64, bool, String, Option<String>)> {
    let mut c = sqlite(db).await;
    sqlx::query_as(
        "SELECT json_extract(properties, '$.kind'), CAST(json_extract(properties, '$.seq') AS INTEGER), \
         stream, status, error_type FROM spans",
    )
    .fetch_all(&mut c)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_drains_open_streams_and_writes_every_finished_span() {
    let drain_ms = 10_000;
    let mock = mock::MockProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spans.db");
    let mut tap = Llmtap::start(dir.path(), &tap_config(&mock, &db, drain_ms), &[]);
    let want_stream = direct(&mock, true).await;
    let want_short = direct(&mock, false).await;
    let direct_requests = mock.state.request_count();

    let load = steady_load(
        tap.url("/v1/chat/completions"),
        want_short,
        2,
        Duration::from_millis(10),
    );
    // ~43 frames 50 ms apart: each stream lasts about 2.1 s.
    let opened = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let streams = open_streams(&tap.url("/v1/chat/completions"), 50, &opened);
    let deadline = Instant::now() + Duration::from_secs(10);
    while opened.load(Ordering::SeqCst) < STREAMS {
        assert!(Instant::now() < deadline, "streams did not open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Mid-way through the streams.
    tokio::time::sleep(Duration::from_millis(1000).saturating_sub(started.elapsed())).await;
    assert!(streams.iter().all(|s| !s.task.is_finished()));

    tap.signal("TERM");
    let signalled = Instant::now();
    wait_log(&tap, "Shutdown signal received", Duration::from_secs(5));
    // New connections: the listener stops at the signal. A probe racing the
    // signal may still be served; once one is turned away, all are.
    let mut probes = Vec::new();
    let mut turned_away_at = None;
    let mut streams_open_at_refusal = 0;
    for _ in 0..20 {
        let p = probe(&tap.addr).await;
        if p != Probe::Served && turned_away_at.is_none() {
            turned_away_at = Some(signalled.elapsed());
            streams_open_at_refusal = streams.iter().filter(|s| !s.task.is_finished()).count();
        }
        probes.push(p);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_away = probes
        .iter()
        .position(|p| *p != Probe::Served)
        .expect("new connections were still served after the signal");
    assert!(first_away <= 1, "served after the signal: {probes:?}");
    assert!(
        probes[first_away..].iter().all(|p| *p != Probe::Served),
        "{probes:?}"
    );
    assert!(
        streams_open_at_refusal > 0,
        "the streams had ended before new connections were turned away"
    );

    // Every open stream finishes, whole, within the drain window.
    for (i, s) in streams.into_iter().enumerate() {
        let (got, cut) = tokio::time::timeout(Duration::from_millis(drain_ms), s.task)
            .await
            .expect("a stream outlived the drain window")
            .unwrap();
        assert!(cut.is_none(), "stream {i} was cut: {cut:?}");
        assert_eq!(got, want_stream, "stream {i}: bytes differ from the mock's");
    }
    let streams_done = signalled.elapsed();

    let status = tap.wait_exit(Duration::from_millis(drain_ms + FLUSH_TIMEOUT_MS));
    let exited = signalled.elapsed();
    assert!(status.success(), "exit {status}: {}", tap.log_text());
    let (done, errors) = load.finish().await;

    // Exactly one span per request that got a complete response.
    let rows = spans(&db).await;
    let streamed: Vec<_> = rows.iter().filter(|r| r.0 == "stream").collect();
    assert_eq!(streamed.len(), STREAMS);
    assert!(
        streamed.iter().all(|r| r.2 && r.3 == "completed"),
        "{streamed:?}"
    );
    let short: BTreeSet<u64> = rows
        .iter()
        .filter(|r| r.0 == "short")
        .map(|r| r.1)
        .collect();
    let completed: BTreeSet<u64> = done.iter().map(|d| d.0).collect();
    assert_eq!(rows.len(), STREAMS + completed.len());
    assert_eq!(short, completed, "spans differ from completed requests");
    assert!(rows.iter().all(|r| r.3 == "completed"), "{rows:?}");
    // Nothing was forwarded that the client did not get in full.
    assert_eq!(
        mock.state.request_count(),
        direct_requests + STREAMS + completed.len()
    );
    eprintln!(
        "SIGTERM: {} short requests completed ({errors} refused after the signal), \
         {STREAMS} streams finished {streams_done:?} after the signal; new connections \
         turned away {:?} after it ({streams_open_at_refusal} streams still open); exit 0 after {exited:?} \
         (bound {} ms); {} spans",
        completed.len(),
        turned_away_at.unwrap_or_default(),
        drain_ms + FLUSH_TIMEOUT_MS,
        rows.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_past_the_drain_window_cuts_open_streams_and_still_writes_their_spans() {
    let drain_ms = 500;
    let mock = mock::MockProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spans.db");
    let mut tap = Llmtap::start(dir.path(), &tap_config(&mock, &db, drain_ms), &[]);
    let want_stream = direct(&mock, true).await;
    let want_short = direct(&mock, false).await;

    let load = steady_load(
        tap.url("/v1/chat/completions"),
        want_short,
        2,
        Duration::from_millis(10),
    );
    // ~43 frames 100 ms apart: about 4.2 s, far past the drain window.
    let opened = Arc::new(AtomicUsize::new(0));
    let streams = open_streams(&tap.url("/v1/chat/completions"), 100, &opened);
    let deadline = Instant::now() + Duration::from_secs(10);
    while opened.load(Ordering::SeqCst) < STREAMS {
        assert!(Instant::now() < deadline, "streams did not open");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    tap.signal("TERM");
    let signalled = Instant::now();
    let status = tap.wait_exit(Duration::from_millis(drain_ms + FLUSH_TIMEOUT_MS));
    let exited = signalled.elapsed();
    assert!(status.success(), "exit {status}: {}", tap.log_text());
    assert!(tap.log_text().contains("Drain window over"));

    // Every stream was cut, after a prefix of the real bytes.
    let mut received = Vec::new();
    for (i, s) in streams.into_iter().enumerate() {
        let (got, cut) = tokio::time::timeout(Duration::from_secs(5), s.task)
            .await
            .expect("a stream outlived the process")
            .unwrap();
        assert!(
            cut.is_some(),
            "stream {i}: a 4 s stream finished inside a 0.5 s drain window"
        );
        assert!(
            !got.is_empty() && got.len() < want_stream.len() && want_stream.starts_with(&got),
            "stream {i}: {} bytes, not a prefix of the mock's {}",
            got.len(),
            want_stream.len()
        );
        received.push(got.len());
    }
    let (done, _errors) = load.finish().await;

    // Written before exit: the process is gone, the rows are there.
    let rows = spans(&db).await;
    let streamed: Vec<_> = rows.iter().filter(|r| r.0 == "stream").collect();
    assert_eq!(streamed.len(), STREAMS, "{rows:?}");
    assert!(
        streamed
            .iter()
            .all(|r| r.3 == "cancelled" && r.4.as_deref() == Some("shutdown")),
        "{streamed:?}"
    );
    let short: BTreeSet<u64> = rows
        .iter()
        .filter(|r| r.0 == "short")
        .map(|r| r.1)
        .collect();
    let completed: BTreeSet<u64> = done.iter().map(|d| d.0).collect();
    assert_eq!(short, completed);
    assert_eq!(rows.len(), STREAMS + completed.len());
    eprintln!(
        "SIGTERM past a {drain_ms} ms drain: {STREAMS} streams cut after {received:?} of {} bytes, spans {:?}; exit 0 after {exited:?} \
         (bound {} ms); {} spans",
        want_stream.len(),
        streamed.iter().map(|r| (&r.3, &r.4)).collect::<Vec<_>>(),
        drain_ms + FLUSH_TIMEOUT_MS,
        rows.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_under_load_restarts_clean_and_loses_at_most_the_batch_window() {
    let mock = mock::MockProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spans.db");
    let cfg = tap_config(&mock, &db, 5_000);
    // Separate run directories: each run's log and ready line are its own.
    let run1 = dir.path().join("run1");
    let run2 = dir.path().join("run2");
    std::fs::create_dir_all(&run1).unwrap();
    std::fs::create_dir_all(&run2).unwrap();
    let mut tap = Llmtap::start(&run1, &cfg, &[]);
    let want_short = direct(&mock, false).await;

    let load = steady_load(
        tap.url("/v1/chat/completions"),
        want_short.clone(),
        4,
        Duration::from_millis(2),
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    tap.signal("KILL");
    let killed = Instant::now();
    let status = tap.wait_exit(Duration::from_secs(5));
    assert!(!status.success());
    let (done, errors) = load.finish().await;
    assert!(done.len() > 100, "too little load: {}", done.len());
    // What the kill left for recovery to replay.
    let wal = std::fs::metadata(dir.path().join("spans.db-wal"))
        .map(|m| m.len())
        .unwrap_or(0);

    // The next start on the same file is clean and serves.
    let restarting = Instant::now();
    let mut tap = Llmtap::start(&run2, &cfg, &[]);
    let restart = restarting.elapsed();
    {
        let mut c = sqlite(&db).await;
        let check: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(check, "ok");
    }
    let got = post_json(
        &client(),
        &tap.url("/v1/chat/completions"),
        &[("x-llmtap-property-kind", "after")],
        &chat(false),
    )
    .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, want_short);

    // Loss bounded by the batch window.
    let bound = Duration::from_millis(BATCH_INTERVAL_MS + MIN_FLUSH_GAP_MS) + MARGIN;
    let rows = spans(&db).await;
    let stored: BTreeSet<u64> = rows
        .iter()
        .filter(|r| r.0 == "short")
        .map(|r| r.1)
        .collect();
    let shorts = rows.iter().filter(|r| r.0 == "short").count();
    assert_eq!(shorts, stored.len(), "a span was written twice");
    let lost: Vec<&(u64, Instant)> = done.iter().filter(|d| !stored.contains(&d.0)).collect();
    let oldest_lost = lost
        .iter()
        .map(|d| killed.saturating_duration_since(d.1))
        .max()
        .unwrap_or_default();
    assert!(
        oldest_lost <= bound,
        "a request completed {oldest_lost:?} before the kill has no span (bound {bound:?})"
    );

    // The restarted llmtap records: the new request's span arrives.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !spans(&db).await.iter().any(|r| r.0 == "after") {
        assert!(
            Instant::now() < deadline,
            "the restarted llmtap records nothing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tap.signal("TERM");
    assert!(tap.wait_exit(Duration::from_secs(10)).success());
    {
        let mut c = sqlite(&db).await;
        let check: String = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(check, "ok");
    }
    eprintln!(
        "SIGKILL: {} requests completed before the kill ({errors} failed at or after it), {} spans \
         stored, {} lost, the oldest lost completed {oldest_lost:?} before the kill (bound {bound:?}); \
         WAL {wal} B at the kill; restart ready in {restart:?}, integrity ok",
        done.len(),
        stored.len(),
        lost.len()
    );
}

/// A connection that has sent nothing when the signal comes does not hold
/// the shutdown for the drain window: it has no exchange to finish.
#[tokio::test]
async fn a_silent_connection_does_not_hold_the_shutdown() {
    let drain_ms = 20_000;
    let mock = mock::MockProvider::start().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spans.db");
    let mut tap = Llmtap::start(dir.path(), &tap_config(&mock, &db, drain_ms), &[]);
    let silent = tokio::net::TcpStream::connect(&tap.addr).await.unwrap();
    // One exchange, so the connection above is surely accepted by now.
    let got = send(
        &client(),
        Method::POST,
        &tap.url("/v1/chat/completions"),
        &[("content-type", "application/json")],
        &chat(false),
    )
    .await;
    assert_eq!(got.status, 200);
    tap.signal("TERM");
    let signalled = Instant::now();
    let status = tap.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "{status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "exit took {:?} with a silent connection open",
        signalled.elapsed()
    );
    drop(silent);
}
