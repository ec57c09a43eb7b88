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

use super::StoreError;
use crate::record::span::schema::{self, Kind, Value, COLUMNS};
use crate::record::span::Span;

/// The PostgreSQL migrations, in order (the same versions as SQLite's).
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/postgres/0001_spans.sql")),
    (2, include_str!("migrations/postgres/0002_rollups.sql")),
    (3, include_str!("migrations/postgres/0003_span_key.sql")),
    (4, include_str!("migrations/postgres/0004_user_session.sql")),
];

/// Spans per `INSERT … UNNEST` statement. SQLite's `max_rows_per_statement`
/// exists to stay under its bind-parameter limit; here a statement binds one
/// array per column whatever their length, so fewer, larger statements are cheaper
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

/// A column's PostgreSQL array type, for `UNNEST`.
fn array_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "text[]",
        Kind::Int => "bigint[]",
        Kind::Real => "double precision[]",
        Kind::Bool => "boolean[]",
    }
}

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
                super::column_list()
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
    let has_nul = |s: &Span| {
        schema::try_for_each_value(s, |_, v| match v {
            Value::Text(Some(t)) if t.contains('\0') => Err(()),
            _ => Ok(()),
        })
        .is_err()
    };
    if !spans.iter().any(|s| has_nul(s.borrow())) {
        return None;
    }
    Some(
        spans
            .iter()
            .map(|s| {
                let mut s = s.borrow().clone();
                schema::for_each_text(&mut s, |_, t| {
                    if t.contains('\0') {
                        *t = t.replace('\0', "\u{FFFD}");
                    }
                });
                s
            })
            .collect(),
    )
}

/// Appends one span as a binary `COPY` row: the field count, then each
/// column of [`COLUMNS`] as a 32-bit length (-1 for NULL) and its value in
/// PostgreSQL's binary form (text as UTF-8 bytes, BIGINT and DOUBLE
/// PRECISION as 8 big-endian bytes, BOOLEAN as one byte). `None` when a
/// text is longer than a 32-bit length can say.
fn encode_copy_row(buf: &mut Vec<u8>, s: &Span) -> Option<()> {
    fn fixed(buf: &mut Vec<u8>, v: Option<[u8; 8]>) {
        match v {
            None => buf.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                buf.extend_from_slice(&8i32.to_be_bytes());
                buf.extend_from_slice(&v);
            }
        }
    }
    buf.extend_from_slice(&(COLUMNS.len() as i16).to_be_bytes());
    schema::try_for_each_value(s, |_, v| {
        match v {
            Value::Text(None) => buf.extend_from_slice(&(-1i32).to_be_bytes()),
            Value::Text(Some(v)) => {
                let len = i32::try_from(v.len()).map_err(|_| ())?;
                buf.extend_from_slice(&len.to_be_bytes());
                buf.extend_from_slice(v.as_bytes());
            }
            Value::Int(v) => fixed(buf, v.map(i64::to_be_bytes)),
            Value::Real(v) => fixed(buf, v.map(|v| v.to_bits().to_be_bytes())),
            Value::Bool(v) => {
                buf.extend_from_slice(&1i32.to_be_bytes());
                buf.push(u8::from(v));
            }
        }
        Ok::<(), ()>(())
    })
    .ok()
}

