//! Store: where finished spans are written. One small seam (`Store`) over
//! the backends: SQLite (embedded file, WAL; `sqlite.rs`) and PostgreSQL
//! (shared by replicas; `postgres.rs`), with the same methods, the same
//! logical schema (`migrations/`, `migrations/postgres/`) and the same
//! answers. Writes are backend-specific; every read (`query.rs`,
//! `stats.rs`) is written once over the dialect seam (`sql.rs`).
//!
//! The store is only ever called by the batcher and the admin API, never by
//! the request path.

mod histogram;
mod postgres;
mod query;
mod rollup;
mod sql;
mod sqlite;
mod sqlite_insert;
mod stats;

use std::borrow::Borrow;
use std::path::PathBuf;

pub use query::{like_escape, SpanFilter, SpanKey, TraceKey, TracePage, TraceQuery, TraceSummary};
pub use stats::{Bucket, Stats, StatsQuery, MAX_BUCKETS};

use crate::record::span::schema::COLUMNS;
use crate::record::span::Span;

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("migration {version} failed: {source}")]
    Migration { version: i64, source: sqlx::Error },
    #[error(transparent)]
    Sqlite(#[from] sqlite_insert::RawError),
}

/// A parsed `database_url`.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite(PathBuf),
    /// A `postgres://` / `postgresql://` URL (it may hold a password: see
    /// the `Debug` impl, which never shows it).
    Postgres(String),
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
            StoreUrl::Postgres(u) => f.debug_tuple("Postgres").field(&redact(u)).finish(),
        }
    }
}

/// A database URL with any password replaced by `***`, for logs and
/// errors.
pub fn redact(url: &str) -> String {
    // `password=` in the query string.
    let mut out = match url.find("password=") {
        Some(i) => {
            let end = url[i..].find('&').map_or(url.len(), |e| i + e);
            format!("{}password=***{}", &url[..i], &url[end..])
        }
        None => url.to_string(),
    };
    // `user:password@` in the authority.
    if let Some((scheme, rest)) = out.split_once("://") {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                out = format!("{scheme}://{}:***{}", &rest[..colon], &rest[at..]);
            }
        }
    }
    out
}

/// Errors parsing `database_url`.
#[derive(Debug, thiserror::Error)]
pub enum StoreUrlError {
    #[error("{0:?}: expected sqlite://PATH, a file path or postgres://USER@HOST:PORT/DATABASE")]
    Unknown(String),
}

impl StoreUrl {
    /// `sqlite://PATH`, `sqlite:PATH`, a bare path, or a `postgres://` /
    /// `postgresql://` URL (checked when connecting).
    pub fn parse(url: &str) -> Result<StoreUrl, StoreUrlError> {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres(url.to_string()));
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        let path = path.split('?').next().unwrap_or(path);
        if path.is_empty() || path.contains("://") {
            return Err(StoreUrlError::Unknown(url.to_string()));
        }
        Ok(StoreUrl::Sqlite(PathBuf::from(path)))
    }
}

/// The span store. Cloning is cheap (a pool handle).
#[derive(Clone)]
pub enum Store {
    /// Boxed: the SQLite store holds its connect options inline.
    Sqlite(Box<sqlite::SqliteStore>),
    Postgres(postgres::PgStore),
}

impl Store {
    /// Opens (creating a SQLite file when missing; a PostgreSQL database
    /// must exist) and migrates.
    pub async fn open(url: &StoreUrl) -> Result<Store, StoreError> {
        match url {
            StoreUrl::Sqlite(path) => Ok(Store::Sqlite(Box::new(
                sqlite::SqliteStore::open(path).await?,
            ))),
            StoreUrl::Postgres(url) => Ok(Store::Postgres(postgres::PgStore::open(url).await?)),
        }
    }

