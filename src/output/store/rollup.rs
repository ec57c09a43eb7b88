//! Rollups: per-minute and per-hour aggregates of the spans, kept
//! up to date in the transaction that writes the spans; `GET /api/stats`
//! reads them (`stats.rs`).
//!
//! Owns the `rollup_minute` / `rollup_hour` / `rollup_state` tables
//! (migration 0002): their columns ([`Agg`], one latency and one TTFT
//! histogram per row, `histogram.rs`) and their writes.
//! [`apply_stored`] is called once at the end of every span-writing
//! transaction with the rows the raw insert reports it stored (rowid and
//! span): it counts those from memory, plus any older rows past the mark
//! it reads back (the backlog), and moves the mark past them. When the
//! backlog is longer than one step, and at start-up ([`catch_up`]), [`apply`]
//! does the counting instead: it reads back the rows past
//! `rollup_state.high_water` (the batch just
//! inserted, plus at most [`BACKLOG_STEP`] older rows not yet counted, such
//! as spans stored before this migration), aggregates them in memory by
//! (minute, operation type, provider, model, status) and issues a few
//! multi-row `INSERT … ON CONFLICT DO UPDATE` upserts, then moves the mark.
//! Either way only rows actually stored are counted (a span of the batch
//! that was stored already is skipped by the insert and not reported):
//! every stored span is counted once, and only once. The mark relies on SQLite
//! giving new rows rowids above every existing one, which holds as long as
//! the newest rows are never deleted.
//!
//! On PostgreSQL, where replicas commit concurrently and sequence values
//! would not give a safe mark, [`apply_pg`] counts exactly the rows the
//! transaction's own `INSERT … ON CONFLICT DO NOTHING RETURNING` stored, and
//! merges them with additive upserts (`rollup_state` does not exist there).
//! Both backends merge with the one upsert ([`upserts`]), written over the
//! dialect seam (`sql.rs`).
//!
//! Never called from the request path; never formats a value into SQL.

use std::collections::HashMap;

use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection, SqlitePool};

use super::histogram::{bin, BINS};
use super::sql::{Arg, Dialect, Sql};
use super::StoreError;
use crate::record::span::Span;

pub(super) const MINUTE_US: i64 = 60_000_000;
pub(super) const HOUR_US: i64 = 3_600_000_000;
pub(super) const DAY_US: i64 = 86_400_000_000;
/// Most not-yet-counted rows beyond the batch one write also rolls up.
pub const BACKLOG_STEP: usize = 20_000;
/// Rows per upsert statement (about 150 bound values each).
const ROWS_PER_UPSERT: usize = 100;

// === impl Agg ===

/// Sums over a set of spans (one rollup row, or a merge of many).
#[derive(Debug, Clone, PartialEq)]
pub struct Agg {
    pub span_count: i64,
    pub duration_sum: f64,
    pub duration_max: f64,
    pub ttft_count: i64,
    pub ttft_sum: f64,
    pub ttft_max: f64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cached_input_tokens: i64,
    pub cache_write_tokens: i64,
    pub reasoning_tokens: i64,
    pub tokens_estimated: i64,
    pub cost_usd: f64,
    pub priced: i64,
    pub unpriced: i64,
    pub lat: [i64; BINS],
    pub ttft: [i64; BINS],
}

impl Default for Agg {
    fn default() -> Self {
        Agg {
            span_count: 0,
            duration_sum: 0.0,
            duration_max: 0.0,
            ttft_count: 0,
            ttft_sum: 0.0,
            ttft_max: 0.0,
            input_tokens: 0,
            output_tokens: 0,
            cached_input_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
            tokens_estimated: 0,
            cost_usd: 0.0,
            priced: 0,
            unpriced: 0,
            lat: [0; BINS],
            ttft: [0; BINS],
        }
    }
}

/// The span columns a rollup needs.
struct Fact {
    start_time: i64,
    operation_type: String,
    provider: String,
    model: Option<String>,
    status: String,
    duration_ms: f64,
    ttft_ms: Option<f64>,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
    cached_input_tokens: Option<i64>,
    cache_write_tokens: Option<i64>,
    reasoning_tokens: Option<i64>,
    tokens_estimated: bool,
    cost_usd: Option<f64>,
}