/// `INSERT INTO spans (…) SELECT * FROM UNNEST($1::text[], …) ON CONFLICT
/// (trace_id, span_id) DO NOTHING RETURNING trace_id, span_id`.
fn insert_sql() -> String {
    let arrays: Vec<String> = (1..)
        .zip(COLUMNS)
        .map(|(i, c)| format!("${i}::{}", array_type(c.kind)))
        .collect();
    format!(
        "INSERT INTO spans ({}) SELECT * FROM UNNEST({}) ON CONFLICT (trace_id, span_id) DO NOTHING RETURNING trace_id, span_id",
        super::column_list(),
        arrays.join(", ")
    )
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds one array per column of [`COLUMNS`], in order.
fn bind_columns<'q, S: Borrow<Span>>(mut q: PgQuery<'q>, spans: &'q [S]) -> PgQuery<'q> {
    for c in COLUMNS {
        let values = spans.iter().map(|s| (c.get)(s.borrow()));
        // A value of another kind than the column's cannot occur (see the
        // schema's tests); it would bind as NULL.
        q = match c.kind {
            Kind::Text => q.bind(
                values
                    .map(|v| match v {
                        Value::Text(t) => t,
                        _ => None,
                    })
                    .collect::<Vec<Option<&str>>>(),
            ),
            Kind::Int => q.bind(
                values
                    .map(|v| match v {
                        Value::Int(v) => v,
                        _ => None,
                    })
                    .collect::<Vec<Option<i64>>>(),
            ),
            Kind::Real => q.bind(
                values
                    .map(|v| match v {
                        Value::Real(v) => v,
                        _ => None,
                    })
                    .collect::<Vec<Option<f64>>>(),
            ),
            Kind::Bool => q.bind(
                values
                    .map(|v| matches!(v, Value::Bool(true)))
                    .collect::<Vec<bool>>(),
            ),
        };
    }
    q
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
        let sql = insert_sql();
        let n = COLUMNS.len();
        assert!(sql.contains(&format!("${n}::text[]")) && !sql.contains(&format!("${}", n + 1)));
        assert!(sql.contains("$12::boolean[], $13::bigint[]"), "{sql}");
    }

    /// The first migration declares every column of the schema, with the
    /// type of its kind and NOT NULL exactly when it is not nullable (and
    /// no column the schema lacks).
    #[test]
    fn the_migration_matches_the_schema() {
        let sql = MIGRATIONS[0].1;
        let start = sql.find("CREATE TABLE IF NOT EXISTS spans (").unwrap();
        let body = &sql[start..sql[start..].find(");").unwrap() + start];
        let declared: Vec<&str> = body.lines().skip(1).map(str::trim).collect();
        assert_eq!(declared.len(), COLUMNS.len(), "{declared:?}");
        for (line, c) in declared.iter().zip(COLUMNS) {
            let (name, rest) = line.split_once(' ').unwrap();
            assert_eq!(name, c.name);
            let ty = match c.kind {
                Kind::Text => "TEXT",
                Kind::Int => "BIGINT",
                Kind::Real => "DOUBLE PRECISION",
                Kind::Bool => "BOOLEAN",
            };
            assert!(rest.trim_start().starts_with(ty), "{line}");
            assert_eq!(rest.contains("NOT NULL"), !c.nullable, "{line}");
        }
    }

    /// A `COPY` row holds every column in order, each as its length and
    /// its binary value.
    #[test]
    fn copy_row_encodes_every_column() {
        let mut s = schema::every_column_set();
        s.model = None;
        s.ttft_ms = None;
        s.input_tokens = None;
        let mut buf = Vec::new();
        encode_copy_row(&mut buf, &s).unwrap();
        assert_eq!(i16::from_be_bytes([buf[0], buf[1]]) as usize, COLUMNS.len());
        let mut at = 2;
        for c in COLUMNS {
            let len = i32::from_be_bytes(buf[at..at + 4].try_into().unwrap());
            at += 4;
            let bytes = usize::try_from(len).map(|n| {
                at += n;
                &buf[at - n..at]
            });
            match (c.get)(&s) {
                Value::Text(t) => assert_eq!(bytes.ok(), t.map(str::as_bytes), "{}", c.name),
                Value::Int(v) => {
                    assert_eq!(bytes.ok(), v.map(i64::to_be_bytes).as_ref().map(|b| &b[..]))
                }
                Value::Real(v) => assert_eq!(
                    bytes.ok(),
                    v.map(|v| v.to_bits().to_be_bytes())
                        .as_ref()
                        .map(|b| &b[..])
                ),
                Value::Bool(v) => assert_eq!(bytes.ok(), Some(&[u8::from(v)][..])),
            }
        }
        assert_eq!(at, buf.len());
    }
}
