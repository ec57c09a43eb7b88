//! The SQLite batch insert, on the writer connection's own handle: one
//! prepared single-row `INSERT … ON CONFLICT (trace_id, span_id) DO
//! NOTHING`, bound and stepped once per span.
//!
//! Why not through sqlx: sqlx copies every bound text twice before SQLite
//! copies it into the row (into an `Arc<String>` per value, then again
//! with `SQLITE_TRANSIENT`), builds a 200-row statement per chunk, and
//! hands every statement to its worker thread. Here each text is bound
//! with `SQLITE_STATIC`, pointing at the span's own bytes, so SQLite reads
//! it once, when it builds the record. Measured on the request-path bench
//! (c=32): see docs/benchmarks/2026-12-07-cpu-and-memory.md.
//!
//! This is the only `unsafe` code in llmtap. Its invariants: the handle is
//! the writer connection's, held locked (`LockedSqliteHandle`) for the
//! whole call; the statement is finalized on every path (`Stmt::drop`);
//! every bound pointer borrows from `spans`, which outlives the statement,
//! and is unbound by `sqlite3_reset`/`sqlite3_clear_bindings` before the
//! next row.

use std::borrow::Borrow;
use std::ffi::{c_char, c_int, CStr};
use std::ptr::{self, NonNull};

use libsqlite3_sys as ffi;

use crate::record::span::schema::{self, Value, COLUMNS};
use crate::record::span::Span;

/// An SQLite error from the raw insert: the extended result code and
/// SQLite's message.
#[derive(Debug, thiserror::Error)]
#[error("SQLite error {code}: {message}")]
pub struct RawError {
    pub code: i32,
    pub message: String,
}

/// `INSERT INTO spans (…) VALUES (?1, …, ?N) ON CONFLICT … DO NOTHING`,
/// one parameter per column of [`COLUMNS`].
pub fn insert_sql() -> String {
    let params: Vec<String> = (1..=COLUMNS.len()).map(|i| format!("?{i}")).collect();
    format!(
        "INSERT INTO spans ({}) VALUES ({}) ON CONFLICT (trace_id, span_id) DO NOTHING",
        super::column_list(),
        params.join(", ")
    )
}

/// A prepared statement, finalized on drop.
struct Stmt {
    db: *mut ffi::sqlite3,
    stmt: *mut ffi::sqlite3_stmt,
}

impl Drop for Stmt {
    fn drop(&mut self) {
        // SAFETY: `stmt` came from a successful prepare on `db` and is
        // finalized exactly once, here.
        unsafe {
            ffi::sqlite3_finalize(self.stmt);
        }
    }
}

impl Stmt {
    fn error(&self, rc: c_int) -> RawError {
        error(self.db, rc)
    }

    fn check(&self, rc: c_int) -> Result<(), RawError> {
        if rc == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(self.error(rc))
        }
    }

    /// Binds parameter `i` (1-based) to `text`, or NULL. SQLite keeps the
    /// pointer until the statement is reset and its bindings cleared.
    fn text(&mut self, i: c_int, text: Option<&str>) -> Result<(), RawError> {
        let rc = match text {
            // SAFETY: `stmt` is live; the bytes outlive the step that reads
            // them (see the module docs); the length is the slice's.
            Some(t) => unsafe {
                ffi::sqlite3_bind_text64(
                    self.stmt,
                    i,
                    t.as_ptr().cast::<c_char>(),
                    t.len() as ffi::sqlite3_uint64,
                    ffi::SQLITE_STATIC(),
                    ffi::SQLITE_UTF8 as u8,
                )
            },
            // SAFETY: `stmt` is live.
            None => unsafe { ffi::sqlite3_bind_null(self.stmt, i) },
        };
        self.check(rc)
    }

    fn int(&mut self, i: c_int, v: Option<i64>) -> Result<(), RawError> {
        let rc = match v {
            // SAFETY: `stmt` is live.
            Some(v) => unsafe { ffi::sqlite3_bind_int64(self.stmt, i, v) },
            // SAFETY: `stmt` is live.
            None => unsafe { ffi::sqlite3_bind_null(self.stmt, i) },
        };
        self.check(rc)
    }

    fn real(&mut self, i: c_int, v: Option<f64>) -> Result<(), RawError> {
        let rc = match v {
            // SAFETY: `stmt` is live.
            Some(v) => unsafe { ffi::sqlite3_bind_double(self.stmt, i, v) },
            // SAFETY: `stmt` is live.
            None => unsafe { ffi::sqlite3_bind_null(self.stmt, i) },
        };
        self.check(rc)
    }

    /// Binds the span's columns, parameter `i + 1` to `COLUMNS[i]`
    /// (booleans as 0/1 integers, as sqlx stores them). Allocates nothing:
    /// every text is bound from the span's own bytes.
    fn bind(&mut self, s: &Span) -> Result<(), RawError> {
        let mut i: c_int = 0;
        schema::try_for_each_value(s, |_, v| {
            i += 1;
            match v {
                Value::Text(t) => self.text(i, t),
                Value::Int(v) => self.int(i, v),
                Value::Real(v) => self.real(i, v),
                Value::Bool(v) => self.int(i, Some(i64::from(v))),
            }
        })
    }

    /// Runs the bound row, then resets the statement and clears its
    /// bindings (so no pointer into this span survives the call).
    /// `Some(rowid)` when it stored the row, `None` when `ON CONFLICT DO
    /// NOTHING` skipped it.
    fn step(&mut self) -> Result<Option<i64>, RawError> {
        // SAFETY: `stmt` is live and fully bound.
        let rc = unsafe { ffi::sqlite3_step(self.stmt) };
        // SAFETY: `db` is live; both only read the connection's counters of
        // the statement that just ran (this connection runs nothing else
        // meanwhile: the caller holds its lock).
        let stored = unsafe {
            (ffi::sqlite3_changes(self.db) == 1).then(|| ffi::sqlite3_last_insert_rowid(self.db))
        };
        // SAFETY: `stmt` is live; reset and clear never fail in a way that
        // leaves it unusable (reset repeats the step's error, handled
        // above).
        unsafe {
            ffi::sqlite3_reset(self.stmt);
            ffi::sqlite3_clear_bindings(self.stmt);
        }
        if rc == ffi::SQLITE_DONE {
            Ok(stored)
        } else {
            Err(self.error(rc))
        }
    }
}