impl Fact {
    fn from_row(r: &SqliteRow) -> Result<Fact, sqlx::Error> {
        Ok(Fact {
            start_time: r.try_get("start_time")?,
            operation_type: r.try_get("operation_type")?,
            provider: r.try_get("provider")?,
            model: r.try_get("model")?,
            status: r.try_get("status")?,
            duration_ms: r.try_get("duration_ms")?,
            ttft_ms: r.try_get("ttft_ms")?,
            input_tokens: r.try_get("input_tokens")?,
            output_tokens: r.try_get("output_tokens")?,
            cached_input_tokens: r.try_get("cached_input_tokens")?,
            cache_write_tokens: r.try_get("cache_write_tokens")?,
            reasoning_tokens: r.try_get("reasoning_tokens")?,
            tokens_estimated: r.try_get("tokens_estimated")?,
            cost_usd: r.try_get("cost_usd")?,
        })
    }
}

impl Fact {
    /// The facts of a span just written (PostgreSQL counts the spans its
    /// INSERT … RETURNING reports as stored).
    fn from_span(s: &Span) -> Fact {
        Fact {
            start_time: s.start_time_us,
            operation_type: s.operation_type.clone(),
            provider: s.provider.clone(),
            model: s.model.clone(),
            status: s.status.as_str().to_string(),
            duration_ms: s.duration_ms,
            ttft_ms: s.ttft_ms,
            input_tokens: s.input_tokens,
            output_tokens: s.output_tokens,
            cached_input_tokens: s.cached_input_tokens,
            cache_write_tokens: s.cache_write_tokens,
            reasoning_tokens: s.reasoning_tokens,
            tokens_estimated: s.tokens_estimated,
            cost_usd: s.cost_usd,
        }
    }
}

impl Agg {
    fn add(&mut self, f: &Fact) {
        self.span_count += 1;
        self.duration_sum += f.duration_ms;
        self.duration_max = self.duration_max.max(f.duration_ms);
        self.lat[bin(f.duration_ms)] += 1;
        if let Some(t) = f.ttft_ms {
            self.ttft_count += 1;
            self.ttft_sum += t;
            self.ttft_max = self.ttft_max.max(t);
            self.ttft[bin(t)] += 1;
        }
        self.input_tokens += f.input_tokens.unwrap_or(0);
        self.output_tokens += f.output_tokens.unwrap_or(0);
        self.cached_input_tokens += f.cached_input_tokens.unwrap_or(0);
        self.cache_write_tokens += f.cache_write_tokens.unwrap_or(0);
        self.reasoning_tokens += f.reasoning_tokens.unwrap_or(0);
        self.tokens_estimated += i64::from(f.tokens_estimated);
        match f.cost_usd {
            Some(c) => {
                self.cost_usd += c;
                self.priced += 1;
            }
            None => {
                let billed = matches!(f.operation_type.as_str(), "llm_call" | "embedding");
                if billed && (f.input_tokens.is_some() || f.output_tokens.is_some()) {
                    self.unpriced += 1;
                }
            }
        }
    }

    /// Adds another aggregate into this one.
    pub fn merge(&mut self, o: &Agg) {
        self.span_count += o.span_count;
        self.duration_sum += o.duration_sum;
        self.duration_max = self.duration_max.max(o.duration_max);
        self.ttft_count += o.ttft_count;
        self.ttft_sum += o.ttft_sum;
        self.ttft_max = self.ttft_max.max(o.ttft_max);
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.cached_input_tokens += o.cached_input_tokens;
        self.cache_write_tokens += o.cache_write_tokens;
        self.reasoning_tokens += o.reasoning_tokens;
        self.tokens_estimated += o.tokens_estimated;
        self.cost_usd += o.cost_usd;
        self.priced += o.priced;
        self.unpriced += o.unpriced;
        for i in 0..BINS {
            self.lat[i] += o.lat[i];
            self.ttft[i] += o.ttft[i];
        }
    }
}

