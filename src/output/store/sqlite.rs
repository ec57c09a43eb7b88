//! SQLite backend: one file, WAL journal, migrations at open.

use std::borrow::Borrow;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection, SqlitePool};
use tokio::sync::Mutex;

use super::{sqlite_insert, StoreError, MIGRATIONS};
use crate::record::span::Span;

/// The writer connection's page cache, as SQLite's `cache_size` (negative:
/// KiB). Measured with `scripts/store_bench.sh` and the bench's 1,000
/// streams: see BENCHMARKS.md.
const WRITER_CACHE_KIB: &str = "-4096";

/// The writer's insert statement (see `sqlite_insert`).
static INSERT_SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Runs blocking SQLite work without stalling an async worker thread: on
/// the multi-threaded runtime the worker hands its other tasks to another
/// thread for the duration (`block_in_place`); elsewhere (a single-threaded
/// test runtime) it runs in place.
fn off_the_runtime<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// See the module docs.
#[derive(Clone)]
pub struct SqliteStore {
    /// Readers (the query API) and migrations.
    pool: SqlitePool,
    /// The one connection the batcher writes through. Keeping writes on a
    /// single connection keeps its page cache warm from batch to batch: with
    /// writes spread over the pool, each transaction started on a cache
    /// that another connection's commit had invalidated, and re-read its
    /// index pages from the WAL (measured: the writer's throughput fell as
    /// the file grew). `None` after an error: the next batch reconnects.
    writer: Arc<Mutex<Option<SqliteConnection>>>,
    /// The writer's connect options (its larger page cache included).
    options: SqliteConnectOptions,
}

/// Attempts at opening a file another process is opening at the same
/// moment (see [`SqliteStore::open`]).
const OPEN_ATTEMPTS: u32 = 10;

/// Whether an error is SQLite's "busy" or "locked" (any extended code).
fn is_busy(e: &StoreError) -> bool {
    let db = match e {
        StoreError::Db(sqlx::Error::Database(db)) => db,
        StoreError::Migration {
            source: sqlx::Error::Database(db),
            ..
        } => db,
        _ => return false,
    };
    // The primary result code is the low byte of the extended one.
    db.code()
        .and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| matches!(c & 0xff, 5 | 6))
}

