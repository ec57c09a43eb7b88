//! PostgreSQL backend: a pool, the migrations (`migrations/postgres/`, the
//! same logical schema as SQLite's) applied at start-up under an advisory
//! lock so replicas starting together apply each one once, and the batch
//! write. A batch goes by binary `COPY` first (no SQL parsing of values, no
//! speculative insertion: ~1.7× the rows per second of the `INSERT` below
//! on this machine) with the rollups of every span in the same
//! transaction. `COPY` is all or nothing, so when the unique key refuses a
//! span (a batch retried after a lost commit acknowledgement, or a span
//! twice in one batch) the batch is written again by `INSERT … SELECT FROM
//! UNNEST(arrays) ON CONFLICT DO NOTHING RETURNING trace_id, span_id`, and
//! only the rows that returns are rolled up (`rollup::apply_pg`).
//!
//! Several llmtap replicas may share one database: spans are keyed by
//! `(trace_id, span_id)` (trace ids made by llmtap carry 80 random bits),
//! re-sent spans are skipped, and the rollup
//! upserts merge additively in a fixed lock order. Never called from the
//! request path; never formats a value into SQL.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::Row;

use super::{StoreError, SPAN_COLUMNS};
use crate::record::span::Span;

/// The PostgreSQL migrations, in order (the same versions as SQLite's).
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/postgres/0001_spans.sql")),
    (2, include_str!("migrations/postgres/0002_rollups.sql")),
    (3, include_str!("migrations/postgres/0003_span_key.sql")),
    (4, include_str!("migrations/postgres/0004_user_session.sql")),
];

/// Spans per `INSERT … UNNEST` statement. SQLite's `max_rows_per_statement`
/// exists to stay under its bind-parameter limit; here a statement binds 36
/// arrays whatever their length, so fewer, larger statements are cheaper
/// (one round trip and one plan per chunk).
const ROWS_PER_STATEMENT: usize = 5_000;

/// Bytes of encoded `COPY` rows sent per message: a batch is streamed, not
/// encoded whole.
const COPY_CHUNK_BYTES: usize = 256 * 1024;

/// The binary `COPY` signature, flags and header-extension length.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// SQLSTATE `unique_violation`.
const UNIQUE_VIOLATION: &str = "23505";

/// The advisory lock key that serialises migrations ("llmtap" in ASCII).
const MIGRATION_LOCK: i64 = 0x6c6c_6d74_6170;

/// Each span column's PostgreSQL array type, in `SPAN_COLUMNS` order.
const COLUMN_TYPES: &[&str] = &[
    "text[]",             // trace_id
    "text[]",             // span_id
    "text[]",             // parent_span_id
    "text[]",             // name
    "text[]",             // operation_type
    "text[]",             // provider
    "text[]",             // route
    "text[]",             // method
    "text[]",             // path
    "text[]",             // model
    "text[]",             // response_model
    "boolean[]",          // stream
    "bigint[]",           // http_status
    "text[]",             // status
    "text[]",             // error_type
    "text[]",             // error_message
    "bigint[]",           // start_time
    "bigint[]",           // end_time
    "double precision[]", // duration_ms
    "double precision[]", // ttft_ms
    "bigint[]",           // input_tokens
    "bigint[]",           // output_tokens
    "bigint[]",           // cached_input_tokens
    "bigint[]",           // cache_write_tokens
    "bigint[]",           // reasoning_tokens
    "boolean[]",          // tokens_estimated
    "double precision[]", // cost_usd
    "text[]",             // finish_reason
    "text[]",             // response_id
    "text[]",             // conversation_id
    "text[]",             // session_id
    "text[]",             // user_id
    "text[]",             // api_key_hash
    "text[]",             // properties
    "text[]",             // request_body
    "text[]",             // response_body
];

/// See the module docs.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    insert_sql: String,
    copy_sql: String,
}