/// Metric columns after the key, in `Agg` order; `true` = kept as a max.
pub(super) const METRICS: &[(&str, bool)] = &[
    ("span_count", false),
    ("duration_sum", false),
    ("duration_max", true),
    ("ttft_count", false),
    ("ttft_sum", false),
    ("ttft_max", true),
    ("input_tokens", false),
    ("output_tokens", false),
    ("cached_input_tokens", false),
    ("cache_write_tokens", false),
    ("reasoning_tokens", false),
    ("tokens_estimated", false),
    ("cost_usd", false),
    ("priced", false),
    ("unpriced", false),
];
const KEY: &str = "bucket, operation_type, provider, model, status";

pub(super) fn hist_columns() -> impl Iterator<Item = String> {
    (0..BINS)
        .map(|i| format!("lat_{i:02}"))
        .chain((0..BINS).map(|i| format!("ttft_{i:02}")))
}

/// `bucket, …, span_count, …, lat_00, …, ttft_63`.
fn all_columns() -> String {
    let mut cols: Vec<String> = KEY.split(", ").map(str::to_string).collect();
    cols.extend(METRICS.iter().map(|(c, _)| c.to_string()));
    cols.extend(hist_columns());
    cols.join(", ")
}

// === write side ===

/// (bucket start, operation type, provider, model or '', status).
type Key = (i64, String, String, String, String);

pub(super) fn floor_to(t: i64, size: i64) -> i64 {
    t.div_euclid(size) * size
}

/// Rolls up the spans stored past the mark (up to `batch` +
/// [`BACKLOG_STEP`] of them) and moves the mark, inside the caller's
/// transaction. Returns how many spans were rolled up.
pub(super) async fn apply(conn: &mut SqliteConnection, batch: usize) -> Result<usize, sqlx::Error> {
    let mark = read_mark(conn).await?;
    let (facts, last) =
        stored_between(conn, mark, i64::MAX, batch.saturating_add(BACKLOG_STEP)).await?;
    let Some(last) = last else {
        return Ok(0);
    };
    let n = facts.len();
    count(conn, facts.into_iter(), last).await?;
    Ok(n)
}

/// [`apply`] for a batch whose stored rows the caller knows (`stored`:
/// rowids in increasing order, and the spans they hold): those are counted
/// from memory, without reading them back. Rows past the mark that are
/// older than the batch (the backlog) are still read; when there are more
/// of them than [`BACKLOG_STEP`], this falls back to [`apply`], which
/// counts in rowid order and leaves the batch for later calls. Returns how
/// many spans were rolled up.
pub(super) async fn apply_stored(
    conn: &mut SqliteConnection,
    stored: &[(i64, &Span)],
) -> Result<usize, sqlx::Error> {
    let (Some(&(first, _)), Some(&(last, _))) = (stored.first(), stored.last()) else {
        return apply(conn, 0).await;
    };
    let mark = read_mark(conn).await?;
    let backlog = if mark + 1 < first {
        let (facts, _) = stored_between(conn, mark, first, BACKLOG_STEP).await?;
        if facts.len() >= BACKLOG_STEP {
            return apply(conn, stored.len()).await;
        }
        facts
    } else {
        Vec::new()
    };
    let n = backlog.len() + stored.len();
    let facts = backlog
        .into_iter()
        .chain(stored.iter().map(|(_, s)| Fact::from_span(s)));
    count(conn, facts, last.max(mark)).await?;
    Ok(n)
}

/// The rollup mark: every span with a rowid up to it is counted.
async fn read_mark(conn: &mut SqliteConnection) -> Result<i64, sqlx::Error> {
    let mark = sqlx::query_scalar("SELECT high_water FROM rollup_state WHERE id = 1")
        .fetch_optional(&mut *conn)
        .await?;
    Ok(mark.unwrap_or(0))
}

