//! Rollups: per-minute and per-hour aggregates of the spans, kept
//! up to date in the transaction that writes the spans, and the stats
//! queries `GET /api/stats` answers from them.
//!
//! Owns the `rollup_minute` / `rollup_hour` / `rollup_state` tables
//! (migration 0002), the latency histogram bins and the percentile estimate.
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
//! Both backends answer `/api/stats` through [`stats`], written once for
//! the two dialects (`sql.rs`).
//!
//! Never called from the request path; never formats a value into SQL.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};

use super::sql::{Arg, Db, DbRow, Dialect, Sql};
use super::StoreError;
use crate::record::span::Span;

/// Histogram bins: 0 is [0, 1 ms), bin i in 1..63 is
/// [2^((i-1)/3), 2^(i/3)) ms, the last is everything from 2^(62/3) ms up.
pub const BINS: usize = 64;
const MINUTE_US: i64 = 60_000_000;
const HOUR_US: i64 = 3_600_000_000;
const DAY_US: i64 = 86_400_000_000;
/// Most not-yet-counted rows beyond the batch one write also rolls up.
pub const BACKLOG_STEP: usize = 20_000;
/// Rows per upsert statement (about 150 bound values each).
const ROWS_PER_UPSERT: usize = 100;
/// Most buckets one stats query may return.
pub const MAX_BUCKETS: i64 = 10_000;

/// The bin of a duration in milliseconds.
pub fn bin(ms: f64) -> usize {
    // Also catches NaN and negatives.
    if ms.is_nan() || ms < 1.0 {
        return 0;
    }
    let i = (ms.log2() * 3.0).floor() + 1.0;
    i.clamp(1.0, (BINS - 1) as f64) as usize
}

/// The lower and upper bound of bin `i`, in ms (the last bin's upper
/// bound is open: it is reported as `f64::INFINITY`).
pub fn bin_bounds(i: usize) -> (f64, f64) {
    match i {
        0 => (0.0, 1.0),
        i if i >= BINS - 1 => (2f64.powf((BINS - 2) as f64 / 3.0), f64::INFINITY),
        i => (2f64.powf((i - 1) as f64 / 3.0), 2f64.powf(i as f64 / 3.0)),
    }
}