impl PgStore {
    /// Connects (the database must exist) and migrates.
    pub async fn open(url: &str) -> Result<PgStore, StoreError> {
        let options = PgConnectOptions::from_str(url)?.application_name("llmtap");
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        let store = PgStore {
            pool,
            insert_sql: insert_sql(),
            copy_sql: format!(
                "COPY spans ({}) FROM STDIN (FORMAT binary)",
                SPAN_COLUMNS.join(", ")
            ),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The pool, for the query and rollup modules.
    pub(super) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the pending migrations in one transaction that first takes
    /// a transaction-scoped advisory lock: replicas starting at once queue
    /// on the lock, and each finds the versions the first one applied.
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        for &(version, sql) in MIGRATIONS {
            let applied: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if applied.is_some() {
                continue;
            }
            let result = async {
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                    .bind(version)
                    .bind(crate::record::span::now_us())
                    .execute(&mut *tx)
                    .await?;
                Ok::<(), sqlx::Error>(())
            }
            .await;
            // Dropping the transaction rolls it back.
            result.map_err(|source| StoreError::Migration { version, source })?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Writes a batch in one transaction: first by binary `COPY` (the
    /// cheap path, all or nothing); when a span of the batch is already
    /// stored (a batch retried after a lost commit acknowledgement) or
    /// appears twice in it, the `COPY` fails on the unique key and the
    /// batch is written again by `INSERT … ON CONFLICT DO NOTHING`
    /// ([`Self::insert_spans`]), which skips those spans.
    pub async fn write_spans<S: Borrow<Span> + Sync>(&self, spans: &[S]) -> Result<(), StoreError> {
        // PostgreSQL text cannot hold NUL: spans carrying one (garbage
        // bodies) are stored with U+FFFD in its place.
        match without_nul(spans) {
            Some(cleaned) => self.write_clean(&cleaned).await,
            None => self.write_clean(spans).await,
        }
    }

    async fn write_clean<S: Borrow<Span> + Sync>(&self, spans: &[S]) -> Result<(), StoreError> {
        if self.copy_spans(spans).await? {
            return Ok(());
        }
        self.insert_spans(spans).await
    }

    /// `COPY spans FROM STDIN (FORMAT binary)` and the rollups of every
    /// span, in one transaction. Returns `false`, with nothing written,
    /// when the unique key refuses a span or a value is too long for the
    /// format's 32-bit lengths.
    async fn copy_spans<S: Borrow<Span> + Sync>(&self, spans: &[S]) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut copy = tx.copy_in_raw(&self.copy_sql).await?;
        let mut buf = Vec::with_capacity(COPY_CHUNK_BYTES + 64 * 1024);
        buf.extend_from_slice(COPY_HEADER);
        for span in spans {
            if encode_copy_row(&mut buf, span.borrow()).is_none() {
                copy.abort("llmtap: value too long for binary COPY").await?;
                return Ok(false);
            }
            if buf.len() >= COPY_CHUNK_BYTES {
                copy.send(buf.as_slice()).await?;
                buf.clear();
            }
        }
        buf.extend_from_slice(&(-1i16).to_be_bytes());
        copy.send(buf).await?;
        match copy.finish().await {
            Ok(_) => {}
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(UNIQUE_VIOLATION) => {
                // Dropping the transaction rolls it back.
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        }
        let all: Vec<&Span> = spans.iter().map(Borrow::borrow).collect();
        super::rollup::apply_pg(&mut tx, &all).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The batch by `INSERT … SELECT FROM UNNEST … ON CONFLICT DO NOTHING
    /// RETURNING`, [`ROWS_PER_STATEMENT`] spans per statement, with the
    /// rollups of exactly the rows stored, in one transaction.
    async fn insert_spans<S: Borrow<Span> + Sync>(&self, spans: &[S]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut stored: Vec<&Span> = Vec::with_capacity(spans.len());
        for chunk in spans.chunks(ROWS_PER_STATEMENT) {
            let ids: Vec<(String, String)> = bind_columns(
                sqlx::query(sqlx::AssertSqlSafe(self.insert_sql.as_str())),
                chunk,
            )
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, sqlx::Error>>()?;
            // Exactly the rows this INSERT stored, each once (a span sent
            // twice in one chunk is stored, and counted, once).
            let mut fresh: HashMap<(&str, &str), usize> = HashMap::with_capacity(ids.len());
            for (t, id) in &ids {
                *fresh.entry((t.as_str(), id.as_str())).or_default() += 1;
            }
            for s in chunk {
                let s = s.borrow();
                let key = (s.trace_id.as_str(), s.span_id.as_str());
                if let Some(n) = fresh.get_mut(&key).filter(|n| **n > 0) {
                    *n -= 1;
                    stored.push(s);
                }
            }
        }
        // Same transaction: the rollups count exactly the spans stored.
        super::rollup::apply_pg(&mut tx, &stored).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The spans with every NUL in their text replaced by U+FFFD, or `None`
/// when none holds one (the common case: nothing is copied).
fn without_nul<S: Borrow<Span>>(spans: &[S]) -> Option<Vec<Span>> {
    fn text(s: &Span) -> [Option<&str>; 22] {
        [
            Some(&s.trace_id),
            Some(&s.span_id),
            s.parent_span_id.as_deref(),
            Some(&s.name),
            Some(&s.operation_type),
            Some(&s.provider),
            Some(&s.route),
            Some(&s.method),
            Some(&s.path),
            s.model.as_deref(),
            s.response_model.as_deref(),
            s.error_type.as_deref(),
            s.error_message.as_deref(),
            s.finish_reason.as_deref(),
            s.response_id.as_deref(),
            s.conversation_id.as_deref(),
            s.session_id.as_deref(),
            s.user_id.as_deref(),
            s.api_key_hash.as_deref(),
            s.properties.as_deref(),
            s.request_body.as_deref(),
            s.response_body.as_deref(),
        ]
    }
    let has_nul = |s: &Span| text(s).iter().flatten().any(|t| t.contains('\0'));
    if !spans.iter().any(|s| has_nul(s.borrow())) {
        return None;
    }
    let fix = |t: &mut String| {
        if t.contains('\0') {
            *t = t.replace('\0', "\u{FFFD}");
        }
    };
    let fix_opt = |t: &mut Option<String>| {
        if let Some(t) = t {
            fix(t);
        }
    };
    Some(
        spans
            .iter()
            .map(|s| {
                let mut s = s.borrow().clone();
                for t in [
                    &mut s.trace_id,
                    &mut s.span_id,
                    &mut s.name,
                    &mut s.operation_type,
                    &mut s.provider,
                    &mut s.route,
                    &mut s.method,
                    &mut s.path,
                ] {
                    fix(t);
                }
                for t in [
                    &mut s.parent_span_id,
                    &mut s.model,
                    &mut s.response_model,
                    &mut s.error_type,
                    &mut s.error_message,
                    &mut s.finish_reason,
                    &mut s.response_id,
                    &mut s.conversation_id,
                    &mut s.session_id,
                    &mut s.user_id,
                    &mut s.api_key_hash,
                    &mut s.properties,
                    &mut s.request_body,
                    &mut s.response_body,
                ] {
                    fix_opt(t);
                }
                s
            })
            .collect(),
    )
}

/// Appends one span as a binary `COPY` row: the field count, then each
/// column in `SPAN_COLUMNS` order as a 32-bit length (-1 for NULL) and its
/// value in PostgreSQL's binary form (text as UTF-8 bytes, BIGINT and
/// DOUBLE PRECISION as 8 big-endian bytes, BOOLEAN as one byte). `None`
/// when a text is longer than a 32-bit length can say.
fn encode_copy_row(buf: &mut Vec<u8>, s: &Span) -> Option<()> {
    fn text(buf: &mut Vec<u8>, v: Option<&str>) -> Option<()> {
        match v {
            None => buf.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                buf.extend_from_slice(&i32::try_from(v.len()).ok()?.to_be_bytes());
                buf.extend_from_slice(v.as_bytes());
            }
        }
        Some(())
    }
    fn int(buf: &mut Vec<u8>, v: Option<i64>) {
        match v {
            None => buf.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                buf.extend_from_slice(&8i32.to_be_bytes());
                buf.extend_from_slice(&v.to_be_bytes());
            }
        }
    }
    fn float(buf: &mut Vec<u8>, v: Option<f64>) {
        int(buf, v.map(|v| v.to_bits() as i64));
    }
    fn boolean(buf: &mut Vec<u8>, v: bool) {
        buf.extend_from_slice(&1i32.to_be_bytes());
        buf.push(u8::from(v));
    }
    buf.extend_from_slice(&(SPAN_COLUMNS.len() as i16).to_be_bytes());
    text(buf, Some(&s.trace_id))?;
    text(buf, Some(&s.span_id))?;
    text(buf, s.parent_span_id.as_deref())?;
    text(buf, Some(&s.name))?;
    text(buf, Some(&s.operation_type))?;
    text(buf, Some(&s.provider))?;
    text(buf, Some(&s.route))?;
    text(buf, Some(&s.method))?;
    text(buf, Some(&s.path))?;
    text(buf, s.model.as_deref())?;
    text(buf, s.response_model.as_deref())?;
    boolean(buf, s.stream);
    int(buf, s.http_status.map(i64::from));
    text(buf, Some(s.status.as_str()))?;
    text(buf, s.error_type.as_deref())?;
    text(buf, s.error_message.as_deref())?;
    int(buf, Some(s.start_time_us));
    int(buf, Some(s.end_time_us));
    float(buf, Some(s.duration_ms));
    float(buf, s.ttft_ms);
    int(buf, s.input_tokens);
    int(buf, s.output_tokens);
    int(buf, s.cached_input_tokens);
    int(buf, s.cache_write_tokens);
    int(buf, s.reasoning_tokens);
    boolean(buf, s.tokens_estimated);
    float(buf, s.cost_usd);
    text(buf, s.finish_reason.as_deref())?;
    text(buf, s.response_id.as_deref())?;
    text(buf, s.conversation_id.as_deref())?;
    text(buf, s.session_id.as_deref())?;
    text(buf, s.user_id.as_deref())?;
    text(buf, s.api_key_hash.as_deref())?;
    text(buf, s.properties.as_deref())?;
    text(buf, s.request_body.as_deref())?;
    text(buf, s.response_body.as_deref())
}

/// `INSERT INTO spans (…) SELECT * FROM UNNEST($1::text[], …) ON CONFLICT
/// (trace_id, span_id) DO NOTHING RETURNING trace_id, span_id`.
fn insert_sql() -> String {
    let arrays: Vec<String> = COLUMN_TYPES
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}", i + 1))
        .collect();
    format!(
        "INSERT INTO spans ({}) SELECT * FROM UNNEST({}) ON CONFLICT (trace_id, span_id) DO NOTHING RETURNING trace_id, span_id",
        SPAN_COLUMNS.join(", "),
        arrays.join(", ")
    )
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds one array per column, in `SPAN_COLUMNS` order.
fn bind_columns<'q, S: Borrow<Span>>(q: PgQuery<'q>, spans: &'q [S]) -> PgQuery<'q> {
    fn col<'a, S: Borrow<Span>, T>(spans: &'a [S], f: impl Fn(&'a Span) -> T) -> Vec<T> {
        spans.iter().map(|s| f(s.borrow())).collect()
    }
    q.bind(col(spans, |s| s.trace_id.as_str()))
        .bind(col(spans, |s| s.span_id.as_str()))
        .bind(col(spans, |s| s.parent_span_id.as_deref()))
        .bind(col(spans, |s| s.name.as_str()))
        .bind(col(spans, |s| s.operation_type.as_str()))
        .bind(col(spans, |s| s.provider.as_str()))
        .bind(col(spans, |s| s.route.as_str()))
        .bind(col(spans, |s| s.method.as_str()))
        .bind(col(spans, |s| s.path.as_str()))
        .bind(col(spans, |s| s.model.as_deref()))
        .bind(col(spans, |s| s.response_model.as_deref()))
        .bind(col(spans, |s| s.stream))
        .bind(col(spans, |s| s.http_status.map(i64::from)))
        .bind(col(spans, |s| s.status.as_str()))
        .bind(col(spans, |s| s.error_type.as_deref()))
        .bind(col(spans, |s| s.error_message.as_deref()))
        .bind(col(spans, |s| s.start_time_us))
        .bind(col(spans, |s| s.end_time_us))
        .bind(col(spans, |s| s.duration_ms))
        .bind(col(spans, |s| s.ttft_ms))
        .bind(col(spans, |s| s.input_tokens))
        .bind(col(spans, |s| s.output_tokens))
        .bind(col(spans, |s| s.cached_input_tokens))
        .bind(col(spans, |s| s.cache_write_tokens))
        .bind(col(spans, |s| s.reasoning_tokens))
        .bind(col(spans, |s| s.tokens_estimated))
        .bind(col(spans, |s| s.cost_usd))
        .bind(col(spans, |s| s.finish_reason.as_deref()))
        .bind(col(spans, |s| s.response_id.as_deref()))
        .bind(col(spans, |s| s.conversation_id.as_deref()))
        .bind(col(spans, |s| s.session_id.as_deref()))
        .bind(col(spans, |s| s.user_id.as_deref()))
        .bind(col(spans, |s| s.api_key_hash.as_deref()))
        .bind(col(spans, |s| s.properties.as_deref()))
        .bind(col(spans, |s| s.request_body.as_deref()))
        .bind(col(spans, |s| s.response_body.as_deref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_replaced_only_when_present() {
        let mut s = Span::start(1);
        s.name = "chat m".into();
        assert!(without_nul(std::slice::from_ref(&s)).is_none());
        s.response_body = Some("a\0b".into());
        s.error_message = Some("\0".into());
        let fixed = without_nul(&[s]).unwrap();
        assert_eq!(fixed[0].response_body.as_deref(), Some("a\u{FFFD}b"));
        assert_eq!(fixed[0].error_message.as_deref(), Some("\u{FFFD}"));
    }

    #[test]
    fn one_array_per_column() {
        assert_eq!(COLUMN_TYPES.len(), SPAN_COLUMNS.len());
        let sql = insert_sql();
        assert!(sql.contains("$36::text[]") && !sql.contains("$37"));
        assert!(sql.contains("$12::boolean[], $13::bigint[]"), "{sql}");
        // The migration declares every column the insert names.
        for c in SPAN_COLUMNS {
            assert!(MIGRATIONS[0].1.contains(&format!("    {c} ")), "{c}");
        }
    }
}
