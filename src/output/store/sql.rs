//! The dialect seam: what the read side (`query.rs`, `stats.rs`) and the
//! rollups' upsert (`rollup.rs`) need to run one piece of SQL on either
//! backend. A small statement builder ([`Sql`]) that writes each dialect's placeholders (`?`
//! or `$n`) and keeps every value bound, the snippets that differ between
//! SQLite and PostgreSQL ([`Dialect`]), a pool of either backend ([`Db`])
//! and a row of either ([`DbRow`]).
//!
//! Owns no SQL of its own beyond those snippets; never formats a value
//! into SQL text.

use sqlx::postgres::{PgPool, PgRow};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{ColumnIndex, Decode, Postgres, Row, Sqlite, Type};

/// Which SQL dialect a statement is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// `INDEXED BY spans_trace` where the planner must be told (SQLite).
    pub(super) fn by_trace_index(self) -> &'static str {
        match self {
            Dialect::Sqlite => " INDEXED BY spans_trace",
            Dialect::Postgres => "",
        }
    }

    /// `trace_id` of alias `a`, kept from driving a DISTINCT by its own
    /// index (SQLite's unary `+`; PostgreSQL plans this well by itself).
    pub(super) fn unindexed_trace_id(self, a: &str) -> String {
        match self {
            Dialect::Sqlite => format!("+{a}.trace_id"),
            Dialect::Postgres => format!("{a}.trace_id"),
        }
    }

    /// The distinct non-null models of a group as a JSON array text.
    pub(super) fn models_json(self) -> &'static str {
        match self {
            Dialect::Sqlite => "json_group_array(DISTINCT model) FILTER (WHERE model IS NOT NULL)",
            Dialect::Postgres => {
                "CAST(json_agg(DISTINCT model) FILTER (WHERE model IS NOT NULL) AS TEXT)"
            }
        }
    }

    /// Case-insensitive LIKE.
    pub(super) fn ilike(self) -> &'static str {
        match self {
            Dialect::Sqlite => "LIKE",
            Dialect::Postgres => "ILIKE",
        }
    }

    /// The larger of two values (SQLite's two-argument scalar `MAX`).
    pub(super) fn greatest(self) -> &'static str {
        match self {
            Dialect::Sqlite => "MAX",
            Dialect::Postgres => "GREATEST",
        }
    }

    /// An O(1) estimate of the number of stored spans.
    pub(super) fn span_count_estimate(self) -> &'static str {
        match self {
            Dialect::Sqlite => "SELECT COALESCE(MAX(rowid), 0) FROM spans",
            Dialect::Postgres => {
                "SELECT CAST(GREATEST(COALESCE(MAX(reltuples), 0), 0) AS BIGINT) FROM pg_class \
                 WHERE oid = to_regclass('spans')"
            }
        }
    }
}

/// One bound value.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Arg {
    Text(String),
    Int(i64),
    Float(f64),
}

impl From<String> for Arg {
    fn from(v: String) -> Arg {
        Arg::Text(v)
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Arg {
        Arg::Text(v.to_string())
    }
}

impl From<i64> for Arg {
    fn from(v: i64) -> Arg {
        Arg::Int(v)
    }
}

impl From<f64> for Arg {
    fn from(v: f64) -> Arg {
        Arg::Float(v)
    }
}

/// A statement being written: text plus the values bound to it.
#[derive(Debug, Clone)]
pub(super) struct Sql {
    pub(super) dialect: Dialect,
    text: String,
    args: Vec<Arg>,
}

impl Sql {
    pub(super) fn new(dialect: Dialect, text: impl Into<String>) -> Sql {
        Sql {
            dialect,
            text: text.into(),
            args: Vec::new(),
        }
    }

    /// Appends SQL text (never a value: values go through [`Sql::bind`]).
    pub(super) fn push(&mut self, text: &str) -> &mut Sql {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder and binds `value` to it.
    pub(super) fn bind(&mut self, value: impl Into<Arg>) -> &mut Sql {
        self.args.push(value.into());
        match self.dialect {
            Dialect::Sqlite => self.text.push('?'),
            Dialect::Postgres => {
                self.text.push('$');
                self.text.push_str(&self.args.len().to_string());
            }
        }
        self
    }

    /// Appends `p1, p2, …`, one bound placeholder per value.
    pub(super) fn bind_list<'a>(&mut self, values: impl IntoIterator<Item = &'a String>) {
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.text.push_str(", ");
            }
            self.bind(v.as_str());
        }
    }

    #[cfg(test)]
    pub(super) fn text(&self) -> &str {
        &self.text
    }

    #[cfg(test)]
    pub(super) fn args(&self) -> &[Arg] {
        &self.args
    }
}