/// The facts of the stored spans with `after < rowid < before`, in rowid
/// order, at most `limit` of them, and the last one's rowid.
async fn stored_between(
    conn: &mut SqliteConnection,
    after: i64,
    before: i64,
    limit: usize,
) -> Result<(Vec<Fact>, Option<i64>), sqlx::Error> {
    let rows = sqlx::query(
        "SELECT rowid AS rid, start_time, operation_type, provider, model, status, duration_ms, \
         ttft_ms, input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, \
         reasoning_tokens, tokens_estimated, cost_usd \
         FROM spans WHERE rowid > ? AND rowid < ? ORDER BY rowid LIMIT ?",
    )
    .bind(after)
    .bind(before)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?;
    let last = rows.last().map(|r| r.try_get("rid")).transpose()?;
    let facts = rows
        .iter()
        .map(Fact::from_row)
        .collect::<Result<Vec<Fact>, sqlx::Error>>()?;
    Ok((facts, last))
}

/// Adds `facts` to the minute and hour rollups and moves the mark to
/// `mark`.
async fn count(
    conn: &mut SqliteConnection,
    facts: impl Iterator<Item = Fact>,
    mark: i64,
) -> Result<(), sqlx::Error> {
    let (minutes, hours) = aggregate(facts);
    for sql in upserts(Dialect::Sqlite, "rollup_minute", minutes)
        .into_iter()
        .chain(upserts(Dialect::Sqlite, "rollup_hour", hours))
    {
        super::sql::execute_sqlite(conn, sql).await?;
    }
    sqlx::query(
        "INSERT INTO rollup_state (id, high_water) VALUES (1, ?) \
         ON CONFLICT (id) DO UPDATE SET high_water = excluded.high_water",
    )
    .bind(mark)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Minute and hour aggregates of `facts`.
fn aggregate(facts: impl Iterator<Item = Fact>) -> (HashMap<Key, Agg>, HashMap<Key, Agg>) {
    let mut minutes: HashMap<Key, Agg> = HashMap::new();
    for f in facts {
        let key = (
            floor_to(f.start_time, MINUTE_US),
            f.operation_type.clone(),
            f.provider.clone(),
            f.model.clone().unwrap_or_default(),
            f.status.clone(),
        );
        minutes.entry(key).or_default().add(&f);
    }
    let mut hours: HashMap<Key, Agg> = HashMap::new();
    for (k, a) in &minutes {
        let key = (
            floor_to(k.0, HOUR_US),
            k.1.clone(),
            k.2.clone(),
            k.3.clone(),
            k.4.clone(),
        );
        hours.entry(key).or_default().merge(a);
    }
    (minutes, hours)
}

/// PostgreSQL: adds the spans this transaction just stored (`stored`:
/// exactly the rows its INSERT reported, so a span is counted once however
/// many replicas or retries send it) into the rollups, in the caller's
/// transaction. The upserts merge additively (`+`, `GREATEST`), so replicas
/// writing the same bucket at once stay exact, and take their row locks in
/// key order (minutes, then hours, each sorted), so two of them cannot
/// deadlock.
pub(super) async fn apply_pg(
    conn: &mut sqlx::PgConnection,
    stored: &[&Span],
) -> Result<(), sqlx::Error> {
    if stored.is_empty() {
        return Ok(());
    }
    let (minutes, hours) = aggregate(stored.iter().map(|s| Fact::from_span(s)));
    for sql in upserts(Dialect::Postgres, "rollup_minute", minutes)
        .into_iter()
        .chain(upserts(Dialect::Postgres, "rollup_hour", hours))
    {
        super::sql::execute_pg(conn, sql).await?;
    }
    Ok(())
}

/// The statements that add `aggs` into `table` (`rollup_minute` or
/// `rollup_hour`), [`ROWS_PER_UPSERT`] rows each: counts and sums are added,
/// maxima kept ([`Dialect::greatest`]). Rows go in key order, so two
/// PostgreSQL replicas writing the same buckets take their row locks in the
/// same order and cannot deadlock.
fn upserts(dialect: Dialect, table: &'static str, aggs: HashMap<Key, Agg>) -> Vec<Sql> {
    let mut entries: Vec<(Key, Agg)> = aggs.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let greatest = dialect.greatest();
    let update: Vec<String> = METRICS
        .iter()
        .map(|(c, max)| {
            if *max {
                format!("{c} = {greatest}(r.{c}, excluded.{c})")
            } else {
                format!("{c} = r.{c} + excluded.{c}")
            }
        })
        .chain(hist_columns().map(|c| format!("{c} = r.{c} + excluded.{c}")))
        .collect();
    let update = update.join(", ");
    let mut statements = Vec::with_capacity(entries.len().div_ceil(ROWS_PER_UPSERT));
    for chunk in entries.chunks(ROWS_PER_UPSERT) {
        let mut sql = Sql::new(
            dialect,
            format!("INSERT INTO {table} AS r ({}) VALUES ", all_columns()),
        );
        for (n, (k, a)) in chunk.iter().enumerate() {
            sql.push(if n == 0 { "(" } else { ", (" });
            let values: [Arg; 20] = [
                k.0.into(),
                k.1.as_str().into(),
                k.2.as_str().into(),
                k.3.as_str().into(),
                k.4.as_str().into(),
                a.span_count.into(),
                a.duration_sum.into(),
                a.duration_max.into(),
                a.ttft_count.into(),
                a.ttft_sum.into(),
                a.ttft_max.into(),
                a.input_tokens.into(),
                a.output_tokens.into(),
                a.cached_input_tokens.into(),
                a.cache_write_tokens.into(),
                a.reasoning_tokens.into(),
                a.tokens_estimated.into(),
                a.cost_usd.into(),
                a.priced.into(),
                a.unpriced.into(),
            ];
            let hist = a.lat.iter().chain(a.ttft.iter()).map(|v| Arg::Int(*v));
            for (i, v) in values.into_iter().chain(hist).enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind(v);
            }
            sql.push(")");
        }
        sql.push(&format!(" ON CONFLICT ({KEY}) DO UPDATE SET {update}"));
        statements.push(sql);
    }
    statements
}

