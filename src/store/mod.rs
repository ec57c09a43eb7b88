//! Store: where finished spans are written. One small seam (`Store`) over
//! the backends; today SQLite (embedded file, WAL), with PostgreSQL to come
//! behind the same methods and the same logical schema.
//!
//! The store is only ever called by the batcher and the admin API, never by
//! the request path.

mod query;
mod rollup;
mod sqlite;

use std::path::PathBuf;

pub use query::{like_escape, SpanFilter, SpanKey, TraceKey, TracePage, TraceQuery, TraceSummary};
pub use rollup::{Bucket, Stats, StatsQuery, MAX_BUCKETS};

use crate::span::Span;

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
}

/// A parsed `database_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite(PathBuf),
}

/// Errors parsing `database_url`.
#[derive(Debug, thiserror::Error)]
pub enum StoreUrlError {
    #[error("{0:?}: PostgreSQL support is not built yet; use sqlite://PATH")]
    PostgresNotYet(String),
    #[error("{0:?}: expected sqlite://PATH or a file path")]
    Unknown(String),
}

impl StoreUrl {
    /// `sqlite://PATH`, `sqlite:PATH` or a bare path.
    pub fn parse(url: &str) -> Result<StoreUrl, StoreUrlError> {
        let url = url.trim();
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Err(StoreUrlError::PostgresNotYet(url.to_string()));
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
    Sqlite(sqlite::SqliteStore),
}

impl Store {
    /// Opens (creating when missing) and migrates.
    pub async fn open(url: &StoreUrl) -> Result<Store, StoreError> {
        match url {
            StoreUrl::Sqlite(path) => Ok(Store::Sqlite(sqlite::SqliteStore::open(path).await?)),
        }
    }

    /// Writes spans in one transaction, `max_rows` per INSERT. Idempotent:
    /// a span already stored (same span id) is skipped.
    pub async fn write_spans(&self, spans: &[Span], max_rows: usize) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.write_spans(spans, max_rows).await,
        }
    }

    /// Every span of a trace, by start time.
    pub async fn trace(&self, trace_id: &str) -> Result<Vec<Span>, StoreError> {
        match self {
            Store::Sqlite(s) => s.trace(trace_id).await,
        }
    }

    /// One page of the trace list (newest first).
    pub async fn traces(&self, q: &TraceQuery) -> Result<TracePage, StoreError> {
        match self {
            Store::Sqlite(s) => query::traces(s.pool(), q).await,
        }
    }

    /// One span, with its bodies.
    pub async fn span(&self, span_id: &str) -> Result<Option<Span>, StoreError> {
        match self {
            Store::Sqlite(s) => query::span(s.pool(), span_id).await,
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
        match self {
            Store::Sqlite(s) => query::spans_page(s.pool(), filter, after, limit, bodies).await,
        }
    }

    /// Request, error, latency, token and cost figures from the rollups.
    pub async fn stats(&self, q: &StatsQuery) -> Result<Stats, StoreError> {
        match self {
            Store::Sqlite(s) => rollup::stats(s.pool(), q).await,
        }
    }

    /// The install's salt for API key hashes: created once, then kept.
    pub async fn salt(&self) -> Result<String, StoreError> {
        match self {
            Store::Sqlite(s) => s.salt().await,
        }
    }

    /// A cheap round trip, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(s) => s.ping().await,
        }
    }

    pub async fn close(&self) {
        match self {
            Store::Sqlite(s) => s.close().await,
        }
    }
}

/// The logical schema, one entry per migration, applied in order.
pub(crate) const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_spans.sql")),
    (2, include_str!("migrations/0002_rollups.sql")),
    (3, include_str!("migrations/0003_span_key.sql")),
];

/// Every column of the span record, in `Span` field order (inserts use it;
/// so do tests that read rows back).
pub const SPAN_COLUMNS: &[&str] = &[
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "operation_type",
    "provider",
    "route",
    "method",
    "path",
    "model",
    "response_model",
    "stream",
    "http_status",
    "status",
    "error_type",
    "error_message",
    "start_time",
    "end_time",
    "duration_ms",
    "ttft_ms",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "tokens_estimated",
    "cost_usd",
    "finish_reason",
    "response_id",
    "conversation_id",
    "session_id",
    "user_id",
    "api_key_hash",
    "properties",
    "request_body",
    "response_body",
];

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
        assert!(StoreUrl::parse("postgres://x").is_err());
        assert!(StoreUrl::parse("mysql://x").is_err());
        assert!(StoreUrl::parse("").is_err());
    }
}
