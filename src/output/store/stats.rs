//! The read side of the rollups: `GET /api/stats`. Bucket sizes, the
//! range widened to whole buckets, and the figures (totals, per model, per
//! status, a time series) read from `rollup_minute` / `rollup_hour`,
//! written once for the two dialects (`sql.rs`). Latency percentiles are
//! estimated from the rollups' histograms (`histogram.rs`).
//!
//! Never writes; never formats a value into SQL.

use std::collections::HashMap;

use serde::Serialize;

use super::histogram::{percentile, BINS};
use super::rollup::{floor_to, hist_columns, Agg, DAY_US, HOUR_US, METRICS, MINUTE_US};
use super::sql::{Db, DbRow};
use super::StoreError;

/// Most buckets one stats query may return.
pub const MAX_BUCKETS: i64 = 10_000;

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

fn ceil_to(t: i64, size: i64) -> i64 {
    let f = floor_to(t, size);
    if f == t {
        t
    } else {
        f.saturating_add(size)
    }
}

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
    let groups = groups(db, q, from, to).await?;
    let mut all = Agg::default();
    let mut errors = 0;
    for (agg, e) in groups.models.values() {
        all.merge(agg);
        errors += e;
    }
    let mut by_model: Vec<ModelStats> = groups
        .models
        .into_iter()
        .map(|(model, (agg, e))| ModelStats {
            model: (!model.is_empty()).then_some(model),
            summary: Summary::from_agg(&agg, e),
        })
        .collect();
    by_model.sort_by(|a, b| (b.summary.requests, &a.model).cmp(&(a.summary.requests, &b.model)));
    let total = all.span_count;
    let mut by_status: Vec<StatusStats> = groups
        .statuses
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
    Ok(Stats {
        from_us: from,
        to_us: to,
        bucket: q.bucket.as_str(),
        bucket_us: q.bucket.size_us(),
        totals: Summary::from_agg(&all, errors),
        tool_calls: groups.tool_calls,
        by_status,
        by_model,
        series: series(db, q, from, to, n).await?,
    })
}

/// The rollups of a range summed by model and by status.
#[derive(Default)]
struct Groups {
    /// Model (or '') → its requests, and how many of them failed.
    models: HashMap<String, (Agg, i64)>,
    /// Status → requests.
    statuses: HashMap<String, i64>,
    tool_calls: i64,
}

/// Sums `[from, to)` by model and status: whole hours from the hour table,
/// the ragged ends from the minute table (when the bucket is finer than an
/// hour).
async fn groups(db: Db<'_>, q: &StatsQuery, from: i64, to: i64) -> Result<Groups, StoreError> {
    let mut segments = Vec::new();
    let (h1, h2) = (ceil_to(from, HOUR_US), floor_to(to, HOUR_US));
    if q.bucket.table() == "rollup_minute" && h1 < h2 {
        segments.push(("rollup_minute", from, h1));
        segments.push(("rollup_hour", h1, h2));
        segments.push(("rollup_minute", h2, to));
    } else {
        segments.push((q.bucket.table(), from, to));
    }
    let mut g = Groups::default();
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
                g.tool_calls += agg.span_count;
                continue;
            }
            *g.statuses.entry(status.clone()).or_default() += agg.span_count;
            let entry = g.models.entry(model).or_default();
            entry.0.merge(&agg);
            if status == "failed" {
                entry.1 += agg.span_count;
            }
        }
    }
    Ok(g)
}

/// The `n` buckets of `[from, to)`, from the table that resolves the
/// bucket.
async fn series(
    db: Db<'_>,
    q: &StatsQuery,
    from: i64,
    to: i64,
    n: i64,
) -> Result<Vec<Point>, StoreError> {
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
    Ok(series)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn aggregate_columns_cover_the_metrics_and_bins() {
        assert_eq!(
            aggregate_columns().split(", ").count(),
            METRICS.len() + 2 * BINS
        );
    }
}