impl SqliteStore {
    /// Opens (creating when missing) and migrates. Several processes may
    /// open one new file at once: SQLite answers some of the steps of that
    /// race (switching a new file to WAL, a read turned write) with "busy"
    /// at once rather than through the busy timeout, so a busy open is
    /// retried, a bounded number of times with a growing pause.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let mut pause = Duration::from_millis(20);
        let mut attempt = 1;
        loop {
            match Self::open_once(path).await {
                Err(e) if attempt < OPEN_ATTEMPTS && is_busy(&e) => {
                    tracing::debug!(error = %e, attempt, "SQLite store busy at open; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn open_once(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            // Statement journals of multi-row inserts stay in memory.
            .pragma("temp_store", "memory");
        // Page cache (negative = KiB; SQLite's default is 2 MiB). Readers
        // (the query API, up to 4 connections) get the default: their
        // queries walk indexes, and 4 large caches would be 4 times the
        // memory. The writer gets WRITER_CACHE_KIB: its inserts land at
        // the right edge of every index (time-ordered ids, see migration
        // 0003), so it needs those edges and the rollup rows warm, not the
        // whole file; its cache is counted in llmtap's RSS for good.
        let reader_options = options.clone();
        let writer_options = options.pragma("cache_size", WRITER_CACHE_KIB);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(reader_options)
            .await?;
        let store = SqliteStore {
            pool,
            writer: Arc::new(Mutex::new(None)),
            options: writer_options,
        };
        store.migrate().await?;
        // Spans stored before the rollups existed (or by an older llmtap).
        let n = super::rollup::catch_up(&store.pool).await?;
        if n > 0 {
            tracing::info!(spans = n, "Rolled up stored spans");
        }
        Ok(store)
    }

    /// The pool, for the query and rollup modules.
    pub(super) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *conn)
        .await?;
        for &(version, sql) in MIGRATIONS {
            // BEGIN IMMEDIATE takes the write lock first, so two processes
            // starting on one file apply each migration once.
            sqlx::query("BEGIN IMMEDIATE").execute(&mut *conn).await?;
            let applied: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = ?")
                    .bind(version)
                    .fetch_optional(&mut *conn)
                    .await?;
            if applied.is_none() {
                let result = async {
                    sqlx::raw_sql(sql).execute(&mut *conn).await?;
                    sqlx::query(
                        "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                    )
                    .bind(version)
                    .bind(crate::record::span::now_us())
                    .execute(&mut *conn)
                    .await?;
                    Ok::<(), sqlx::Error>(())
                }
                .await;
                if let Err(source) = result {
                    let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                    return Err(StoreError::Migration { version, source });
                }
            }
            sqlx::query("COMMIT").execute(&mut *conn).await?;
        }
        Ok(())
    }

    pub async fn write_spans<S: Borrow<Span> + Sync>(&self, spans: &[S]) -> Result<(), StoreError> {
        let mut writer = self.writer.lock().await;
        let conn = match &mut *writer {
            Some(conn) => conn,
            slot => slot.insert(SqliteConnection::connect_with(&self.options).await?),
        };
        let result = Self::write_with(conn, spans).await;
        if result.is_err() {
            // Start the next batch on a fresh connection.
            if let Some(conn) = writer.take() {
                let _ = conn.close().await;
            }
        }
        result
    }

    async fn write_with<S: Borrow<Span> + Sync>(
        conn: &mut SqliteConnection,
        spans: &[S],
    ) -> Result<(), StoreError> {
        // The write lock first, through sqlx: a wait for another writer
        // (the busy timeout) happens on sqlx's worker thread, and the raw
        // inserts below, holding the lock, never wait on another
        // connection (WAL readers do not block the writer).
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
        let stored = {
            let mut handle = tx.lock_handle().await?;
            let db = handle.as_raw_handle();
            let sql = INSERT_SQL.get_or_init(sqlite_insert::insert_sql);
            off_the_runtime(|| sqlite_insert::insert_spans(db, sql, spans))?
        };
        // Same transaction: the rollups count exactly the spans stored.
        let stored: Vec<(i64, &Span)> = stored
            .into_iter()
            .filter_map(|(i, rowid)| spans.get(i).map(|s| (rowid, s.borrow())))
            .collect();
        super::rollup::apply_stored(&mut tx, &stored).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn close(&self) {
        if let Some(conn) = self.writer.lock().await.take() {
            let _ = conn.close().await;
        }
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::span::SpanStatus;

    #[tokio::test]
    async fn writes_reads_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/t.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let mut spans = Vec::new();
        for i in 0..450 {
            let mut s = Span::start(i);
            s.name = "chat m".into();
            s.status = SpanStatus::Completed;
            s.input_tokens = Some(i);
            spans.push(s);
        }
        store.write_spans(&spans).await.unwrap();
        store.write_spans(&spans[..10]).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM spans")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(n, 450);
        let sum: i64 = sqlx::query_scalar("SELECT SUM(input_tokens) FROM spans")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(sum, (0..450).sum::<i64>());
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let store = super::super::Store::Sqlite(Box::new(store));
        let salt = store.salt().await.unwrap();
        assert_eq!(salt.len(), 32);
        store.ping().await.unwrap();
        store.close().await;
        // Reopening migrates nothing twice and keeps the salt.
        let store = super::super::Store::Sqlite(Box::new(SqliteStore::open(&path).await.unwrap()));
        assert_eq!(store.salt().await.unwrap(), salt);
    }

    /// A file written before migration 0003 (span_id as the primary key)
    /// keeps every row, rowid and rollup, and takes the new key.
    #[tokio::test]
    async fn migration_3_rebuilds_the_table_keeping_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let options = SqliteConnectOptions::from_str("sqlite://")
                .unwrap()
                .filename(&path)
                .create_if_missing(true);
            let mut conn = SqliteConnection::connect_with(&options).await.unwrap();
            for &(_, sql) in &MIGRATIONS[..2] {
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
            }
            sqlx::raw_sql(
                "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL); \
                 INSERT INTO schema_migrations VALUES (1, 0), (2, 0); \
                 INSERT INTO spans (trace_id, span_id, name, operation_type, provider, route, method, path, stream, status, start_time, end_time, duration_ms, tokens_estimated) \
                 VALUES ('t1', 'a1', 'chat m', 'llm_call', 'openai', '/v1', 'POST', '/v1/x', 0, 'completed', 5, 6, 1.0, 0), \
                        ('t2', 'a2', 'chat m', 'llm_call', 'openai', '/v1', 'POST', '/v1/x', 0, 'completed', 7, 8, 1.0, 0);",
            )
            .execute(&mut conn)
            .await
            .unwrap();
            conn.close().await.unwrap();
        }
        let store = SqliteStore::open(&path).await.unwrap();
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT rowid, span_id FROM spans ORDER BY rowid")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert_eq!(rows, vec![(1, "a1".to_string()), (2, "a2".to_string())]);
        // The old rows were rolled up once, at open.
        let counted: i64 = sqlx::query_scalar("SELECT SUM(span_count) FROM rollup_minute")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(counted, 2);
        // The same span id in another trace is another span now; the same
        // (trace, span) pair is still written once.
        let mut again = Span::start(9);
        again.trace_id = "t1".into();
        again.span_id = "a1".into();
        let mut other = again.clone();
        other.trace_id = "t3".into();
        store.write_spans(&[again, other]).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM spans")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(n, 3);
        let plan: Vec<(i64, i64, i64, String)> =
            sqlx::query_as("EXPLAIN QUERY PLAN SELECT * FROM spans WHERE span_id = 'a2'")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert!(plan.iter().any(|p| p.3.contains("spans_span")), "{plan:?}");
        // The user and session filters' `=` finds their partial indexes.
        for (col, index) in [("user_id", "spans_user"), ("session_id", "spans_session")] {
            let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "EXPLAIN QUERY PLAN SELECT trace_id FROM spans s WHERE s.{col} = 'x'"
            )))
            .fetch_all(&store.pool)
            .await
            .unwrap();
            assert!(plan.iter().any(|p| p.3.contains(index)), "{col}: {plan:?}");
        }
    }

    /// The table the migrations leave is the schema's: the same columns in
    /// the same order, each with its kind's affinity and NOT NULL exactly
    /// when it is not nullable.
    #[tokio::test]
    async fn the_migrated_table_matches_the_schema() {
        use crate::record::span::schema::{Kind, COLUMNS};
        /// SQLite's affinity of a declared type (its "3.1. Determination
        /// of column affinity").
        fn affinity(declared: &str) -> &'static str {
            let t = declared.to_ascii_uppercase();
            if t.contains("INT") {
                "INTEGER"
            } else if ["CHAR", "CLOB", "TEXT"].iter().any(|k| t.contains(k)) {
                "TEXT"
            } else if t.contains("BLOB") || t.is_empty() {
                "BLOB"
            } else if ["REAL", "FLOA", "DOUB"].iter().any(|k| t.contains(k)) {
                "REAL"
            } else {
                "NUMERIC"
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
        let info: Vec<(i64, String, String, bool)> =
            sqlx::query_as("SELECT cid, name, type, \"notnull\" FROM pragma_table_info('spans')")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        let table: Vec<(&str, &str, bool)> = info
            .iter()
            .map(|(_, name, ty, notnull)| (name.as_str(), affinity(ty), *notnull))
            .collect();
        let schema: Vec<(&str, &str, bool)> = COLUMNS
            .iter()
            .map(|c| {
                let affinity = match c.kind {
                    Kind::Text => "TEXT",
                    Kind::Int => "INTEGER",
                    Kind::Real => "REAL",
                    Kind::Bool => "NUMERIC",
                };
                (c.name, affinity, !c.nullable)
            })
            .collect();
        assert_eq!(table, schema);
        store.close().await;
    }
}