/// Rolls up every stored span not yet counted (after migration 0002 on a
/// store that already holds spans), [`BACKLOG_STEP`] spans per transaction.
pub(super) async fn catch_up(pool: &SqlitePool) -> Result<usize, StoreError> {
    let mut total = 0;
    loop {
        // IMMEDIATE: take the write lock before reading the mark, so a
        // concurrent writer cannot make this transaction's snapshot stale.
        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
        let n = apply(&mut tx, 0).await?;
        tx.commit().await?;
        total += n;
        // Each full step moves the mark forward; a short one means done.
        if n < BACKLOG_STEP {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::sql::Db;
    use super::super::stats::{stats, Bucket, StatsQuery};
    use super::*;

    fn span(
        start_us: i64,
        model: &str,
        status: crate::record::span::SpanStatus,
        ms: f64,
    ) -> crate::record::span::Span {
        let mut s = crate::record::span::Span::start(start_us);
        s.name = format!("chat {model}");
        s.operation_type = "llm_call".into();
        s.provider = "openai".into();
        s.model = Some(model.into());
        s.status = status;
        s.duration_ms = ms;
        s.end_time_us = start_us + (ms * 1000.0) as i64;
        s.input_tokens = Some(10);
        s.output_tokens = Some(5);
        s.cost_usd = (model != "unpriced").then_some(0.25);
        s
    }

    #[tokio::test]
    async fn writes_keep_rollups_exact_and_stats_read_them() {
        use crate::record::span::SpanStatus::*;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let store = super::super::sqlite::SqliteStore::open(&path)
            .await
            .unwrap();
        let t0 = 1_700_000_040_000_000; // a minute boundary
        let mut spans = vec![
            span(t0, "gpt-4o", Completed, 100.0),
            span(t0 + 1_000_000, "gpt-4o", Failed, 400.0),
            span(t0 + 61_000_000, "unpriced", Completed, 30.0),
        ];
        spans[0].ttft_ms = Some(20.0);
        let mut tool = span(t0 + 2_000_000, "x", Completed, 5.0);
        tool.operation_type = "tool_call".into();
        tool.model = None;
        tool.cost_usd = None;
        spans.push(tool);
        store.write_spans(&spans).await.unwrap();
        // Re-sent spans are skipped by the insert, and not counted again.
        store.write_spans(&spans[..2]).await.unwrap();
        // A span stored behind the writer's back (an older llmtap) is
        // picked up by the next write.
        sqlx::query(
            "INSERT INTO spans (trace_id, span_id, name, operation_type, provider, route, method, path, model, stream, status, start_time, end_time, duration_ms, tokens_estimated, input_tokens) \
             VALUES ('t', 'raw', 'chat gpt-4o', 'llm_call', 'openai', '/v1', 'POST', '/v1/x', 'gpt-4o', 0, 'completed', ?, ?, 50.0, 1, 7)",
        )
        .bind(t0 + 3_000_000)
        .bind(t0 + 3_050_000)
        .execute(store.pool())
        .await
        .unwrap();
        store.write_spans::<Span>(&[]).await.unwrap();
        let (n, tokens): (i64, i64) =
            sqlx::query_as("SELECT SUM(span_count), SUM(input_tokens) FROM rollup_minute")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!((n, tokens), (5, 47));
        let hours: i64 = sqlx::query_scalar("SELECT SUM(span_count) FROM rollup_hour")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(hours, 5);

        let q = StatsQuery {
            from_us: t0 - 3_600_000_000,
            to_us: t0 + 3_600_000_000,
            bucket: Bucket::Minute,
        };
        let st = stats(Db::Sqlite(store.pool()), &q).await.unwrap();
        assert_eq!(st.totals.requests, 4);
        assert_eq!(st.tool_calls, 1);
        assert_eq!(st.totals.errors, 1);
        assert_eq!(st.totals.error_rate, 0.25);
        assert_eq!(st.totals.input_tokens, 37);
        assert_eq!(st.totals.output_tokens, 15);
        assert_eq!(st.totals.cost_usd, Some(0.5));
        assert!(st.totals.cost_incomplete);
        assert_eq!(
            st.totals.latency_ms.avg,
            Some((100.0 + 400.0 + 30.0 + 50.0) / 4.0)
        );
        assert_eq!(st.totals.latency_ms.max, Some(400.0));
        assert_eq!(st.totals.ttft_ms.count, 1);
        let gpt = st
            .by_model
            .iter()
            .find(|m| m.model.as_deref() == Some("gpt-4o"))
            .unwrap();
        assert_eq!((gpt.summary.requests, gpt.summary.errors), (3, 1));
        let p50 = gpt.summary.latency_ms.p50.unwrap();
        assert!((79.0..=127.0).contains(&p50), "{p50}");
        assert_eq!(st.series.len(), 120);
        assert_eq!(st.series.iter().map(|p| p.requests).sum::<i64>(), 4);
        let at = |t: i64| st.series.iter().find(|p| p.start_us == t).unwrap();
        assert_eq!((at(t0).requests, at(t0).errors), (3, 1));
        assert_eq!(at(t0 + 60_000_000).cost_usd, None);
        let failed = st.by_status.iter().find(|s| s.status == "failed").unwrap();
        assert_eq!((failed.requests, failed.share), (1, 0.25));
        // The same answers from the hour table, and from a split range
        // (ragged minutes at both ends, whole hours between).
        let q = StatsQuery {
            bucket: Bucket::Hour,
            ..q
        };
        let by_hour = stats(Db::Sqlite(store.pool()), &q).await.unwrap();
        assert_eq!(by_hour.totals.requests, 4);
        let q = StatsQuery {
            from_us: t0 - 7_200_000_000 + 60_000_000,
            to_us: t0 + 7_200_000_000 - 60_000_000,
            bucket: Bucket::FiveMinutes,
        };
        let split = stats(Db::Sqlite(store.pool()), &q).await.unwrap();
        assert_eq!(split.totals.input_tokens, 37);
        assert_eq!(split.totals.requests, 4);
        store.close().await;

        // Reopening rolls nothing up twice.
        let store = super::super::sqlite::SqliteStore::open(&path)
            .await
            .unwrap();
        let n: i64 = sqlx::query_scalar("SELECT SUM(span_count) FROM rollup_minute")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(n, 5);
    }

    #[tokio::test]
    async fn opening_a_store_rolls_up_spans_it_already_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let store = super::super::sqlite::SqliteStore::open(&path)
            .await
            .unwrap();
        let spans: Vec<_> = (0..(BACKLOG_STEP as i64 + 50))
            .map(|i| {
                span(
                    1_700_000_000_000_000 + i * 1000,
                    "gpt-4o",
                    crate::record::span::SpanStatus::Completed,
                    3.0,
                )
            })
            .collect();
        store.write_spans(&spans).await.unwrap();
        // Forget the rollups, as a store written before them would be.
        sqlx::raw_sql("DELETE FROM rollup_minute; DELETE FROM rollup_hour; UPDATE rollup_state SET high_water = 0")
            .execute(store.pool())
            .await
            .unwrap();
        store.close().await;
        let store = super::super::sqlite::SqliteStore::open(&path)
            .await
            .unwrap();
        let n: i64 = sqlx::query_scalar("SELECT SUM(span_count) FROM rollup_hour")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(n, spans.len() as i64);
    }

    /// A batch counted from memory still counts the backlog past the mark
    /// before it, skips a span stored already, and a backlog longer than
    /// one step falls back to counting in rowid order.
    #[tokio::test]
    async fn a_batch_counts_the_backlog_before_it_and_not_a_span_twice() {
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::sqlite::SqliteStore::open(&dir.path().join("b.db"))
            .await
            .unwrap();
        let at = |i: i64| 1_700_000_000_000_000 + i * 1000;
        let completed = crate::record::span::SpanStatus::Completed;
        let sum = || async {
            let n: Option<i64> = sqlx::query_scalar("SELECT SUM(span_count) FROM rollup_hour")
                .fetch_one(store.pool())
                .await
                .unwrap();
            n.unwrap_or(0)
        };
        let forget = || async {
            sqlx::raw_sql(
                "DELETE FROM rollup_minute; DELETE FROM rollup_hour; \
                 UPDATE rollup_state SET high_water = 0",
            )
            .execute(store.pool())
            .await
            .unwrap();
        };
        let old: Vec<_> = (0..30)
            .map(|i| span(at(i), "gpt-4o", completed, 3.0))
            .collect();
        store.write_spans(&old).await.unwrap();
        forget().await;
        let mut batch: Vec<_> = (30..50)
            .map(|i| span(at(i), "gpt-4o", completed, 3.0))
            .collect();
        batch.push(old[3].clone());
        store.write_spans(&batch).await.unwrap();
        assert_eq!(sum().await, 50);

        // Past one step of backlog: rowid order, `BACKLOG_STEP` + batch
        // rows now, the rest with the next write.
        let many: Vec<_> = (50..(50 + BACKLOG_STEP as i64))
            .map(|i| span(at(i), "gpt-4o", completed, 3.0))
            .collect();
        store.write_spans(&many).await.unwrap();
        forget().await;
        let total = 50 + BACKLOG_STEP as i64;
        let batch: Vec<_> = (total..total + 10)
            .map(|i| span(at(i), "gpt-4o", completed, 3.0))
            .collect();
        store.write_spans(&batch).await.unwrap();
        assert_eq!(sum().await, BACKLOG_STEP as i64 + 10);
        store.write_spans::<Span>(&[]).await.unwrap();
        let last = span(at(total + 10), "gpt-4o", completed, 3.0);
        store.write_spans(&[last]).await.unwrap();
        assert_eq!(sum().await, total + 11);
    }

    #[test]
    fn column_lists_agree() {
        let n = all_columns().split(", ").count();
        assert_eq!(n, 5 + METRICS.len() + 2 * BINS);
        let sql = include_str!("migrations/0002_rollups.sql");
        for c in all_columns().split(", ") {
            assert!(sql.contains(&format!("    {c} ")), "{c} missing from 0002");
        }
    }
}
