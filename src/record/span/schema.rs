//! The span record's columns, declared once: [`COLUMNS`], in the stores'
//! column order, each with its name, its kind, how to read it from a
//! [`Span`] and how to set it back, and whether redaction applies to it.
//!
//! Everything that walks a span column by column is driven from this
//! table: both stores' writes (SQLite's raw binds, PostgreSQL's `COPY` row
//! and `INSERT … UNNEST` arrays and its NUL-stripping), the row reader, the
//! span's size estimate, redaction's field walk and the tests' reader.
//! Adding a field to the record is: the field on `Span`, one line here, and
//! a migration for each dialect (tests check that the migrations and this
//! table agree).
//!
//! Must never: allocate to read a column (the writer binds every column of
//! every span through [`Column::get`]).

use super::{Span, SpanStatus};

/// What a column holds, as both stores type it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `TEXT`.
    Text,
    /// `BIGINT` (SQLite: `INTEGER` affinity).
    Int,
    /// `DOUBLE PRECISION` (SQLite: `REAL` affinity).
    Real,
    /// `BOOLEAN` (SQLite: 0/1 in a `NUMERIC`-affinity column).
    Bool,
}

/// One column's value, borrowed from a span. `None` is SQL NULL.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Text(Option<&'a str>),
    Int(Option<i64>),
    Real(Option<f64>),
    Bool(bool),
}

/// One column's value as read back from a store.
#[derive(Debug, Clone, PartialEq)]
pub enum Owned {
    Text(Option<String>),
    Int(Option<i64>),
    Real(Option<f64>),
    Bool(bool),
}

/// One column of the span record.
#[derive(Clone, Copy)]
pub struct Column {
    /// The column's name in both stores.
    pub name: &'static str,
    pub kind: Kind,
    /// Whether the column may be NULL (its field is an `Option`). A
    /// `Bool` column never is.
    pub nullable: bool,
    /// Whether redaction applies to it (free text that could carry a
    /// secret: bodies, error message, properties, ids taken from headers,
    /// the response id, the path).
    pub redact: bool,
    /// The column's value in `span`, of this column's kind.
    pub get: for<'a> fn(&'a Span) -> Value<'a>,
    /// Sets the field from a value read back from a store. A value of
    /// another kind, or NULL for a column that is not nullable, leaves the
    /// field as it is.
    pub set: fn(&mut Span, Owned),
    /// For a text column stored from a `String` field (every text column
    /// but `status`): that field, `None` inside when the field is NULL.
    pub text_mut: Option<fn(&mut Span) -> Option<&mut String>>,
}

impl std::fmt::Debug for Column {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Column")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("nullable", &self.nullable)
            .field("redact", &self.redact)
            .finish_non_exhaustive()
    }
}

