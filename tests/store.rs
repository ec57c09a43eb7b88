//! The store as replicas and a slow database see it, on whichever store the
//! harness runs (SQLite, or PostgreSQL with `LLMTAP_TEST_DATABASE_URL`):
//! several stores starting at once on one fresh database and then writing
//! concurrently (migrations once, rollups exact), and requests through
//! llmtap that keep succeeding while another connection stalls the store,
//! with every span landing once it is released.

mod common;
mod mock;

use std::time::{Duration, Instant};

use common::*;
use http::StatusCode;
use llmtap::output::store::{Bucket, StatsQuery, Store, StoreUrl};
use llmtap::record::span::{Span, SpanStatus};

const T0: i64 = 1_700_000_040_000_000; // a minute boundary

fn span(replica: i64, i: i64) -> Span {
    let mut s = Span::start(T0 + (i % 2) * 60_000_000 + (i % 50) * 1_000);
    s.name = "chat gpt-4o".into();
    s.operation_type = "llm_call".into();
    s.provider = "openai".into();
    s.model = Some(if i % 2 == 0 { "gpt-4o" } else { "gpt-4o-mini" }.into());
    s.status = if i % 10 == 0 {
        SpanStatus::Failed
    } else {
        SpanStatus::Completed
    };
    s.duration_ms = (1 + i % 300) as f64;
    s.input_tokens = Some(replica + 1);
    s.output_tokens = Some(2);
    s.cost_usd = Some(0.5);
    s
}