fn error(db: *mut ffi::sqlite3, rc: c_int) -> RawError {
    // SAFETY: `db` is a live connection; `sqlite3_errmsg` returns a
    // NUL-terminated string owned by SQLite, copied out at once.
    let (code, message) = unsafe {
        let code = ffi::sqlite3_extended_errcode(db);
        let msg = ffi::sqlite3_errmsg(db);
        let message = if msg.is_null() {
            String::new()
        } else {
            CStr::from_ptr(msg).to_string_lossy().into_owned()
        };
        (code, message)
    };
    // The connection's last error may predate this call when the failing
    // routine does not set it (bind errors): fall back to `rc`.
    let code = if code == ffi::SQLITE_OK { rc } else { code };
    RawError { code, message }
}

/// Inserts `spans`, each once (a span already stored is skipped), inside
/// the transaction the caller holds open on `db`. Returns the index in
/// `spans` and the rowid of every row it stored, in order.
///
/// `db` must be the caller's locked handle (see the module docs), inside a
/// `BEGIN IMMEDIATE` transaction: holding the write lock, the inserts
/// never wait on another connection, but they are still synchronous CPU
/// and page I/O (milliseconds for a large batch), which the caller keeps
/// off the async worker threads.
pub fn insert_spans<S: Borrow<Span>>(
    db: NonNull<ffi::sqlite3>,
    sql: &str,
    spans: &[S],
) -> Result<Vec<(usize, i64)>, RawError> {
    let db = db.as_ptr();
    let mut raw: *mut ffi::sqlite3_stmt = ptr::null_mut();
    let len = c_int::try_from(sql.len()).map_err(|_| RawError {
        code: ffi::SQLITE_TOOBIG,
        message: "statement too long".into(),
    })?;
    // SAFETY: `db` is live and locked by the caller; `sql` is valid for
    // `len` bytes (no NUL terminator needed with an explicit length);
    // `raw` receives a statement or NULL.
    let rc = unsafe {
        ffi::sqlite3_prepare_v3(
            db,
            sql.as_ptr().cast::<c_char>(),
            len,
            ffi::SQLITE_PREPARE_PERSISTENT,
            &mut raw,
            ptr::null_mut(),
        )
    };
    if rc != ffi::SQLITE_OK || raw.is_null() {
        return Err(error(db, rc));
    }
    let mut stmt = Stmt { db, stmt: raw };
    let mut stored = Vec::with_capacity(spans.len());
    for (i, span) in spans.iter().enumerate() {
        stmt.bind(span.borrow())?;
        if let Some(rowid) = stmt.step()? {
            stored.push((i, rowid));
        }
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_parameter_per_column() {
        let sql = insert_sql();
        let n = COLUMNS.len();
        assert!(sql.contains(&format!("?{n})")) && !sql.contains(&format!("?{}", n + 1)));
        assert!(sql.starts_with("INSERT INTO spans (trace_id, span_id, "));
    }

    /// A statement SQLite refuses comes back as an error naming the
    /// problem (here a table without the span columns), not a panic.
    #[tokio::test]
    async fn sqlite_errors_come_back_with_their_message() {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::raw_sql("CREATE TABLE spans (trace_id TEXT)")
            .execute(&mut conn)
            .await
            .unwrap();
        let mut handle = conn.lock_handle().await.unwrap();
        let err =
            insert_spans(handle.as_raw_handle(), &insert_sql(), &[Span::start(1)]).unwrap_err();
        assert_eq!(err.code & 0xff, ffi::SQLITE_ERROR, "{err}");
        assert!(err.message.contains("span_id"), "{err}");
    }
}
