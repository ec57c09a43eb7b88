//! Queries: the read side of the query API over the `spans` table
//! (SQLite or PostgreSQL, through the dialect seam in `sql.rs`): traces listed one row per trace with span-level filters and
//! keyset pagination, one span by id, and keyset pages of spans for export.
//!
//! Owns this SQL. A trace's start is its first span's (the "head": least
//! `(start_time, span_id)`); a trace matches the filters when one of its
//! spans matches all of them. Two plans: with a filter on an indexed
//! column (`status`, `model`, `conversation_id`) the matching trace ids are
//! looked up first (`DISTINCT`, stopping past a threshold, see [`traces`]),
//! and when there are few their heads are read by trace id; otherwise (no
//! filter, many matches, or only unindexed columns) the heads are walked
//! newest first by the `start_time` index, each checked by index probes on
//! `(trace_id, start_time)`, until a page is full. A rare value of an
//! unindexed column (a `user_id`, a `q` search) can walk every head; `from`
//! and `to` bound that walk. Every value is bound, never formatted into
//! SQL, and every statement has a LIMIT. Never called from the request
//! path.

use super::sql::{Db, DbRow, Dialect, Sql};
use super::StoreError;
use crate::record::span::schema::{Kind, Owned, COLUMNS};
use crate::record::span::Span;
use serde::Serialize;

/// Span-level filters, shared by the trace list and the export. Empty
/// lists and `None` mean "any".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanFilter {
    /// Start time at or after (µs). On the trace list: the trace's start.
    pub from_us: Option<i64>,
    /// Start time before (µs). On the trace list: the trace's start.
    pub to_us: Option<i64>,
    pub status: Vec<String>,
    pub operation_type: Vec<String>,
    pub model: Vec<String>,
    pub provider: Vec<String>,
    pub min_duration_ms: Option<f64>,
    pub max_duration_ms: Option<f64>,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub conversation_id: Option<String>,
    /// `(key, value)`: `properties` holds `key` with this string value.
    pub properties: Vec<(String, String)>,
    /// Substring of `response_id` or `error_message` (case-insensitive for
    /// ASCII).
    pub q: Option<String>,
}

impl SpanFilter {
    /// Whether any condition other than the time range is set.
    fn has_span_conditions(&self) -> bool {
        !(self.status.is_empty()
            && self.operation_type.is_empty()
            && self.model.is_empty()
            && self.provider.is_empty()
            && self.min_duration_ms.is_none()
            && self.max_duration_ms.is_none()
            && self.session_id.is_none()
            && self.user_id.is_none()
            && self.conversation_id.is_none()
            && self.properties.is_empty()
            && self.q.is_none())
    }

    /// Appends ` AND …` for every condition but the time range, on the
    /// spans table aliased `a`.
    fn push_conditions(&self, qb: &mut Sql, a: &str) {
        let lists = [
            ("status", &self.status),
            ("operation_type", &self.operation_type),
            ("model", &self.model),
            ("provider", &self.provider),
        ];
        for (col, values) in lists {
            if values.is_empty() {
                continue;
            }
            qb.push(&format!(" AND {a}.{col} IN ("));
            qb.bind_list(values);
            qb.push(")");
        }
        if let Some(v) = self.min_duration_ms {
            qb.push(&format!(" AND {a}.duration_ms >= ")).bind(v);
        }
        if let Some(v) = self.max_duration_ms {
            qb.push(&format!(" AND {a}.duration_ms <= ")).bind(v);
        }
        let exact = [
            ("session_id", &self.session_id),
            ("user_id", &self.user_id),
            ("conversation_id", &self.conversation_id),
        ];
        for (col, value) in exact {
            if let Some(v) = value {
                qb.push(&format!(" AND {a}.{col} = ")).bind(v.as_str());
            }
        }
        for (key, value) in &self.properties {
            // A malformed properties text would make the JSON functions
            // fail the whole query: only valid JSON is looked into (on
            // PostgreSQL, `llmtap_json_text` of migration 0001 answers NULL
            // for it), and only string values match.
            match qb.dialect {
                Dialect::Sqlite => {
                    qb.push(&format!(
                        " AND CASE WHEN json_valid({a}.properties) THEN json_extract({a}.properties, "
                    ))
                    .bind(json_path(key))
                    .push(") END = ")
                    .bind(value.as_str());
                }
                Dialect::Postgres => {
                    qb.push(&format!(" AND llmtap_json_text({a}.properties, "))
                        .bind(key.as_str())
                        .push(") = ")
                        .bind(value.as_str());
                }
            }
        }
        if let Some(q) = &self.q {
            let pattern = format!("%{}%", like_escape(q));
            let like = qb.dialect.ilike();
            qb.push(&format!(" AND ({a}.response_id {like} "))
                .bind(pattern.clone())
                .push(&format!(" ESCAPE '\\' OR {a}.error_message {like} "))
                .bind(pattern)
                .push(" ESCAPE '\\')");
        }
    }
}