/// Estimates the `q` quantile (0..=1) from a histogram and the largest
/// value seen: the bin holding the rank, interpolated geometrically within
/// it (linearly in bin 0), never above `max`. `None` for an empty
/// histogram.
pub fn percentile(hist: &[i64; BINS], max: f64, q: f64) -> Option<f64> {
    let n: i64 = hist.iter().sum();
    if n <= 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * n as f64;
    let mut before = 0i64;
    for (i, &c) in hist.iter().enumerate() {
        if c <= 0 {
            continue;
        }
        if (before + c) as f64 >= rank {
            let f = ((rank - before as f64) / c as f64).clamp(0.0, 1.0);
            let (lo, hi) = bin_bounds(i);
            let hi = if hi.is_finite() { hi } else { max.max(lo) };
            let v = if i == 0 {
                hi * f
            } else {
                lo * (hi / lo).powf(f)
            };
            return Some(if max.is_finite() { v.min(max) } else { v });
        }
        before += c;
    }
    Some(max)
}

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
const METRICS: &[(&str, bool)] = &[
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

fn hist_columns() -> impl Iterator<Item = String> {
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

/// Metric columns holding reals (the rest are BIGINT counts).
const REAL_METRICS: &[&str] = &[
    "duration_sum",
    "duration_max",
    "ttft_sum",
    "ttft_max",
    "cost_usd",
];

/// `CAST(SUM(span_count) AS BIGINT), …, MAX(duration_max), …`: the metric
/// columns aggregated over rows, in `Agg` order. Integer sums are cast
/// back to BIGINT (PostgreSQL sums BIGINTs into NUMERIC).
fn aggregate_columns() -> String {
    let mut cols: Vec<String> = METRICS
        .iter()
        .map(|(c, max)| match (*max, REAL_METRICS.contains(c)) {
            (true, _) => format!("MAX({c})"),
            (false, true) => format!("SUM({c})"),
            (false, false) => format!("CAST(SUM({c}) AS BIGINT)"),
        })
        .collect();
    cols.extend(hist_columns().map(|c| format!("CAST(SUM({c}) AS BIGINT)")));
    cols.join(", ")
}

/// Reads an `Agg` from a row whose columns from `at` on are
/// `aggregate_columns()`.
fn agg_from_row(r: &DbRow, at: usize) -> Result<Agg, sqlx::Error> {
    let i = |k: usize| {
        r.get::<Option<i64>, _>(at + k)
            .map(Option::unwrap_or_default)
    };
    let f = |k: usize| {
        r.get::<Option<f64>, _>(at + k)
            .map(Option::unwrap_or_default)
    };
    let mut a = Agg {
        span_count: i(0)?,
        duration_sum: f(1)?,
        duration_max: f(2)?,
        ttft_count: i(3)?,
        ttft_sum: f(4)?,
        ttft_max: f(5)?,
        input_tokens: i(6)?,
        output_tokens: i(7)?,
        cached_input_tokens: i(8)?,
        cache_write_tokens: i(9)?,
        reasoning_tokens: i(10)?,
        tokens_estimated: i(11)?,
        cost_usd: f(12)?,
        priced: i(13)?,
        unpriced: i(14)?,
        ..Agg::default()
    };
    let base = METRICS.len();
    for b in 0..BINS {
        a.lat[b] = i(base + b)?;
        a.ttft[b] = i(base + BINS + b)?;
    }
    Ok(a)
}

// === write side ===

/// (bucket start, operation type, provider, model or '', status).
type Key = (i64, String, String, String, String);

fn floor_to(t: i64, size: i64) -> i64 {
    t.div_euclid(size) * size
}

fn ceil_to(t: i64, size: i64) -> i64 {
    let f = floor_to(t, size);
    if f == t {
        t
    } else {
        f.saturating_add(size)
    }
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
    upsert(conn, "rollup_minute", &minutes).await?;
    upsert(conn, "rollup_hour", &hours).await?;
    sqlx::query(
        "INSERT INTO rollup_state (id, high_water) VALUES (1, ?) \
         ON CONFLICT (id) DO UPDATE SET high_water = excluded.high_water",
    )
    .bind(mark)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn upsert(
    conn: &mut SqliteConnection,
    table: &'static str,
    aggs: &HashMap<Key, Agg>,
) -> Result<(), sqlx::Error> {
    let entries: Vec<(&Key, &Agg)> = aggs.iter().collect();
    let update: Vec<String> = METRICS
        .iter()
        .map(|(c, max)| {
            if *max {
                format!("{c} = MAX({c}, excluded.{c})")
            } else {
                format!("{c} = {c} + excluded.{c}")
            }
        })
        .chain(hist_columns().map(|c| format!("{c} = {c} + excluded.{c}")))
        .collect();
    let update = update.join(", ");
    for chunk in entries.chunks(ROWS_PER_UPSERT) {
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("INSERT INTO {table} ({}) ", all_columns()));
        qb.push_values(chunk, |mut b, (k, a)| {
            b.push_bind(k.0)
                .push_bind(k.1.as_str())
                .push_bind(k.2.as_str())
                .push_bind(k.3.as_str())
                .push_bind(k.4.as_str())
                .push_bind(a.span_count)
                .push_bind(a.duration_sum)
                .push_bind(a.duration_max)
                .push_bind(a.ttft_count)
                .push_bind(a.ttft_sum)
                .push_bind(a.ttft_max)
                .push_bind(a.input_tokens)
                .push_bind(a.output_tokens)
                .push_bind(a.cached_input_tokens)
                .push_bind(a.cache_write_tokens)
                .push_bind(a.reasoning_tokens)
                .push_bind(a.tokens_estimated)
                .push_bind(a.cost_usd)
                .push_bind(a.priced)
                .push_bind(a.unpriced);
            for v in a.lat.iter().chain(a.ttft.iter()) {
                b.push_bind(*v);
            }
        });
        qb.push(format!(" ON CONFLICT ({KEY}) DO UPDATE SET {update}"));
        qb.build().execute(&mut *conn).await?;
    }
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
    upsert_pg(conn, "rollup_minute", minutes).await?;
    upsert_pg(conn, "rollup_hour", hours).await
}

async fn upsert_pg(
    conn: &mut sqlx::PgConnection,
    table: &'static str,
    aggs: HashMap<Key, Agg>,
) -> Result<(), sqlx::Error> {
    let mut entries: Vec<(Key, Agg)> = aggs.into_iter().collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let update: Vec<String> = METRICS
        .iter()
        .map(|(c, max)| {
            if *max {
                format!("{c} = GREATEST(r.{c}, excluded.{c})")
            } else {
                format!("{c} = r.{c} + excluded.{c}")
            }
        })
        .chain(hist_columns().map(|c| format!("{c} = r.{c} + excluded.{c}")))
        .collect();
    let update = update.join(", ");
    for chunk in entries.chunks(ROWS_PER_UPSERT) {
        let mut sql = Sql::new(
            Dialect::Postgres,
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
        super::sql::execute_pg(conn, sql).await?;
    }
    Ok(())
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

// === read side: stats ===

/// Bucket sizes for `/api/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Minute,
    FiveMinutes,
    Hour,
    Day,
}

impl Bucket {
    /// `60s`, `5m`, `1h`, `1d` (and a few spellings of the same).
    pub fn parse(s: &str) -> Option<Bucket> {
        Some(match s {
            "60s" | "1m" => Bucket::Minute,
            "5m" | "300s" => Bucket::FiveMinutes,
            "1h" | "60m" | "3600s" => Bucket::Hour,
            "1d" | "24h" | "86400s" => Bucket::Day,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Bucket::Minute => "60s",
            Bucket::FiveMinutes => "5m",
            Bucket::Hour => "1h",
            Bucket::Day => "1d",
        }
    }

    pub fn size_us(self) -> i64 {
        match self {
            Bucket::Minute => MINUTE_US,
            Bucket::FiveMinutes => 5 * MINUTE_US,
            Bucket::Hour => HOUR_US,
            Bucket::Day => DAY_US,
        }
    }

    /// The rollup table that resolves this bucket.
    fn table(self) -> &'static str {
        match self {
            Bucket::Minute | Bucket::FiveMinutes => "rollup_minute",
            Bucket::Hour | Bucket::Day => "rollup_hour",
        }
    }
}

/// A stats request: `[from_us, to_us)`, widened to whole buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsQuery {
    pub from_us: i64,
    pub to_us: i64,
    pub bucket: Bucket,
}

impl StatsQuery {
    /// The range widened to whole buckets, and how many buckets it holds.
    pub fn aligned(&self) -> (i64, i64, i64) {
        let size = self.bucket.size_us();
        let from = floor_to(self.from_us, size);
        let to = ceil_to(self.to_us, size).max(from);
        (from, to, (to - from) / size)
    }
}

/// Latency figures (ms), estimated from the histogram except `avg` and
/// `max`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub avg: Option<f64>,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

/// Time to first token (ms) of streamed responses.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ttft {
    /// Spans with a time to first token.
    pub count: i64,
    pub avg: Option<f64>,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
}

/// Figures for a set of requests (all, or one model's).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub requests: i64,
    /// Requests whose span failed.
    pub errors: i64,
    pub error_rate: f64,
    pub latency_ms: Latency,
    pub ttft_ms: Ttft,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub total_tokens: i64,
    pub cached_input_tokens: i64,
    pub cache_write_tokens: i64,
    pub reasoning_tokens: i64,
    /// Requests with an estimated token count.
    pub tokens_estimated: i64,
    /// Sum of the priced requests; `None` when none has a price.
    pub cost_usd: Option<f64>,
    /// Some billed request with tokens had no price: a lower bound.
    pub cost_incomplete: bool,
}