/// One [`Column`] from a field and its Rust type: `col!("name", field:
/// Type)`, or `col!(redact "name", field: Type)` for a column redaction
/// applies to. The types are the ones `Span` uses.
macro_rules! col {
    (redact $name:literal, $f:ident: $($ty:tt)+) => {
        col!(@ $name, $f, true, $($ty)+)
    };
    ($name:literal, $f:ident: $($ty:tt)+) => {
        col!(@ $name, $f, false, $($ty)+)
    };
    (@ $name:literal, $f:ident, $redact:expr, String) => {
        Column {
            name: $name,
            kind: Kind::Text,
            nullable: false,
            redact: $redact,
            get: |s| Value::Text(Some(s.$f.as_str())),
            set: |s, v| {
                if let Owned::Text(Some(v)) = v {
                    s.$f = v;
                }
            },
            text_mut: Some(|s| Some(&mut s.$f)),
        }
    };
    (@ $name:literal, $f:ident, $redact:expr, Option<String>) => {
        Column {
            name: $name,
            kind: Kind::Text,
            nullable: true,
            redact: $redact,
            get: |s| Value::Text(s.$f.as_deref()),
            set: |s, v| {
                if let Owned::Text(v) = v {
                    s.$f = v;
                }
            },
            text_mut: Some(|s| s.$f.as_mut()),
        }
    };
    (@ $name:literal, $f:ident, $redact:expr, SpanStatus) => {
        Column {
            name: $name,
            kind: Kind::Text,
            nullable: false,
            redact: $redact,
            get: |s| Value::Text(Some(s.$f.as_str())),
            // A name this build does not know reads as failed.
            set: |s, v| {
                if let Owned::Text(Some(v)) = v {
                    s.$f = SpanStatus::parse(&v).unwrap_or(SpanStatus::Failed);
                }
            },
            text_mut: None,
        }
    };
    (@ $name:literal, $f:ident, $redact:expr, i64) => {
        Column {
            name: $name,
            kind: Kind::Int,
            nullable: false,
            redact: $redact,
            get: |s| Value::Int(Some(s.$f)),
            set: |s, v| {
                if let Owned::Int(Some(v)) = v {
                    s.$f = v;
                }
            },
            text_mut: None,
        }
    };
    (@ $name:literal, $f:ident, $redact:expr, Option<i64>) => {
        Column {
            name: $name,
            kind: Kind::Int,
            nullable: true,
            redact: $redact,
            get: |s| Value::Int(s.$f),
            set: |s, v| {
                if let Owned::Int(v) = v {
                    s.$f = v;
                }
            },
            text_mut: None,
        }
    };
    // A stored value out of `u16`'s range reads as NULL.
    (@ $name:literal, $f:ident, $redact:expr, Option<u16>) => {
        Column {
            name: $name,
            kind: Kind::Int,
            nullable: true,
            redact: $redact,
            get: |s| Value::Int(s.$f.map(i64::from)),
            set: |s, v| {
                if let Owned::Int(v) = v {
                    s.$f = v.and_then(|v| u16::try_from(v).ok());
                }
            },
            text_mut: None,
        }
    };
    (@ $name:literal, $f:ident, $redact:expr, f64) => {
        Column {
            name: $name,
            kind: Kind::Real,
            nullable: false,
            redact: $redact,
            get: |s| Value::Real(Some(s.$f)),
            set: |s, v| {
                if let Owned::Real(Some(v)) = v {
                    s.$f = v;
                }
            },
            text_mut: None,
        }
    };
    (@ $name:literal, $f:ident, $redact:expr, Option<f64>) => {
        Column {
            name: $name,
            kind: Kind::Real,
            nullable: true,
            redact: $redact,
            get: |s| Value::Real(s.$f),
            set: |s, v| {
                if let Owned::Real(v) = v {
                    s.$f = v;
                }
            },
            text_mut: None,
        }
    };
    (@ $name:literal, $f:ident, $redact:expr, bool) => {
        Column {
            name: $name,
            kind: Kind::Bool,
            nullable: false,
            redact: $redact,
            get: |s| Value::Bool(s.$f),
            set: |s, v| {
                if let Owned::Bool(v) = v {
                    s.$f = v;
                }
            },
            text_mut: None,
        }
    };
}

/// Every column of the span record, in the stores' column order (the
/// order of `Span`'s fields).
pub static COLUMNS: &[Column] = &[
    col!("trace_id", trace_id: String),
    col!("span_id", span_id: String),
    col!("parent_span_id", parent_span_id: Option<String>),
    col!("name", name: String),
    col!("operation_type", operation_type: String),
    col!("provider", provider: String),
    col!("route", route: String),
    col!("method", method: String),
    col!(redact "path", path: String),
    col!("model", model: Option<String>),
    col!("response_model", response_model: Option<String>),
    col!("stream", stream: bool),
    col!("http_status", http_status: Option<u16>),
    col!("status", status: SpanStatus),
    col!("error_type", error_type: Option<String>),
    col!(redact "error_message", error_message: Option<String>),
    col!("start_time", start_time_us: i64),
    col!("end_time", end_time_us: i64),
    col!("duration_ms", duration_ms: f64),
    col!("ttft_ms", ttft_ms: Option<f64>),
    col!("input_tokens", input_tokens: Option<i64>),
    col!("output_tokens", output_tokens: Option<i64>),
    col!("cached_input_tokens", cached_input_tokens: Option<i64>),
    col!("cache_write_tokens", cache_write_tokens: Option<i64>),
    col!("reasoning_tokens", reasoning_tokens: Option<i64>),
    col!("tokens_estimated", tokens_estimated: bool),
    col!("cost_usd", cost_usd: Option<f64>),
    col!("finish_reason", finish_reason: Option<String>),
    col!(redact "response_id", response_id: Option<String>),
    col!(redact "conversation_id", conversation_id: Option<String>),
    col!(redact "session_id", session_id: Option<String>),
    col!(redact "user_id", user_id: Option<String>),
    col!("api_key_hash", api_key_hash: Option<String>),
    col!(redact "properties", properties: Option<String>),
    col!(redact "request_body", request_body: Option<String>),
    col!(redact "response_body", response_body: Option<String>),
];

