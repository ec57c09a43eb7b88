//! Query-string parsing for the API: percent-decoding, the names each
//! endpoint accepts, single values, lists, times, limits, durations, flags,
//! the span filter shared by `/api/traces` and `/api/export`, and the
//! opaque trace cursor.
//!
//! Untrusted bytes (fuzzed in `fuzz/fuzz_targets/parsers.rs`): never
//! panics, and every bad value is an [`ApiError::InvalidParam`] naming
//! its parameter.

use super::time::parse_time;
use super::{ApiError, MAX_ID};
use crate::output::store::{SpanFilter, TraceKey};

/// Default and largest page of `/api/traces`.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;
/// Most parameters in one query string.
const MAX_PARAMS: usize = 64;

/// The span-level filter parameters (`/api/traces` and `/api/export`).
pub const FILTER_PARAMS: &[&str] = &[
    "from",
    "to",
    "status",
    "operation_type",
    "model",
    "provider",
    "min_duration_ms",
    "max_duration_ms",
    "session_id",
    "user_id",
    "conversation_id",
    "property",
    "q",
];
const STATUSES: &[&str] = &["completed", "failed", "cancelled"];

/// A decoded query string, checked against the names an endpoint knows.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Decodes `a=b&c=d` (percent-encoding and `+`), refusing names not in
    /// `allowed`.
    pub fn parse(query: Option<&str>, allowed: &[&str]) -> Result<Params, ApiError> {
        let mut pairs = Vec::new();
        for piece in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
            let name = percent_decode(k).ok_or_else(|| {
                ApiError::invalid(
                    "query",
                    "a parameter name is not valid percent-encoded UTF-8",
                )
            })?;
            if !allowed.contains(&name.as_str()) {
                let known = if allowed.is_empty() {
                    "none".to_string()
                } else {
                    allowed.join(", ")
                };
                return Err(ApiError::invalid(
                    &name,
                    format!("unknown parameter {name:?} (known: {known})"),
                ));
            }
            let value = percent_decode(v).ok_or_else(|| {
                ApiError::invalid(&name, format!("{name}: not valid percent-encoded UTF-8"))
            })?;
            pairs.push((name, value));
            if pairs.len() > MAX_PARAMS {
                return Err(ApiError::invalid(
                    "query",
                    format!("more than {MAX_PARAMS} parameters"),
                ));
            }
        }
        Ok(Params { pairs })
    }

    /// A parameter given at most once; empty counts as absent.
    pub fn one(&self, name: &str) -> Result<Option<&str>, ApiError> {
        let mut found = None;
        for (k, v) in &self.pairs {
            if k == name && !v.is_empty() {
                if found.is_some() {
                    return Err(ApiError::invalid(
                        name,
                        format!("{name} given more than once"),
                    ));
                }
                found = Some(v.as_str());
            }
        }
        Ok(found)
    }

    /// Every value of a repeatable parameter, comma-separated values split.
    pub(super) fn list(&self, name: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == name)
            .flat_map(|(_, v)| v.split(','))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .collect()
    }

    pub(super) fn time(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.one(name)?
            .map(|v| {
                parse_time(v).ok_or_else(|| {
                    ApiError::invalid(
                        name,
                        format!("{name} {v:?}: expected RFC 3339 (2025-01-31T12:00:00Z) or microseconds since the epoch"),
                    )
                })
            })
            .transpose()
    }

    pub(super) fn limit(&self, name: &str, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.one(name)? {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid(name, format!("{name} {v:?}: expected 1 to {max}"))
                }),
        }
    }

    pub(super) fn millis(&self, name: &str) -> Result<Option<f64>, ApiError> {
        self.one(name)?
            .map(|v| {
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| {
                        ApiError::invalid(name, format!("{name} {v:?}: expected milliseconds >= 0"))
                    })
            })
            .transpose()
    }

    pub(super) fn flag(&self, name: &str, default: bool) -> Result<bool, ApiError> {
        match self.one(name)? {
            None => Ok(default),
            Some("true" | "1") => Ok(true),
            Some("false" | "0") => Ok(false),
            Some(v) => Err(ApiError::invalid(
                name,
                format!("{name} {v:?}: expected true or false"),
            )),
        }
    }

    /// The span-level filters.
    pub fn filter(&self) -> Result<SpanFilter, ApiError> {
        let status = self.list("status");
        if let Some(bad) = status.iter().find(|s| !STATUSES.contains(&s.as_str())) {
            return Err(ApiError::invalid(
                "status",
                format!("status {bad:?}: expected completed, failed or cancelled"),
            ));
        }
        let mut properties = Vec::new();
        for (k, v) in self
            .pairs
            .iter()
            .filter(|(k, v)| k == "property" && !v.is_empty())
        {
            let (key, value) = v
                .split_once(':')
                .filter(|(key, _)| !key.is_empty() && !key.contains('"'))
                .ok_or_else(|| {
                    ApiError::invalid(k, format!("property {v:?}: expected key:value"))
                })?;
            properties.push((key.to_string(), value.to_string()));
        }
        let f = SpanFilter {
            from_us: self.time("from")?,
            to_us: self.time("to")?,
            status,
            operation_type: self.list("operation_type"),
            model: self.list("model"),
            provider: self.list("provider"),
            min_duration_ms: self.millis("min_duration_ms")?,
            max_duration_ms: self.millis("max_duration_ms")?,
            session_id: self.one("session_id")?.map(str::to_string),
            user_id: self.one("user_id")?.map(str::to_string),
            conversation_id: self.one("conversation_id")?.map(str::to_string),
            properties,
            q: self.one("q")?.map(str::to_string),
        };
        if let (Some(from), Some(to)) = (f.from_us, f.to_us) {
            if from >= to {
                return Err(ApiError::invalid("to", "to must be after from"));
            }
        }
        if let (Some(lo), Some(hi)) = (f.min_duration_ms, f.max_duration_ms) {
            if lo > hi {
                return Err(ApiError::invalid(
                    "max_duration_ms",
                    "max_duration_ms must not be below min_duration_ms",
                ));
            }
        }
        Ok(f)
    }
}