impl Summary {
    fn from_agg(a: &Agg, errors: i64) -> Summary {
        let n = a.span_count;
        let ratio = |x: f64, d: i64| (d > 0).then(|| x / d as f64);
        Summary {
            requests: n,
            errors,
            error_rate: ratio(errors as f64, n).unwrap_or(0.0),
            latency_ms: Latency {
                avg: ratio(a.duration_sum, n),
                p50: percentile(&a.lat, a.duration_max, 0.50),
                p95: percentile(&a.lat, a.duration_max, 0.95),
                p99: percentile(&a.lat, a.duration_max, 0.99),
                max: (n > 0).then_some(a.duration_max),
            },
            ttft_ms: Ttft {
                count: a.ttft_count,
                avg: ratio(a.ttft_sum, a.ttft_count),
                p50: percentile(&a.ttft, a.ttft_max, 0.50),
                p95: percentile(&a.ttft, a.ttft_max, 0.95),
            },
            input_tokens: a.input_tokens,
            output_tokens: a.output_tokens,
            total_tokens: a.input_tokens + a.output_tokens,
            cached_input_tokens: a.cached_input_tokens,
            cache_write_tokens: a.cache_write_tokens,
            reasoning_tokens: a.reasoning_tokens,
            tokens_estimated: a.tokens_estimated,
            cost_usd: (a.priced > 0).then_some(a.cost_usd),
            cost_incomplete: a.unpriced > 0,
        }
    }
}

/// One model's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ModelStats {
    /// `None`: requests that named no model.
    pub model: Option<String>,
    #[serde(flatten)]
    pub summary: Summary,
}