/// A fresh database of the harness's kind, and (for SQLite) the dir that
/// holds it.
async fn fresh_url() -> (String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = match pg_server() {
        Some(server) => fresh_pg_database(&server).await,
        None => format!("sqlite://{}/replicas.db", dir.path().display()),
    };
    (url, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_starting_at_once_migrate_once_and_keep_rollups_exact() {
    let (url, _dir) = fresh_url().await;
    let url = StoreUrl::parse(&url).unwrap();
    const REPLICAS: i64 = 4;
    const BATCHES: i64 = 10;
    const PER_BATCH: i64 = 100;
    // Every replica opens (migrating) at the same moment, then writes its
    // batches while the others write theirs into the same rollup rows.
    let start = std::sync::Arc::new(tokio::sync::Barrier::new(REPLICAS as usize));
    let mut tasks = tokio::task::JoinSet::new();
    for r in 0..REPLICAS {
        let url = url.clone();
        let start = start.clone();
        tasks.spawn(async move {
            start.wait().await;
            let store = Store::open(&url).await.unwrap();
            let mut prev: Vec<Span> = Vec::new();
            for b in 0..BATCHES {
                let spans: Vec<Span> = (0..PER_BATCH).map(|i| span(r, b * PER_BATCH + i)).collect();
                let batch = match b {
                    // A batch holding one span twice: stored and counted once.
                    5 => [spans.as_slice(), &spans[7..8]].concat(),
                    // A batch half of whose spans an earlier batch stored.
                    6 => [&prev[..50], spans.as_slice()].concat(),
                    _ => spans.clone(),
                };
                store.write_spans(&batch).await.unwrap();
                // A retried batch (the batcher's retry after a lost commit
                // acknowledgement) is stored and counted once.
                if b == 3 {
                    store.write_spans(&spans).await.unwrap();
                }
                prev = spans;
            }
            store.close().await;
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }

    let store = Store::open(&url).await.unwrap();
    let n = REPLICAS * BATCHES * PER_BATCH;
    let spans = store.all_spans().await.unwrap();
    assert_eq!(spans.len() as i64, n);
    let st = store
        .stats(&StatsQuery {
            from_us: T0 - 3_600_000_000,
            to_us: T0 + 3_600_000_000,
            bucket: Bucket::Minute,
        })
        .await
        .unwrap();
    assert_eq!(st.totals.requests, n);
    assert_eq!(st.totals.errors, n / 10);
    // Replica r wrote r + 1 input tokens per span.
    let input: i64 = (0..REPLICAS).map(|r| (r + 1) * BATCHES * PER_BATCH).sum();
    assert_eq!(st.totals.input_tokens, input);
    assert_eq!(st.totals.output_tokens, 2 * n);
    assert_eq!(st.totals.cost_usd, Some(0.5 * n as f64));
    assert_eq!(st.totals.latency_ms.max, Some(300.0));
    let per_minute: i64 = st.series.iter().map(|p| p.requests).sum();
    assert_eq!(per_minute, n);
    // Two minutes of spans, half of them in each.
    let at = |t: i64| st.series.iter().find(|p| p.start_us == t).unwrap().requests;
    assert_eq!((at(T0), at(T0 + 60_000_000)), (n / 2, n / 2));
    let by_hour = store
        .stats(&StatsQuery {
            from_us: T0 - 3_600_000_000,
            to_us: T0 + 3_600_000_000,
            bucket: Bucket::Hour,
        })
        .await
        .unwrap();
    assert_eq!(by_hour.totals.requests, n);
    assert_eq!(by_hour.totals.input_tokens, input);
    // The salt is created once and shared.
    let salt = store.salt().await.unwrap();
    assert_eq!(salt.len(), 32);
    store.close().await;
    let again = Store::open(&url).await.unwrap();
    assert_eq!(again.salt().await.unwrap(), salt);
    again.close().await;
}

/// Holds the store's write lock from another connection until dropped
/// (PostgreSQL: `LOCK TABLE spans IN ACCESS EXCLUSIVE MODE`; SQLite: an
/// exclusive transaction on the file).
enum Stall {
    Pg(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

impl Stall {
    async fn start(h: &Harness) -> Stall {
        use sqlx::Connection;
        if h.on_postgres() {
            let mut c = sqlx::PgConnection::connect(&h.database_url).await.unwrap();
            sqlx::raw_sql("BEGIN; LOCK TABLE spans IN ACCESS EXCLUSIVE MODE")
                .execute(&mut c)
                .await
                .unwrap();
            Stall::Pg(c)
        } else {
            let mut c = sqlx::SqliteConnection::connect(&h.database_url)
                .await
                .unwrap();
            sqlx::raw_sql("BEGIN EXCLUSIVE")
                .execute(&mut c)
                .await
                .unwrap();
            Stall::Sqlite(c)
        }
    }

    /// Spans stored, read inside the stalling transaction.
    async fn count(&mut self) -> i64 {
        let q = "SELECT COUNT(*) FROM spans";
        match self {
            Stall::Pg(c) => sqlx::query_scalar(q).fetch_one(c).await.unwrap(),
            Stall::Sqlite(c) => sqlx::query_scalar(q).fetch_one(c).await.unwrap(),
        }
    }

    async fn release(self) {
        match self {
            Stall::Pg(mut c) => {
                sqlx::raw_sql("ROLLBACK").execute(&mut c).await.unwrap();
            }
            Stall::Sqlite(mut c) => {
                sqlx::raw_sql("ROLLBACK").execute(&mut c).await.unwrap();
            }
        }
    }
}

#[tokio::test]
async fn requests_pass_while_the_store_is_stalled_and_spans_land_after() {
    let h = Harness::start().await;
    let c = client();
    let body = chat_body(false, false);
    // The store exists and is migrated.
    let got = post(&c, &h.url("/v1/chat/completions"), &[], &body).await;
    assert_eq!(got.status, StatusCode::OK);
    h.spans(1).await;

    let mut stall = Stall::start(&h).await;
    const N: usize = 60;
    let mut slowest = Duration::ZERO;
    let stalled_at = Instant::now();
    for i in 0..N {
        let stream = i % 2 == 0;
        let t = Instant::now();
        let got = post(
            &c,
            &h.url("/v1/chat/completions"),
            &[],
            &chat_body(stream, stream),
        )
        .await;
        slowest = slowest.max(t.elapsed());
        assert_eq!(got.status, StatusCode::OK, "request {i} during the stall");
        assert!(!got.body.is_empty());
    }
    // Past several batch intervals (20 ms) and the writer's attempts, the
    // store still holds only the first span: the writes are waiting.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(stall.count().await, 1, "the stalled store took writes");
    let stalled_for = stalled_at.elapsed();
    // The request path did not wait on the store: every request answered
    // as fast as the mock does (well under the stall).
    assert!(
        slowest < Duration::from_millis(500),
        "slowest request {slowest:?} while the store was stalled for {stalled_for:?}"
    );
    stall.release().await;
    let spans = h.spans(N + 1).await;
    assert_eq!(spans.len(), N + 1);
    assert!(spans.iter().all(|s| s["status"] == "completed"));
}

/// A varied set of spans: traces of several spans, NULLs, failures, tool
/// calls, properties (one not JSON), bodies, ties on start time.
fn varied() -> Vec<Span> {
    let mut out = Vec::new();
    for t in 0..40i64 {
        let trace_id = format!("{:032x}", 0xabc000 + t);
        for k in 0..(1 + t % 4) {
            let mut s = Span::start(T0 + (t / 2) * 7_000_000 + k * 1000);
            s.trace_id.clone_from(&trace_id);
            s.name = format!("span {k}");
            s.operation_type = if k == 2 { "tool_call" } else { "llm_call" }.into();
            s.provider = if t % 3 == 0 { "anthropic" } else { "openai" }.into();
            s.route = "/v1".into();
            s.method = "POST".into();
            s.path = "/v1/chat/completions".into();
            s.model = (k != 2).then(|| ["gpt-4o", "claude-x", "zeta"][(t % 3) as usize].into());
            s.stream = t % 2 == 0;
            s.http_status = (k != 2).then_some(if t % 7 == 0 { 500 } else { 200 });
            s.status = match (t % 7, t % 11) {
                (0, _) => SpanStatus::Failed,
                (_, 0) => SpanStatus::Cancelled,
                _ => SpanStatus::Completed,
            };
            s.error_message = (t % 7 == 0).then(|| format!("Upstream 50% Broke #{t}"));
            s.duration_ms = (t * 37 % 900) as f64 + 0.25;
            s.end_time_us = s.start_time_us + (s.duration_ms * 1000.0) as i64;
            s.ttft_ms = s.stream.then_some(12.5);
            s.input_tokens = (t % 5 != 0).then_some(t * 3);
            s.output_tokens = Some(k + 1);
            s.tokens_estimated = t % 4 == 0;
            s.cost_usd = (t % 3 != 2).then_some(0.001 * t as f64);
            s.response_id = Some(format!("chatcmpl-{t}-{k}"));
            s.conversation_id = (t % 2 == 1).then(|| format!("conv-{}", t % 4));
            s.session_id = Some(format!("sess-{}", t % 3));
            s.user_id = (t % 6 == 0).then(|| "u-1".into());
            s.properties = match t % 4 {
                0 => Some(r#"{"team":"search","gen_ai.tool.name":"w"}"#.into()),
                1 => Some(r#"{"team":"ads","n":1}"#.into()),
                2 => Some("not json".into()),
                _ => None,
            };
            s.request_body = Some(format!("{{\"t\":{t}}}"));
            s.response_body = (k == 0).then(|| "é ✓ \u{1F600}".into());
            out.push(s);
        }
    }
    out
}

#[tokio::test]
async fn both_stores_give_the_same_answers() {
    let spans = varied();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open(&StoreUrl::Sqlite(dir.path().join("same.db")))
        .await
        .unwrap();
    let (url, _dir) = fresh_url().await;
    let other = Store::open(&StoreUrl::parse(&url).unwrap()).await.unwrap();
    for s in [&sqlite, &other] {
        s.write_spans(&spans).await.unwrap();
    }
    // Every span round-trips unchanged.
    let mut want = spans.clone();
    want.sort_by(|a, b| (a.start_time_us, &a.span_id).cmp(&(b.start_time_us, &b.span_id)));
    assert_eq!(sqlite.all_spans().await.unwrap(), want);
    assert_eq!(other.all_spans().await.unwrap(), want);

    use llmtap::output::store::{SpanFilter, TraceQuery};
    let filters = [
        SpanFilter::default(),
        SpanFilter {
            status: vec!["failed".into(), "cancelled".into()],
            ..SpanFilter::default()
        },
        SpanFilter {
            model: vec!["zeta".into()],
            provider: vec!["openai".into()],
            min_duration_ms: Some(100.0),
            ..SpanFilter::default()
        },
        SpanFilter {
            properties: vec![("team".into(), "search".into())],
            ..SpanFilter::default()
        },
        SpanFilter {
            properties: vec![("gen_ai.tool.name".into(), "w".into())],
            ..SpanFilter::default()
        },
        SpanFilter {
            q: Some("50% broke".into()),
            ..SpanFilter::default()
        },
        SpanFilter {
            q: Some("CHATCMPL-3-".into()),
            from_us: Some(T0 + 20_000_000),
            to_us: Some(T0 + 120_000_000),
            ..SpanFilter::default()
        },
        SpanFilter {
            session_id: Some("sess-1".into()),
            conversation_id: Some("conv-1".into()),
            operation_type: vec!["llm_call".into()],
            ..SpanFilter::default()
        },
    ];
    for f in &filters {
        // The trace list, page by page.
        let mut after = None;
        let mut pages = 0;
        loop {
            let q = TraceQuery {
                filter: f.clone(),
                limit: 4,
                after: after.clone(),
            };
            let a = sqlite.traces(&q).await.unwrap();
            let b = other.traces(&q).await.unwrap();
            assert_eq!(json(&a.traces), json(&b.traces), "{f:?}");
            assert_eq!(a.next, b.next, "{f:?}");
            pages += 1;
            match a.next {
                Some(n) if pages < 100 => after = Some(n),
                _ => break,
            }
        }
        // The export.
        let a = sqlite.spans_page(f, None, 1000, false).await.unwrap();
        let b = other.spans_page(f, None, 1000, false).await.unwrap();
        assert_eq!(a, b, "{f:?}");
    }
    // A filter that matches must match something, or the loop proves little.
    let q = TraceQuery {
        filter: filters[3].clone(),
        limit: 50,
        after: None,
    };
    assert!(!other.traces(&q).await.unwrap().traces.is_empty());
    let q = TraceQuery {
        filter: filters[5].clone(),
        limit: 50,
        after: None,
    };
    assert!(!other.traces(&q).await.unwrap().traces.is_empty());
    for s in spans.iter().step_by(7) {
        assert_eq!(
            sqlite.span(&s.span_id).await.unwrap(),
            other.span(&s.span_id).await.unwrap()
        );
        assert_eq!(
            sqlite.trace(&s.trace_id).await.unwrap(),
            other.trace(&s.trace_id).await.unwrap()
        );
    }
    for bucket in [
        Bucket::Minute,
        Bucket::FiveMinutes,
        Bucket::Hour,
        Bucket::Day,
    ] {
        let q = StatsQuery {
            from_us: T0 - 7_200_000_000 + 60_000_000,
            to_us: T0 + 7_200_000_000 - 60_000_000,
            bucket,
        };
        let a = sqlite.stats(&q).await.unwrap();
        let b = other.stats(&q).await.unwrap();
        assert_eq!(json(&a), json(&b), "{bucket:?}");
        assert!(a.totals.requests > 0);
    }
    sqlite.close().await;
    other.close().await;
}

/// JSON of anything serialisable, with floats rounded to 9 significant
/// digits (sums may add up in a different order on each database).
fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    fn round(v: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::Number(n) if n.is_f64() => {
                let f = n.as_f64().unwrap_or_default();
                let r: f64 = format!("{f:.9e}").parse().unwrap();
                serde_json::json!(r)
            }
            Value::Array(a) => Value::Array(a.into_iter().map(round).collect()),
            Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, round(v))).collect()),
            other => other,
        }
    }
    round(serde_json::to_value(v).unwrap())
}

/// A span with every column set (and one with every nullable column NULL)
/// is written to a fresh store and read back equal; on PostgreSQL both
/// write paths run: the first batch by `COPY`, the second (which repeats a
/// stored span) by `INSERT … UNNEST`.
#[tokio::test]
async fn a_span_with_every_column_set_round_trips() {
    let (url, _dir) = fresh_url().await;
    let store = Store::open(&StoreUrl::parse(&url).unwrap()).await.unwrap();
    let full = llmtap::record::span::schema::every_column_set();
    let empty = Span::start(T0);
    store
        .write_spans(&[full.clone(), empty.clone()])
        .await
        .unwrap();
    assert_eq!(
        store.span(&full.span_id).await.unwrap().as_ref(),
        Some(&full)
    );
    assert_eq!(
        store.span(&empty.span_id).await.unwrap().as_ref(),
        Some(&empty)
    );
    let mut again = llmtap::record::span::schema::every_column_set();
    again.trace_id = "t-again".into();
    again.span_id = "s-again".into();
    store
        .write_spans(&[full.clone(), again.clone()])
        .await
        .unwrap();
    assert_eq!(
        store.span(&again.span_id).await.unwrap().as_ref(),
        Some(&again)
    );
    assert_eq!(store.all_spans().await.unwrap().len(), 3);
    // The tests' reader sees every column of the row.
    let json = span_json(&full);
    assert_eq!(json.as_object().unwrap().len(), COLUMNS.len());
    assert_eq!(json["stream"], 1);
    assert_eq!(json["status"], "cancelled");
    store.close().await;
}