/// The JSON path of a top-level key, quoted so dots in property names
/// (`gen_ai.tool.name`) are not read as nesting. (Keys with `"` cannot be
/// addressed; the API refuses them.)
fn json_path(key: &str) -> String {
    format!("$.\"{key}\"")
}

/// `s` with LIKE's wildcards (and the escape character) escaped by `\`.
pub fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A position in the trace list: newest first by (start, trace id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceKey {
    pub start_time_us: i64,
    pub trace_id: String,
}

/// A trace list request.
#[derive(Debug, Clone, Default)]
pub struct TraceQuery {
    pub filter: SpanFilter,
    /// Most traces returned.
    pub limit: usize,
    /// Only traces after this one in the list (older).
    pub after: Option<TraceKey>,
}

/// One row of the trace list.
#[derive(Debug, Clone, Serialize)]
pub struct TraceSummary {
    pub trace_id: String,
    /// The root (first) span's name and id.
    pub name: String,
    pub root_span_id: String,
    pub start_time_us: i64,
    pub end_time_us: i64,
    /// First start to last end.
    pub duration_ms: f64,
    pub span_count: i64,
    /// `failed` if any span failed, else `cancelled` if the root was, else
    /// `completed`.
    pub status: String,
    pub error_count: i64,
    pub llm_calls: i64,
    pub tool_calls: i64,
    /// Distinct requested models.
    pub models: Vec<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub total_tokens: i64,
    pub tokens_estimated: bool,
    /// Sum of the priced spans; `None` when none has a price.
    pub cost_usd: Option<f64>,
    /// Some billed span with tokens had no price.
    pub cost_incomplete: bool,
    pub conversation_id: Option<String>,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
}

/// A page of the trace list.
#[derive(Debug, Clone)]
pub struct TracePage {
    pub traces: Vec<TraceSummary>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<TraceKey>,
}

/// Bounds of "few" matching traces (see [`traces`]).
const FEW_MATCHES: (i64, i64) = (200, 20_000);

struct Head {
    trace_id: String,
    span_id: String,
    start_time: i64,
    name: String,
    status: String,
    conversation_id: Option<String>,
    session_id: Option<String>,
    user_id: Option<String>,
}

/// One page of the trace list, newest first.
///
/// Reading the heads of M matching traces by id costs about M probes;
/// walking all heads until `limit` match costs about `limit` × T / M
/// (T traces). The two meet near M = √(limit × T), so that (T estimated by
/// the largest rowid on SQLite, the planner's row estimate on PostgreSQL:
/// an O(1) read) is where the plans switch.
pub(super) async fn traces(db: Db<'_>, q: &TraceQuery) -> Result<TracePage, StoreError> {
    let rows: i64 = match db
        .fetch_optional(db.sql(db.dialect().span_count_estimate()))
        .await?
    {
        Some(r) => r.get(0)?,
        None => 0,
    };
    let few = ((q.limit.max(1) as f64 * rows.max(0) as f64).sqrt() as i64)
        .clamp(FEW_MATCHES.0, FEW_MATCHES.1);
    traces_with(db, q, few, WALK_BUDGET).await
}

/// `traces`, with the spans-first plan used up to `few_matches` matching
/// traces, and a first walk of at most `walk_budget` heads.
async fn traces_with(
    db: Db<'_>,
    q: &TraceQuery,
    few_matches: i64,
    walk_budget: i64,
) -> Result<TracePage, StoreError> {
    let limit = q.limit.max(1);
    let mut heads = choose_heads(db, q, few_matches, walk_budget).await?;
    let more = heads.len() > limit;
    heads.truncate(limit);
    let next = if more {
        heads.last().map(|h| TraceKey {
            start_time_us: h.start_time,
            trace_id: h.trace_id.clone(),
        })
    } else {
        None
    };
    if heads.is_empty() {
        return Ok(TracePage {
            traces: Vec::new(),
            next,
        });
    }
    let traces = summaries(db, heads).await?;
    Ok(TracePage { traces, next })
}

/// The heads of the traces that match, newest first: walked, found by
/// the spans-first plan, or by id (one more than the page, to tell if
/// there is a next one).
async fn choose_heads(
    db: Db<'_>,
    q: &TraceQuery,
    few_matches: i64,
    walk_budget: i64,
) -> Result<Vec<Head>, StoreError> {
    let f = &q.filter;
    let limit = q.limit.max(1);
    let heads = if !f.has_span_conditions() {
        read_heads(db, q, Plan::Walk).await?
    } else {
        let indexed = !f.status.is_empty()
            || !f.model.is_empty()
            || f.conversation_id.is_some()
            || f.user_id.is_some()
            || f.session_id.is_some();
        // Without an index to find the matches, first try the newest heads:
        // a common value fills the page quickly.
        let walked = if indexed {
            None
        } else {
            let heads = read_heads(db, q, Plan::WalkSome(walk_budget)).await?;
            (heads.len() > limit).then_some(heads)
        };
        match walked {
            Some(heads) => heads,
            None => match matching_traces(db, f, few_matches).await? {
                Some(ids) if ids.is_empty() => Vec::new(),
                Some(ids) => read_heads(db, q, Plan::Ids(&ids)).await?,
                None => read_heads(db, q, Plan::WalkAll).await?,
            },
        }
    };
    Ok(heads)
}

/// Each head's trace summed up (spans, errors, tokens, cost, models).
async fn summaries(db: Db<'_>, heads: Vec<Head>) -> Result<Vec<TraceSummary>, StoreError> {
    // The totals of the chosen traces. Written for both dialects: sums of
    // CASE rather than of booleans, and every integer sum cast to BIGINT
    // (PostgreSQL sums BIGINTs into NUMERIC).
    let mut qb = db.sql(format!(
        "SELECT trace_id, COUNT(*), MAX(end_time), \
         CAST(SUM(CASE WHEN status = 'failed' THEN 1 ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN operation_type = 'llm_call' THEN 1 ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN operation_type = 'tool_call' THEN 1 ELSE 0 END) AS BIGINT), \
         CAST(SUM(input_tokens) AS BIGINT), CAST(SUM(output_tokens) AS BIGINT), SUM(cost_usd), \
         CAST(MAX(CASE WHEN tokens_estimated THEN 1 ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN cost_usd IS NULL AND operation_type IN ('llm_call', 'embedding') \
             AND (input_tokens IS NOT NULL OR output_tokens IS NOT NULL) THEN 1 ELSE 0 END) AS BIGINT), \
         {}, \
         MAX(conversation_id), MAX(session_id), MAX(user_id) \
         FROM spans WHERE trace_id IN (",
        db.dialect().models_json()
    ));
    qb.bind_list(heads.iter().map(|h| &h.trace_id));
    qb.push(") GROUP BY trace_id");
    let rows = db.fetch_all(qb).await?;
    let mut totals = std::collections::HashMap::new();
    for r in &rows {
        let id: String = r.get(0)?;
        totals.insert(id, r);
    }
    let mut out = Vec::with_capacity(heads.len());
    for h in heads {
        let Some(r) = totals.get(&h.trace_id) else {
            continue;
        };
        let end: i64 = r.get(2)?;
        let errors: i64 = r.get(3)?;
        let input: i64 = r.get::<Option<i64>, _>(6)?.unwrap_or(0);
        let output: i64 = r.get::<Option<i64>, _>(7)?.unwrap_or(0);
        let models: Option<String> = r.get(11)?;
        // Sorted: the same answer whatever order the database aggregated in.
        let mut models: Vec<String> = models
            .and_then(|m| serde_json::from_str(&m).ok())
            .unwrap_or_default();
        models.sort();
        let status = if errors > 0 {
            "failed"
        } else if h.status == "cancelled" {
            "cancelled"
        } else {
            "completed"
        };
        out.push(TraceSummary {
            name: h.name,
            root_span_id: h.span_id,
            start_time_us: h.start_time,
            end_time_us: end,
            duration_ms: (end - h.start_time).max(0) as f64 / 1000.0,
            span_count: r.get(1)?,
            status: status.to_string(),
            error_count: errors,
            llm_calls: r.get(4)?,
            tool_calls: r.get(5)?,
            models,
            input_tokens: input,
            output_tokens: output,
            total_tokens: input + output,
            tokens_estimated: r.get::<Option<i64>, _>(9)?.unwrap_or(0) != 0,
            cost_usd: r.get(8)?,
            cost_incomplete: r.get::<Option<i64>, _>(10)?.unwrap_or(0) > 0,
            conversation_id: h.conversation_id.or(r.get(12)?),
            session_id: h.session_id.or(r.get(13)?),
            user_id: h.user_id.or(r.get(14)?),
            trace_id: h.trace_id,
        });
    }
    Ok(out)
}

/// Heads examined by a first, bounded walk when only unindexed columns
/// are filtered (about a millisecond per thousand).
const WALK_BUDGET: i64 = 20_000;

/// How `read_heads` finds the heads of the page.
enum Plan<'a> {
    /// Every head, newest first (no span filter).
    Walk,
    /// The newest heads with a matching span, all of them if need be.
    WalkAll,
    /// Only among the newest `n` heads.
    WalkSome(i64),
    /// The heads of these traces.
    Ids(&'a [String]),
}

/// The ids of the traces with a matching span, or `None` when there are
/// more than `few`. The `+` keeps the planner from walking the trace_id
/// index in order to get distinct values (a random read per span): the
/// filter's own index, or one pass over the table, is used instead.
async fn matching_traces(
    db: Db<'_>,
    f: &SpanFilter,
    few: i64,
) -> Result<Option<Vec<String>>, StoreError> {
    let mut qb = db.sql(format!(
        "SELECT DISTINCT {} FROM spans s WHERE 1 = 1",
        db.dialect().unindexed_trace_id("s")
    ));
    // Every span of a trace starts at or after the trace's start.
    if let Some(from) = f.from_us {
        qb.push(" AND s.start_time >= ").bind(from);
    }
    f.push_conditions(&mut qb, "s");
    qb.push(" LIMIT ").bind(few.saturating_add(1));
    let ids: Vec<String> = db
        .fetch_all(qb)
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect::<Result<_, _>>()?;
    Ok((ids.len() as i64 <= few).then_some(ids))
}

/// Up to `limit + 1` heads of matching traces, newest first.
async fn read_heads(db: Db<'_>, q: &TraceQuery, plan: Plan<'_>) -> Result<Vec<Head>, StoreError> {
    let f = &q.filter;
    let by_trace = db.dialect().by_trace_index();
    let mut qb = db.sql(
        "SELECT h.trace_id, h.span_id, h.start_time, h.name, h.status, h.conversation_id, \
         h.session_id, h.user_id FROM ",
    );
    if let Plan::WalkSome(_) = plan {
        qb.push("(SELECT h.* FROM ");
    }
    match plan {
        Plan::Ids(ids) => {
            qb.push("spans h WHERE h.trace_id IN (");
            qb.bind_list(ids);
            qb.push(")");
        }
        _ => {
            qb.push("spans h WHERE 1 = 1");
        }
    }
    if let Some(from) = f.from_us {
        qb.push(" AND h.start_time >= ").bind(from);
    }
    if let Some(to) = f.to_us {
        qb.push(" AND h.start_time < ").bind(to);
    }
    if let Some(k) = &q.after {
        // The first bound lets the start_time index serve the range.
        qb.push(" AND h.start_time <= ")
            .bind(k.start_time_us)
            .push(" AND (h.start_time < ")
            .bind(k.start_time_us)
            .push(" OR h.trace_id < ")
            .bind(k.trace_id.as_str())
            .push(")");
    }
    // The trace's head: no span of the trace comes before it. The probes
    // name the (trace_id, start_time) index: with a filter on an indexed
    // column the planner could otherwise scan that column's index per head.
    qb.push(&format!(
        " AND NOT EXISTS (SELECT 1 FROM spans p{by_trace} WHERE p.trace_id = h.trace_id \
         AND (p.start_time < h.start_time OR (p.start_time = h.start_time AND p.span_id < h.span_id)))",
    ));
    if let Plan::WalkSome(n) = plan {
        qb.push(" ORDER BY h.start_time DESC, h.trace_id DESC LIMIT ")
            .bind(n)
            .push(") h WHERE 1 = 1");
    }
    if matches!(plan, Plan::WalkAll | Plan::WalkSome(_)) {
        qb.push(&format!(
            " AND EXISTS (SELECT 1 FROM spans s{by_trace} WHERE s.trace_id = h.trace_id"
        ));
        f.push_conditions(&mut qb, "s");
        qb.push(")");
    }
    qb.push(" ORDER BY h.start_time DESC, h.trace_id DESC LIMIT ")
        .bind(i64::try_from(q.limit.max(1) + 1).unwrap_or(i64::MAX));
    let rows = db.fetch_all(qb).await?;
    Ok(rows
        .iter()
        .map(|r| {
            Ok(Head {
                trace_id: r.get(0)?,
                span_id: r.get(1)?,
                start_time: r.get(2)?,
                name: r.get(3)?,
                status: r.get(4)?,
                conversation_id: r.get(5)?,
                session_id: r.get(6)?,
                user_id: r.get(7)?,
            })
        })
        .collect::<Result<Vec<Head>, sqlx::Error>>()?)
}

/// `s.col AS col, …`, with the bodies as NULL unless `bodies`.
fn span_select(bodies: bool) -> String {
    COLUMNS
        .iter()
        .map(|c| c.name)
        .map(|c| {
            if !bodies && matches!(c, "request_body" | "response_body") {
                format!("CAST(NULL AS TEXT) AS {c}")
            } else {
                format!("s.{c} AS {c}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One span, with its bodies.
pub(super) async fn span(db: Db<'_>, span_id: &str) -> Result<Option<Span>, StoreError> {
    let mut qb = db.sql(format!(
        "SELECT {} FROM spans s WHERE s.span_id = ",
        span_select(true)
    ));
    qb.bind(span_id);
    let row = db.fetch_optional(qb).await?;
    Ok(row.as_ref().map(row_to_span).transpose()?)
}

/// Every span of a trace, by start time.
pub(super) async fn trace(db: Db<'_>, trace_id: &str) -> Result<Vec<Span>, StoreError> {
    let mut qb = db.sql(format!(
        "SELECT {} FROM spans s WHERE s.trace_id = ",
        span_select(true)
    ));
    qb.bind(trace_id)
        .push(" ORDER BY s.start_time, s.span_id LIMIT ")
        .bind(MAX_TRACE_SPANS);
    let rows = db.fetch_all(qb).await?;
    Ok(rows
        .iter()
        .map(row_to_span)
        .collect::<Result<Vec<Span>, sqlx::Error>>()?)
}

/// Most spans read for one trace.
const MAX_TRACE_SPANS: i64 = 100_000;

/// A stored row back into a `Span`, column by column of [`COLUMNS`] (the
/// same on both backends: integers are BIGINT, reals DOUBLE PRECISION,
/// flags BOOLEAN). A NULL in a column that is not nullable is an error.
pub(super) fn row_to_span(r: &DbRow) -> Result<Span, sqlx::Error> {
    let mut span = Span::default();
    for c in COLUMNS {
        let n = c.name;
        let v = match (c.kind, c.nullable) {
            (Kind::Text, true) => Owned::Text(r.get(n)?),
            (Kind::Text, false) => Owned::Text(Some(r.get(n)?)),
            (Kind::Int, true) => Owned::Int(r.get(n)?),
            (Kind::Int, false) => Owned::Int(Some(r.get(n)?)),
            (Kind::Real, true) => Owned::Real(r.get(n)?),
            (Kind::Real, false) => Owned::Real(Some(r.get(n)?)),
            (Kind::Bool, _) => Owned::Bool(r.get(n)?),
        };
        (c.set)(&mut span, v);
    }
    Ok(span)
}

/// A position in the export: oldest first by (start, span id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanKey {
    pub start_time_us: i64,
    pub span_id: String,
}

/// Up to `limit` matching spans after `after`, oldest first.
pub(super) async fn spans_page(
    db: Db<'_>,
    f: &SpanFilter,
    after: Option<&SpanKey>,
    limit: usize,
    bodies: bool,
) -> Result<Vec<Span>, StoreError> {
    let mut qb = db.sql(format!(
        "SELECT {} FROM spans s WHERE 1 = 1",
        span_select(bodies)
    ));
    if let Some(from) = f.from_us {
        qb.push(" AND s.start_time >= ").bind(from);
    }
    if let Some(to) = f.to_us {
        qb.push(" AND s.start_time < ").bind(to);
    }
    if let Some(k) = after {
        qb.push(" AND s.start_time >= ")
            .bind(k.start_time_us)
            .push(" AND (s.start_time > ")
            .bind(k.start_time_us)
            .push(" OR s.span_id > ")
            .bind(k.span_id.as_str())
            .push(")");
    }
    f.push_conditions(&mut qb, "s");
    qb.push(" ORDER BY s.start_time, s.span_id LIMIT ")
        .bind(i64::try_from(limit).unwrap_or(i64::MAX));
    let rows = db.fetch_all(qb).await?;
    Ok(rows
        .iter()
        .map(row_to_span)
        .collect::<Result<Vec<Span>, sqlx::Error>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both plans give the same pages, and walking the cursor visits every
    /// matching trace once.
    #[tokio::test]
    async fn both_plans_agree_page_by_page() {
        use crate::record::span::SpanStatus;
        let dir = tempfile::tempdir().unwrap();
        let store = super::super::sqlite::SqliteStore::open(&dir.path().join("q.db"))
            .await
            .unwrap();
        let mut spans = Vec::new();
        for t in 0..300i64 {
            let trace_id = format!("{t:032x}");
            // Several traces share a start time, to exercise the tie-break.
            let start = 1_000_000 + (t / 3) * 1000;
            for k in 0..(1 + t % 3) {
                let mut s = Span::start(start + k * 10);
                s.trace_id.clone_from(&trace_id);
                s.name = format!("span {k}");
                s.operation_type = if k == 2 { "tool_call" } else { "llm_call" }.into();
                s.provider = "openai".into();
                s.model = Some(if t % 5 == 0 { "rare" } else { "common" }.into());
                s.status = if k == 1 && t % 7 == 0 {
                    SpanStatus::Failed
                } else {
                    SpanStatus::Completed
                };
                s.duration_ms = (t % 50) as f64;
                // Users and sessions on some traces only (partial indexes).
                if t % 2 == 0 {
                    s.user_id = Some(format!("u{}", t % 11));
                }
                if t % 3 == 0 {
                    s.session_id = Some(format!("s{}", t % 13));
                }
                spans.push(s);
            }
        }
        store.write_spans(&spans).await.unwrap();
        let db = super::super::sql::Db::Sqlite(store.pool());
        let filters = [
            SpanFilter::default(),
            SpanFilter {
                model: vec!["rare".into()],
                ..SpanFilter::default()
            },
            SpanFilter {
                status: vec!["failed".into()],
                from_us: Some(1_020_000),
                to_us: Some(1_090_000),
                ..SpanFilter::default()
            },
            SpanFilter {
                operation_type: vec!["tool_call".into()],
                min_duration_ms: Some(10.0),
                ..SpanFilter::default()
            },
            SpanFilter {
                user_id: Some("u4".into()),
                ..SpanFilter::default()
            },
            SpanFilter {
                session_id: Some("s6".into()),
                user_id: Some("u6".into()),
                ..SpanFilter::default()
            },
            // Unindexed and rare: past the first walk, found by one pass.
            SpanFilter {
                min_duration_ms: Some(49.0),
                ..SpanFilter::default()
            },
        ];
        for f in filters {
            let mut seen = std::collections::HashSet::new();
            let mut after = None;
            for _ in 0..1000 {
                let q = TraceQuery {
                    filter: f.clone(),
                    limit: 7,
                    after: after.clone(),
                };
                let a = traces_with(db, &q, 0, 0).await.unwrap();
                let ids = |p: &TracePage| {
                    p.traces
                        .iter()
                        .map(|t| t.trace_id.clone())
                        .collect::<Vec<_>>()
                };
                for (few, walk) in [(i64::MAX - 1, 0), (0, 3), (i64::MAX - 1, 1_000_000)] {
                    let b = traces_with(db, &q, few, walk).await.unwrap();
                    assert_eq!(ids(&a), ids(&b), "{f:?} {few} {walk}");
                    assert_eq!(a.next, b.next);
                }
                for t in &a.traces {
                    assert!(seen.insert(t.trace_id.clone()), "{} twice", t.trace_id);
                }
                match a.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            let want: std::collections::HashSet<String> = spans
                .iter()
                .filter(|s| {
                    let head = spans
                        .iter()
                        .filter(|x| x.trace_id == s.trace_id)
                        .map(|x| x.start_time_us)
                        .min()
                        .unwrap();
                    f.from_us.is_none_or(|v| head >= v)
                        && f.to_us.is_none_or(|v| head < v)
                        && (f.model.is_empty() || f.model.contains(s.model.as_ref().unwrap()))
                        && (f.status.is_empty()
                            || f.status.contains(&s.status.as_str().to_string()))
                        && (f.operation_type.is_empty()
                            || f.operation_type.contains(&s.operation_type))
                        && f.min_duration_ms.is_none_or(|v| s.duration_ms >= v)
                        && f.user_id
                            .as_ref()
                            .is_none_or(|v| s.user_id.as_ref() == Some(v))
                        && f.session_id
                            .as_ref()
                            .is_none_or(|v| s.session_id.as_ref() == Some(v))
                })
                .map(|s| s.trace_id.clone())
                .collect();
            assert!(!want.is_empty());
            assert_eq!(seen, want, "{f:?}");
        }
    }

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(like_escape("50%_off\\"), "50\\%\\_off\\\\");
        assert_eq!(like_escape("plain"), "plain");
    }

    #[test]
    fn conditions_bind_every_value() {
        let f = SpanFilter {
            status: vec!["failed".into(), "cancelled".into()],
            model: vec!["x'); DROP TABLE spans; --".into()],
            min_duration_ms: Some(5.0),
            user_id: Some("u".into()),
            properties: vec![("team".into(), "a".into())],
            q: Some("50%".into()),
            ..SpanFilter::default()
        };
        assert!(f.has_span_conditions());
        assert!(!SpanFilter::default().has_span_conditions());
        for dialect in [Dialect::Sqlite, Dialect::Postgres] {
            let mut qb = Sql::new(dialect, "SELECT 1 FROM spans s WHERE 1 = 1");
            f.push_conditions(&mut qb, "s");
            let sql = qb.text();
            assert!(!sql.contains("DROP") && !sql.contains("50%") && !sql.contains("team"));
            let placeholders = match dialect {
                Dialect::Sqlite => sql.matches('?').count(),
                Dialect::Postgres => sql.matches('$').count(),
            };
            assert_eq!(placeholders, 9, "{sql}");
        }
    }
}