    /// Which backend, for logs: `sqlite` or `postgres`.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// The pool behind the dialect seam, for the shared read side.
    fn db(&self) -> sql::Db<'_> {
        match self {
            Store::Sqlite(s) => sql::Db::Sqlite(s.pool()),
            Store::Postgres(s) => sql::Db::Postgres(s.pool()),
        }
    }

    /// Writes spans in one transaction. Idempotent: a span already stored
    /// (same trace and span id) is skipped.
    pub async fn write_spans<S: Borrow<Span> + Sync>(&self, spans: &[S]) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.write_spans(spans).await,
            Store::Postgres(s) => s.write_spans(spans).await,
        }
    }

    /// Every span of a trace, by start time.
    pub async fn trace(&self, trace_id: &str) -> Result<Vec<Span>, StoreError> {
        query::trace(self.db(), trace_id).await
    }

    /// One page of the trace list (newest first).
    pub async fn traces(&self, q: &TraceQuery) -> Result<TracePage, StoreError> {
        query::traces(self.db(), q).await
    }

    /// One span, with its bodies.
    pub async fn span(&self, span_id: &str) -> Result<Option<Span>, StoreError> {
        query::span(self.db(), span_id).await
    }

    /// Every stored span with its bodies, oldest first by (start, span id):
    /// export pages read to the end. For tests and tools over small stores.
    pub async fn all_spans(&self) -> Result<Vec<Span>, StoreError> {
        let mut out: Vec<Span> = Vec::new();
        loop {
            let after = out.last().map(|s| SpanKey {
                start_time_us: s.start_time_us,
                span_id: s.span_id.clone(),
            });
            let page = self
                .spans_page(&SpanFilter::default(), after.as_ref(), 1000, true)
                .await?;
            let done = page.len() < 1000;
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    /// Up to `limit` spans matching `filter` after `after`, oldest first
    /// (bodies only when `bodies`).
    pub async fn spans_page(
        &self,
        filter: &SpanFilter,
        after: Option<&SpanKey>,
        limit: usize,
        bodies: bool,
    ) -> Result<Vec<Span>, StoreError> {
        query::spans_page(self.db(), filter, after, limit, bodies).await
    }

    /// Request, error, latency, token and cost figures from the rollups.
    pub async fn stats(&self, q: &StatsQuery) -> Result<Stats, StoreError> {
        stats::stats(self.db(), q).await
    }

    /// The install's salt for API key hashes: created once, then kept.
    /// (Both backends accept `ON CONFLICT … DO NOTHING`; replicas starting
    /// at once all read the one salt the first insert kept.)
    pub async fn salt(&self) -> Result<String, StoreError> {
        let db = self.db();
        let mut insert = db.sql("INSERT INTO meta (key, value) VALUES ('api_key_salt', ");
        insert
            .bind(crate::record::span::new_trace_id())
            .push(") ON CONFLICT (key) DO NOTHING");
        db.execute(insert).await?;
        let row = db
            .fetch_optional(db.sql("SELECT value FROM meta WHERE key = 'api_key_salt'"))
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        Ok(row.get(0)?)
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let db = self.db();
        db.execute(db.sql("SELECT 1")).await?;
        Ok(())
    }

    pub async fn close(&self) {
        match self {
            Store::Sqlite(s) => s.close().await,
            Store::Postgres(s) => s.close().await,
        }
    }
}

/// The logical schema (SQLite dialect; PostgreSQL's files are in
/// `migrations/postgres/`), one entry per migration, applied in order.
pub(crate) const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_spans.sql")),
    (2, include_str!("migrations/0002_rollups.sql")),
    (3, include_str!("migrations/0003_span_key.sql")),
    (4, include_str!("migrations/0004_user_session.sql")),
];

/// `trace_id, span_id, …`: every column of the span record
/// ([`COLUMNS`]), in order, for the statements that name them all.
pub(crate) fn column_list() -> String {
    COLUMNS
        .iter()
        .map(|c| c.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            StoreUrl::parse("sqlite://data/llmtap.db").unwrap(),
            StoreUrl::Sqlite("data/llmtap.db".into())
        );
        assert_eq!(
            StoreUrl::parse("/tmp/x.db").unwrap(),
            StoreUrl::Sqlite("/tmp/x.db".into())
        );
        assert_eq!(
            StoreUrl::parse(" postgres://u@h:5432/db ").unwrap(),
            StoreUrl::Postgres("postgres://u@h:5432/db".into())
        );
        assert!(matches!(
            StoreUrl::parse("postgresql://h/db").unwrap(),
            StoreUrl::Postgres(_)
        ));
        assert!(StoreUrl::parse("mysql://x").is_err());
        assert!(StoreUrl::parse("").is_err());
    }

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact("postgres://llmtap:s3cret@db:5432/llmtap?sslmode=disable"),
            "postgres://llmtap:***@db:5432/llmtap?sslmode=disable"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact("postgres://h/db?user=u&password=pw&x=1"),
            "postgres://h/db?user=u&password=***&x=1"
        );
        let url = StoreUrl::parse("postgres://u:pw@h/db").unwrap();
        assert!(!format!("{url:?}").contains("pw"));
    }
}