/// `%XX` and `+` decoded; `None` for a bad escape or non-UTF-8 result.
pub fn percent_decode(s: &str) -> Option<String> {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let h = b.get(i + 1..i + 3)?;
                out.push(hex(h[0])? << 4 | hex(h[1])?);
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The opaque cursor: hex of `t1:{start}:{trace_id}`.
pub fn encode_cursor(k: &TraceKey) -> String {
    crate::record::span::hex(format!("t1:{}:{}", k.start_time_us, k.trace_id).as_bytes())
}

pub fn decode_cursor(s: &str) -> Result<TraceKey, ApiError> {
    let bad = || ApiError::invalid("cursor", "cursor is not one this API returned");
    if !s.len().is_multiple_of(2) || s.len() > 2 * (MAX_ID + 32) {
        return Err(bad());
    }
    let bytes = (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let rest = text.strip_prefix("t1:").ok_or_else(bad)?;
    let (start, trace_id) = rest.split_once(':').ok_or_else(bad)?;
    let start_time_us = start.parse::<i64>().map_err(|_| bad())?;
    if trace_id.is_empty() {
        return Err(bad());
    }
    Ok(TraceKey {
        start_time_us,
        trace_id: trace_id.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding_and_unknown_names() {
        let p = Params::parse(
            Some("model=gpt-4o&status=failed,cancelled&q=50%25+off&property=team%3Asearch&model="),
            FILTER_PARAMS,
        )
        .unwrap();
        let f = p.filter().unwrap();
        assert_eq!(f.model, vec!["gpt-4o"]);
        assert_eq!(f.status, vec!["failed", "cancelled"]);
        assert_eq!(f.q.as_deref(), Some("50% off"));
        assert_eq!(
            f.properties,
            vec![("team".to_string(), "search".to_string())]
        );
        let param = |r: Result<Params, ApiError>| match r {
            Err(ApiError::InvalidParam { param, .. }) => param,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            param(Params::parse(Some("modle=x"), FILTER_PARAMS)),
            "modle"
        );
        assert_eq!(param(Params::parse(Some("q=%zz"), FILTER_PARAMS)), "q");
        assert_eq!(param(Params::parse(Some("q=%ff"), FILTER_PARAMS)), "q");
        let err = |q: &str| match Params::parse(Some(q), FILTER_PARAMS).unwrap().filter() {
            Err(ApiError::InvalidParam { param, .. }) => param,
            other => panic!("{q}: {other:?}"),
        };
        assert_eq!(err("status=running"), "status");
        assert_eq!(err("from=soon"), "from");
        assert_eq!(err("from=10&to=5"), "to");
        assert_eq!(err("min_duration_ms=-1"), "min_duration_ms");
        assert_eq!(
            err("min_duration_ms=5&max_duration_ms=1"),
            "max_duration_ms"
        );
        assert_eq!(err("property=novalue"), "property");
        assert_eq!(err("user_id=a&user_id=b"), "user_id");
        let many = vec![""; 3 * MAX_PARAMS].join("&");
        assert!(
            Params::parse(Some(&many), FILTER_PARAMS).is_ok(),
            "empty pieces are skipped"
        );
        let many = vec!["q=x"; MAX_PARAMS + 1].join("&");
        assert_eq!(param(Params::parse(Some(&many), FILTER_PARAMS)), "query");
    }

    #[test]
    fn cursors_round_trip_and_reject_forgeries() {
        let k = TraceKey {
            start_time_us: 1_700_000_000_123_456,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        };
        assert_eq!(decode_cursor(&encode_cursor(&k)).unwrap(), k);
        for bad in [
            "",
            "zz",
            "abc",
            &crate::record::span::hex(b"t2:1:x"),
            &crate::record::span::hex(b"t1:x:y"),
            &crate::record::span::hex(b"t1:5:"),
        ] {
            assert!(decode_cursor(bad).is_err(), "{bad:?}");
        }
    }

    proptest::proptest! {
        /// Arbitrary query strings and values never panic the parsers.
        #[test]
        fn parsers_take_any_input(s in "\\PC{0,64}", raw in proptest::collection::vec(0u8..=255, 0..64)) {
            let text = format!("{s}{}", String::from_utf8_lossy(&raw));
            if let Ok(p) = Params::parse(Some(&text), FILTER_PARAMS) {
                let _ = p.filter();
            }
            let _ = parse_time(&text);
            let _ = decode_cursor(&text);
            let _ = percent_decode(&text);
        }
    }
}