/// Requests that ended with one status.
#[derive(Debug, Clone, Serialize)]
pub struct StatusStats {
    pub status: String,
    pub requests: i64,
    /// Of all requests in the range.
    pub share: f64,
}

/// One bucket of the time series.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Point {
    pub start_us: i64,
    pub requests: i64,
    pub errors: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// `None` when no request of the bucket has a price.
    pub cost_usd: Option<f64>,
}

/// The answer to a [`StatsQuery`]. Requests are proxied exchanges: every
/// span but `tool_call` spans, which are counted apart.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub from_us: i64,
    pub to_us: i64,
    pub bucket: &'static str,
    pub bucket_us: i64,
    pub totals: Summary,
    pub tool_calls: i64,
    pub by_status: Vec<StatusStats>,
    pub by_model: Vec<ModelStats>,
    pub series: Vec<Point>,
}

/// Answers a stats query from the rollups. The caller checks the bucket
/// count against [`MAX_BUCKETS`].
pub(super) async fn stats(db: Db<'_>, q: &StatsQuery) -> Result<Stats, StoreError> {
    let (from, to, n) = q.aligned();
    // Totals: whole hours from the hour table, the ragged ends from the
    // minute table (when the bucket is finer than an hour).
    let mut segments = Vec::new();
    let (h1, h2) = (ceil_to(from, HOUR_US), floor_to(to, HOUR_US));
    if q.bucket.table() == "rollup_minute" && h1 < h2 {
        segments.push(("rollup_minute", from, h1));
        segments.push(("rollup_hour", h1, h2));
        segments.push(("rollup_minute", h2, to));
    } else {
        segments.push((q.bucket.table(), from, to));
    }
    let mut models: HashMap<String, (Agg, i64)> = HashMap::new();
    let mut statuses: HashMap<String, i64> = HashMap::new();
    let mut tool_calls = 0;
    for (table, lo, hi) in segments.into_iter().filter(|s| s.1 < s.2) {
        let mut sql = db.sql(format!(
            "SELECT model, status, \
             CAST(CASE WHEN operation_type = 'tool_call' THEN 1 ELSE 0 END AS BIGINT) AS tool, {} \
             FROM {table} WHERE bucket >= ",
            aggregate_columns()
        ));
        sql.bind(lo)
            .push(" AND bucket < ")
            .bind(hi)
            .push(" GROUP BY model, status, tool");
        let rows = db.fetch_all(sql).await?;
        for r in &rows {
            let model: String = r.get(0)?;
            let status: String = r.get(1)?;
            let tool = r.get::<i64, _>(2)? != 0;
            let agg = agg_from_row(r, 3)?;
            if tool {
                tool_calls += agg.span_count;
                continue;
            }
            *statuses.entry(status.clone()).or_default() += agg.span_count;
            let entry = models.entry(model).or_default();
            entry.0.merge(&agg);
            if status == "failed" {
                entry.1 += agg.span_count;
            }
        }
    }
    let mut all = Agg::default();
    let mut errors = 0;
    for (agg, e) in models.values() {
        all.merge(agg);
        errors += e;
    }
    let mut by_model: Vec<ModelStats> = models
        .into_iter()
        .map(|(model, (agg, e))| ModelStats {
            model: (!model.is_empty()).then_some(model),
            summary: Summary::from_agg(&agg, e),
        })
        .collect();
    by_model.sort_by(|a, b| (b.summary.requests, &a.model).cmp(&(a.summary.requests, &b.model)));
    let total = all.span_count;
    let mut by_status: Vec<StatusStats> = statuses
        .into_iter()
        .map(|(status, requests)| StatusStats {
            status,
            requests,
            share: if total > 0 {
                requests as f64 / total as f64
            } else {
                0.0
            },
        })
        .collect();
    by_status.sort_by(|a, b| (b.requests, &a.status).cmp(&(a.requests, &b.status)));

    // The series, from the table that resolves the bucket.
    let size = q.bucket.size_us();
    let mut series: Vec<Point> = (0..n)
        .map(|i| Point {
            start_us: from + i * size,
            ..Point::default()
        })
        .collect();
    let mut sql = db.sql("SELECT (bucket - ");
    sql.bind(from)
        .push(") / ")
        .bind(size)
        .push(&format!(
            " AS i, CAST(SUM(span_count) AS BIGINT), \
             CAST(SUM(CASE WHEN status = 'failed' THEN span_count ELSE 0 END) AS BIGINT), \
             CAST(SUM(input_tokens) AS BIGINT), CAST(SUM(output_tokens) AS BIGINT), SUM(cost_usd), \
             CAST(SUM(priced) AS BIGINT) \
             FROM {} WHERE bucket >= ",
            q.bucket.table()
        ))
        .bind(from)
        .push(" AND bucket < ")
        .bind(to)
        .push(" AND operation_type <> 'tool_call' GROUP BY i");
    let rows = db.fetch_all(sql).await?;
    for r in &rows {
        let i: i64 = r.get(0)?;
        let Some(p) = usize::try_from(i).ok().and_then(|i| series.get_mut(i)) else {
            continue;
        };
        p.requests = r.get(1)?;
        p.errors = r.get(2)?;
        p.input_tokens = r.get(3)?;
        p.output_tokens = r.get(4)?;
        let priced: i64 = r.get(6)?;
        p.cost_usd = if priced > 0 { r.get(5)? } else { None };
    }
    Ok(Stats {
        from_us: from,
        to_us: to,
        bucket: q.bucket.as_str(),
        bucket_us: size,
        totals: Summary::from_agg(&all, errors),
        tool_calls,
        by_status,
        by_model,
        series,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_cover_the_range_in_order() {
        assert_eq!(bin(0.0), 0);
        assert_eq!(bin(-3.0), 0);
        assert_eq!(bin(f64::NAN), 0);
        assert_eq!(bin(0.999), 0);
        assert_eq!(bin(1.0), 1);
        assert_eq!(bin(1e12), BINS - 1);
        let mut last = 0;
        let mut ms = 0.01;
        while ms < 1e8 {
            let b = bin(ms);
            assert!(b >= last, "bins must not go down at {ms}");
            let (lo, hi) = bin_bounds(b);
            // Within a rounding hair of the bin's bounds.
            assert!(
                ms >= lo * 0.999_999 && ms <= hi * 1.000_001,
                "{ms} in {b}: {lo}..{hi}"
            );
            last = b;
            ms *= 1.07;
        }
    }

    #[test]
    fn percentiles_are_within_a_bin_of_the_truth() {
        // A spread of latencies: 1..=2000 ms, skewed.
        let values: Vec<f64> = (1..=2000)
            .map(|i| (i as f64).powf(1.3) / 5.0 + 0.5)
            .collect();
        let mut hist = [0i64; BINS];
        for &v in &values {
            hist[bin(v)] += 1;
        }
        let max = values.iter().cloned().fold(0.0, f64::max);
        let mut sorted = values.clone();
        sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
        for q in [0.5, 0.95, 0.99] {
            let exact = sorted[((q * sorted.len() as f64).ceil() as usize).saturating_sub(1)];
            let est = percentile(&hist, max, q).unwrap();
            // One bin is a factor 2^(1/3) wide.
            let ratio = est / exact;
            assert!((0.79..=1.26).contains(&ratio), "q{q}: {est} vs {exact}");
        }
        assert_eq!(percentile(&hist, max, 1.0).unwrap(), max);
        assert!(percentile(&[0; BINS], 0.0, 0.5).is_none());
        // The open last bin ends at the largest value seen.
        let mut h = [0i64; BINS];
        h[BINS - 1] = 1;
        let p50 = percentile(&h, 5e6, 0.5).unwrap();
        assert!(p50 >= bin_bounds(BINS - 1).0 && p50 <= 5e6, "{p50}");
        assert_eq!(percentile(&h, 5e6, 1.0).unwrap(), 5e6);
    }

    #[test]
    fn bucket_parsing_and_alignment() {
        assert_eq!(Bucket::parse("60s"), Some(Bucket::Minute));
        assert_eq!(Bucket::parse("5m"), Some(Bucket::FiveMinutes));
        assert_eq!(Bucket::parse("1h"), Some(Bucket::Hour));
        assert_eq!(Bucket::parse("1d"), Some(Bucket::Day));
        assert_eq!(Bucket::parse("7s"), None);
        let q = StatsQuery {
            from_us: 90_000_000,
            to_us: 150_000_001,
            bucket: Bucket::Minute,
        };
        assert_eq!(q.aligned(), (60_000_000, 180_000_000, 2));
        let q = StatsQuery {
            from_us: -1,
            to_us: 0,
            bucket: Bucket::Day,
        };
        assert_eq!(q.aligned(), (-DAY_US, 0, 1));
    }

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
        assert_eq!(
            aggregate_columns().split(", ").count(),
            METRICS.len() + 2 * BINS
        );
        let sql = include_str!("migrations/0002_rollups.sql");
        for c in all_columns().split(", ") {
            assert!(sql.contains(&format!("    {c} ")), "{c} missing from 0002");
        }
    }
}