/// Calls `f` on every text field of `span` that is stored from a `String`
/// and is not NULL (for redaction, filtered by [`Column::redact`]; for
/// PostgreSQL, which cannot store NUL, all of them).
pub fn for_each_text(span: &mut Span, mut f: impl FnMut(&Column, &mut String)) {
    for c in COLUMNS {
        if let Some(t) = c.text_mut.and_then(|m| m(span)) {
            f(c, t);
        }
    }
}

/// A span with every column set to a value of its own (ids, texts, counts
/// and flags all distinct from `Span::default()`'s), for round-trip tests.
pub fn every_column_set() -> Span {
    let mut s = Span::default();
    for (i, c) in COLUMNS.iter().enumerate() {
        let n = i as i64 + 100;
        let v = match c.kind {
            Kind::Text if c.name == "status" => Owned::Text(Some("cancelled".into())),
            Kind::Text => Owned::Text(Some(format!("{}-{n} ü", c.name))),
            Kind::Int => Owned::Int(Some(n)),
            Kind::Real => Owned::Real(Some(n as f64 + 0.25)),
            Kind::Bool => Owned::Bool(true),
        };
        (c.set)(&mut s, v);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_kinds_consistent() {
        let names: std::collections::HashSet<_> = COLUMNS.iter().map(|c| c.name).collect();
        assert_eq!(names.len(), COLUMNS.len());
        let s = every_column_set();
        for c in COLUMNS {
            let kind = match (c.get)(&s) {
                Value::Text(_) => Kind::Text,
                Value::Int(_) => Kind::Int,
                Value::Real(_) => Kind::Real,
                Value::Bool(_) => Kind::Bool,
            };
            assert_eq!(kind, c.kind, "{}", c.name);
            assert_eq!(
                c.text_mut.is_some(),
                c.kind == Kind::Text && c.name != "status"
            );
            assert!(!(c.nullable && c.kind == Kind::Bool), "{}", c.name);
        }
    }

    /// Every field of `Span` is some column: set through the table, no
    /// field keeps its default (a field missing from the table would).
    #[test]
    fn every_field_is_a_column() {
        let set = serde_json::to_value(every_column_set()).unwrap();
        let default = serde_json::to_value(Span::default()).unwrap();
        let (set, default) = (set.as_object().unwrap(), default.as_object().unwrap());
        assert_eq!(set.len(), COLUMNS.len());
        for (field, v) in set {
            assert_ne!(Some(v), default.get(field), "{field} is not in COLUMNS");
        }
        let s = every_column_set();
        assert_eq!(s.status, SpanStatus::Cancelled);
        assert_eq!(s.http_status, Some(112));
    }

    /// Redaction walks exactly these fields.
    #[test]
    fn redacted_columns() {
        let redacted: Vec<_> = COLUMNS
            .iter()
            .filter(|c| c.redact)
            .map(|c| c.name)
            .collect();
        assert_eq!(
            redacted,
            [
                "path",
                "error_message",
                "response_id",
                "conversation_id",
                "session_id",
                "user_id",
                "properties",
                "request_body",
                "response_body"
            ]
        );
        assert!(COLUMNS
            .iter()
            .all(|c| !c.redact || (c.kind == Kind::Text && c.text_mut.is_some())));
    }

    #[test]
    fn set_reads_back_what_get_gave() {
        let s = every_column_set();
        let mut t = Span::default();
        for c in COLUMNS {
            let v = match (c.get)(&s) {
                Value::Text(v) => Owned::Text(v.map(str::to_owned)),
                Value::Int(v) => Owned::Int(v),
                Value::Real(v) => Owned::Real(v),
                Value::Bool(v) => Owned::Bool(v),
            };
            (c.set)(&mut t, v);
        }
        assert_eq!(s, t);
    }
}
