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
//! The table's getters are calls through pointers; the per-span hot loops
//! (the SQLite binds, the `COPY` row, the queue's size estimate, the text
//! walk of redaction and NUL-stripping) use [`try_for_each_value`] and
//! [`for_each_text`] instead, which the same declaration expands into
//! straight-line field reads.
//!
//! Must never: allocate to read a column (the writer reads every column of
//! every span).

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

/// What a field's Rust type makes of its column (the types `Span` uses):
/// `@kind`, `@nullable`, `@get` (the value, borrowed), `@set` (from a read
/// value: another kind, or NULL for a column that is not nullable, leaves
/// the field as it is), `@text_mut` (the `String`, for text stored from
/// one) and `@each_text` (`g(column, &mut string)` when there is one). `@redact` turns the entry's optional `redact` flag into a
/// bool.
macro_rules! field {
    (@redact) => {
        false
    };
    (@redact redact) => {
        true
    };

    (@kind String) => {
        Kind::Text
    };
    (@kind Option<String>) => {
        Kind::Text
    };
    (@kind SpanStatus) => {
        Kind::Text
    };
    (@kind i64) => {
        Kind::Int
    };
    (@kind Option<i64>) => {
        Kind::Int
    };
    (@kind Option<u16>) => {
        Kind::Int
    };
    (@kind f64) => {
        Kind::Real
    };
    (@kind Option<f64>) => {
        Kind::Real
    };
    (@kind bool) => {
        Kind::Bool
    };

    (@nullable Option<$t:ident>) => {
        true
    };
    (@nullable $t:ident) => {
        false
    };

    (@get $s:ident . $f:ident, String) => {
        Value::Text(Some($s.$f.as_str()))
    };
    (@get $s:ident . $f:ident, Option<String>) => {
        Value::Text($s.$f.as_deref())
    };
    (@get $s:ident . $f:ident, SpanStatus) => {
        Value::Text(Some($s.$f.as_str()))
    };
    (@get $s:ident . $f:ident, i64) => {
        Value::Int(Some($s.$f))
    };
    (@get $s:ident . $f:ident, Option<i64>) => {
        Value::Int($s.$f)
    };
    (@get $s:ident . $f:ident, Option<u16>) => {
        Value::Int($s.$f.map(i64::from))
    };
    (@get $s:ident . $f:ident, f64) => {
        Value::Real(Some($s.$f))
    };
    (@get $s:ident . $f:ident, Option<f64>) => {
        Value::Real($s.$f)
    };
    (@get $s:ident . $f:ident, bool) => {
        Value::Bool($s.$f)
    };

    (@set $s:ident . $f:ident = $v:ident, String) => {
        if let Owned::Text(Some(v)) = $v {
            $s.$f = v;
        }
    };
    (@set $s:ident . $f:ident = $v:ident, Option<String>) => {
        if let Owned::Text(v) = $v {
            $s.$f = v;
        }
    };
    // A name this build does not know reads as failed.
    (@set $s:ident . $f:ident = $v:ident, SpanStatus) => {
        if let Owned::Text(Some(v)) = $v {
            $s.$f = SpanStatus::parse(&v).unwrap_or(SpanStatus::Failed);
        }
    };
    (@set $s:ident . $f:ident = $v:ident, i64) => {
        if let Owned::Int(Some(v)) = $v {
            $s.$f = v;
        }
    };
    (@set $s:ident . $f:ident = $v:ident, Option<i64>) => {
        if let Owned::Int(v) = $v {
            $s.$f = v;
        }
    };
    // A stored value out of `u16`'s range reads as NULL.
    (@set $s:ident . $f:ident = $v:ident, Option<u16>) => {
        if let Owned::Int(v) = $v {
            $s.$f = v.and_then(|v| u16::try_from(v).ok());
        }
    };
    (@set $s:ident . $f:ident = $v:ident, f64) => {
        if let Owned::Real(Some(v)) = $v {
            $s.$f = v;
        }
    };
    (@set $s:ident . $f:ident = $v:ident, Option<f64>) => {
        if let Owned::Real(v) = $v {
            $s.$f = v;
        }
    };
    (@set $s:ident . $f:ident = $v:ident, bool) => {
        if let Owned::Bool(v) = $v {
            $s.$f = v;
        }
    };

    (@text_mut $f:ident, String) => {
        Some(|s| Some(&mut s.$f))
    };
    (@text_mut $f:ident, Option<String>) => {
        Some(|s| s.$f.as_mut())
    };
    (@text_mut $f:ident, $($t:tt)+) => {
        None
    };

    (@each_text $s:ident . $f:ident, $g:ident($c:expr), String) => {
        $g($c, &mut $s.$f)
    };
    (@each_text $s:ident . $f:ident, $g:ident($c:expr), Option<String>) => {
        if let Some(t) = $s.$f.as_mut() {
            $g($c, t)
        }
    };
    (@each_text $s:ident . $f:ident, $g:ident($c:expr), $($t:tt)+) => {};
}