/// Binds every argument of `$sql` to the query `$q` (the same code for
/// both backends' query types).
macro_rules! bind_args {
    ($sql:expr) => {{
        let mut q = sqlx::query(sqlx::AssertSqlSafe($sql.text));
        for a in $sql.args {
            q = match a {
                Arg::Text(v) => q.bind(v),
                Arg::Int(v) => q.bind(v),
                Arg::Float(v) => q.bind(v),
            };
        }
        q
    }};
}

/// A pool of either backend.
#[derive(Clone, Copy)]
pub(super) enum Db<'a> {
    Sqlite(&'a SqlitePool),
    Postgres(&'a PgPool),
}

impl Db<'_> {
    pub(super) fn dialect(self) -> Dialect {
        match self {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    /// A new statement in this pool's dialect.
    pub(super) fn sql(self, text: impl Into<String>) -> Sql {
        Sql::new(self.dialect(), text)
    }

    pub(super) async fn fetch_all(self, sql: Sql) -> Result<Vec<DbRow>, sqlx::Error> {
        debug_assert_eq!(sql.dialect, self.dialect());
        Ok(match self {
            Db::Sqlite(p) => bind_args!(sql)
                .fetch_all(p)
                .await?
                .into_iter()
                .map(DbRow::Sqlite)
                .collect(),
            Db::Postgres(p) => bind_args!(sql)
                .fetch_all(p)
                .await?
                .into_iter()
                .map(DbRow::Postgres)
                .collect(),
        })
    }

    /// Runs a statement; the number of rows it changed.
    pub(super) async fn execute(self, sql: Sql) -> Result<u64, sqlx::Error> {
        debug_assert_eq!(sql.dialect, self.dialect());
        Ok(match self {
            Db::Sqlite(p) => bind_args!(sql).execute(p).await?.rows_affected(),
            Db::Postgres(p) => bind_args!(sql).execute(p).await?.rows_affected(),
        })
    }

    pub(super) async fn fetch_optional(self, sql: Sql) -> Result<Option<DbRow>, sqlx::Error> {
        debug_assert_eq!(sql.dialect, self.dialect());
        Ok(match self {
            Db::Sqlite(p) => bind_args!(sql).fetch_optional(p).await?.map(DbRow::Sqlite),
            Db::Postgres(p) => bind_args!(sql)
                .fetch_optional(p)
                .await?
                .map(DbRow::Postgres),
        })
    }
}

/// Runs `sql` (PostgreSQL dialect) on one connection, e.g. in a transaction.
pub(super) async fn execute_pg(
    conn: &mut sqlx::PgConnection,
    sql: Sql,
) -> Result<u64, sqlx::Error> {
    debug_assert_eq!(sql.dialect, Dialect::Postgres);
    Ok(bind_args!(sql).execute(conn).await?.rows_affected())
}

/// Runs `sql` (SQLite dialect) on one connection, e.g. in a transaction.
pub(super) async fn execute_sqlite(
    conn: &mut sqlx::SqliteConnection,
    sql: Sql,
) -> Result<u64, sqlx::Error> {
    debug_assert_eq!(sql.dialect, Dialect::Sqlite);
    Ok(bind_args!(sql).execute(conn).await?.rows_affected())
}

/// A row of either backend.
pub(super) enum DbRow {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

impl DbRow {
    /// Column `i` (an index or a name) decoded as `T`.
    pub(super) fn get<T, I>(&self, i: I) -> Result<T, sqlx::Error>
    where
        T: for<'r> Decode<'r, Sqlite>
            + Type<Sqlite>
            + for<'r> Decode<'r, Postgres>
            + Type<Postgres>,
        I: ColumnIndex<SqliteRow> + ColumnIndex<PgRow>,
    {
        match self {
            DbRow::Sqlite(r) => r.try_get(i),
            DbRow::Postgres(r) => r.try_get(i),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_dialect() {
        for (d, want) in [
            (Dialect::Sqlite, "a = ? AND b IN (?, ?)"),
            (Dialect::Postgres, "a = $1 AND b IN ($2, $3)"),
        ] {
            let mut s = Sql::new(d, "a = ");
            s.bind(1i64).push(" AND b IN (");
            s.bind_list(&["x".to_string(), "y".to_string()]);
            s.push(")");
            assert_eq!(s.text(), want);
            assert_eq!(
                s.args(),
                &[Arg::Int(1), Arg::Text("x".into()), Arg::Text("y".into())]
            );
        }
    }
}