/// The table, from one entry per column: `([redact,] "name", field:
/// Type)`. Makes [`COLUMNS`], and [`try_for_each_value`] and
/// [`for_each_text`]: walks over the same columns that read each field
/// directly (no call through a pointer), for the per-span hot loops.
macro_rules! columns {
    ($( ($($redact:ident,)? $name:literal, $f:ident: $($ty:tt)+) ),+ $(,)?) => {
        /// Each field's position in the table.
        #[allow(non_camel_case_types, clippy::enum_variant_names)]
        #[derive(Clone, Copy)]
        enum Index { $($f),+ }

        static TABLE: [Column; [$(Index::$f),+].len()] = [$(
            Column {
                name: $name,
                kind: field!(@kind $($ty)+),
                nullable: field!(@nullable $($ty)+),
                redact: field!(@redact $($redact)?),
                get: |s| field!(@get s.$f, $($ty)+),
                set: |s, v| field!(@set s.$f = v, $($ty)+),
                text_mut: field!(@text_mut $f, $($ty)+),
            }
        ),+];

        /// Every column of the span record, in the stores' column order
        /// (the order of `Span`'s fields).
        pub static COLUMNS: &[Column] = &TABLE;

        /// Calls `f` with every column of [`COLUMNS`], in order, and its
        /// value in `s` (what [`Column::get`] gives, read inline: the
        /// writer's and the queue's per-span walk), stopping at the first
        /// error.
        #[inline]
        pub fn try_for_each_value<'a, E>(
            s: &'a Span,
            mut f: impl FnMut(&'static Column, Value<'a>) -> Result<(), E>,
        ) -> Result<(), E> {
            $( f(&TABLE[Index::$f as usize], field!(@get s.$f, $($ty)+))?; )+
            Ok(())
        }

        /// Calls `f` with every text column stored from a `String` field
        /// (all but `status`) and that field, when it is not NULL, in
        /// order, field by field (for redaction, filtered by
        /// [`Column::redact`]; for PostgreSQL, which cannot store NUL, all
        /// of them).
        #[inline]
        pub fn for_each_text(s: &mut Span, mut f: impl FnMut(&'static Column, &mut String)) {
            $( field!(@each_text s.$f, f(&TABLE[Index::$f as usize]), $($ty)+); )+
        }
    };
}

columns! {
    ("trace_id", trace_id: String),
    ("span_id", span_id: String),
    ("parent_span_id", parent_span_id: Option<String>),
    ("name", name: String),
    ("operation_type", operation_type: String),
    ("provider", provider: String),
    ("route", route: String),
    ("method", method: String),
    (redact, "path", path: String),
    ("model", model: Option<String>),
    ("response_model", response_model: Option<String>),
    ("stream", stream: bool),
    ("http_status", http_status: Option<u16>),
    ("status", status: SpanStatus),
    ("error_type", error_type: Option<String>),
    (redact, "error_message", error_message: Option<String>),
    ("start_time", start_time_us: i64),
    ("end_time", end_time_us: i64),
    ("duration_ms", duration_ms: f64),
    ("ttft_ms", ttft_ms: Option<f64>),
    ("input_tokens", input_tokens: Option<i64>),
    ("output_tokens", output_tokens: Option<i64>),
    ("cached_input_tokens", cached_input_tokens: Option<i64>),
    ("cache_write_tokens", cache_write_tokens: Option<i64>),
    ("reasoning_tokens", reasoning_tokens: Option<i64>),
    ("tokens_estimated", tokens_estimated: bool),
    ("cost_usd", cost_usd: Option<f64>),
    ("finish_reason", finish_reason: Option<String>),
    (redact, "response_id", response_id: Option<String>),
    (redact, "conversation_id", conversation_id: Option<String>),
    (redact, "session_id", session_id: Option<String>),
    (redact, "user_id", user_id: Option<String>),
    ("api_key_hash", api_key_hash: Option<String>),
    (redact, "properties", properties: Option<String>),
    (redact, "request_body", request_body: Option<String>),
    (redact, "response_body", response_body: Option<String>),
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

    /// The inline walk gives what the table's getters give, in order.
    #[test]
    fn the_inline_walk_agrees_with_the_table() {
        let s = every_column_set();
        let mut seen = Vec::new();
        try_for_each_value(&s, |c, v| {
            seen.push((c.name, v));
            Ok::<(), ()>(())
        })
        .unwrap();
        let table: Vec<_> = COLUMNS.iter().map(|c| (c.name, (c.get)(&s))).collect();
        assert_eq!(seen, table);
        let mut n = 0;
        let stopped = try_for_each_value(&s, |_, _| {
            n += 1;
            if n == 3 {
                Err(())
            } else {
                Ok(())
            }
        });
        assert_eq!((stopped, n), (Err(()), 3));
    }

    /// `for_each_text` visits exactly the non-NULL `String` columns.
    #[test]
    fn the_text_walk_visits_owned_text() {
        let mut s = every_column_set();
        s.model = None;
        let mut seen = Vec::new();
        for_each_text(&mut s, |c, t| {
            assert!(t.starts_with(c.name));
            seen.push(c.name);
        });
        let want: Vec<_> = COLUMNS
            .iter()
            .filter(|c| c.text_mut.is_some() && c.name != "model")
            .map(|c| c.name)
            .collect();
        assert_eq!(seen, want);
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
