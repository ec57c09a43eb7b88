//! Context: what the caller tells llmtap about where a request belongs, in
//! headers — W3C `traceparent`/`tracestate`, llmtap's own `x-llmtap-*`
//! headers, and Helicone's equivalents (so a team moving from Helicone keeps
//! its headers).
//!
//! Owns parsing and limits only. Malformed values are ignored (never an
//! error); values are capped in size and properties in count; values that
//! are not UTF-8 are dropped and counted. It never removes or changes a
//! header: `upstream` strips `x-llmtap-*`, and Helicone's go on as they came.

use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderMap;

/// Longest header value kept (longer ones are cut at a char boundary).
pub const MAX_VALUE_BYTES: usize = 1024;
/// Most custom properties kept per request.
pub const MAX_PROPERTIES: usize = 32;
/// Longest property name kept.
pub const MAX_PROPERTY_NAME: usize = 64;

/// A valid W3C trace context parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: String,
    pub parent_span_id: String,
    pub flags: u8,
}

/// Everything the headers say. Empty when the caller says nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Explicit {
    pub traceparent: Option<TraceParent>,
    pub tracestate: Option<String>,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub conversation_id: Option<String>,
    pub trace_name: Option<String>,
    pub session_path: Option<String>,
    pub session_name: Option<String>,
    /// Custom properties, in header order, names lowercased.
    pub properties: Vec<(String, String)>,
}

impl Explicit {
    /// The span's `properties` JSON: custom properties plus `tracestate`
    /// and llmtap's reserved `llmtap.*` keys. `None` when there are none.
    pub fn properties_json(&self) -> Option<String> {
        let mut map = serde_json::Map::new();
        for (k, v) in &self.properties {
            map.insert(k.clone(), serde_json::Value::String(v.clone()));
        }
        let reserved = [
            ("tracestate", &self.tracestate),
            ("llmtap.trace_name", &self.trace_name),
            ("llmtap.session_path", &self.session_path),
            ("llmtap.session_name", &self.session_name),
        ];
        for (k, v) in reserved {
            if let Some(v) = v {
                map.insert(k.to_string(), serde_json::Value::String(v.clone()));
            }
        }
        (!map.is_empty()).then(|| serde_json::Value::Object(map).to_string())
    }
}

/// Parses `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`; later versions
/// accepted by the same prefix). Invalid: `None`.
pub fn parse_traceparent(value: &str) -> Option<TraceParent> {
    let v = value.trim();
    let mut parts = v.splitn(5, '-');
    let version = parts.next()?;
    let trace_id = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let rest = parts.next();
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if !hex(version, 2)
        || version == "ff"
        || !hex(trace_id, 32)
        || !hex(parent, 16)
        || !hex(flags, 2)
    {
        return None;
    }
    // Version 00 has exactly four fields; later versions may add more.
    if version == "00" && rest.is_some() {
        return None;
    }
    if trace_id.bytes().all(|b| b == b'0') || parent.bytes().all(|b| b == b'0') {
        return None;
    }
    Some(TraceParent {
        trace_id: trace_id.to_string(),
        parent_span_id: parent.to_string(),
        flags: u8::from_str_radix(flags, 16).ok()?,
    })
}

/// Headers whose values were dropped for not being UTF-8.
#[derive(Debug, Default)]
pub struct ContextStats {
    pub invalid_utf8: AtomicU64,
}

fn cap(s: &str) -> String {
    let s = s.trim();
    if s.len() <= MAX_VALUE_BYTES {
        return s.to_string();
    }
    let mut cut = MAX_VALUE_BYTES;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s[..cut].to_string()
}

/// Reads the context headers.
pub fn from_headers(headers: &HeaderMap, stats: &ContextStats) -> Explicit {
    let mut e = Explicit::default();
    for (name, value) in headers {
        let name = name.as_str();
        // Quick reject: only our, Helicone's and W3C's names matter.
        let interesting = name.starts_with("x-llmtap-")
            || name.starts_with("helicone-")
            || name == "traceparent"
            || name == "tracestate";
        if !interesting {
            continue;
        }
        let Ok(value) = std::str::from_utf8(value.as_bytes()) else {
            stats.invalid_utf8.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let value = cap(value);
        if value.is_empty() {
            continue;
        }
        let property = name
            .strip_prefix("x-llmtap-property-")
            .or_else(|| name.strip_prefix("helicone-property-"));
        if let Some(prop) = property {
            if !prop.is_empty()
                && prop.len() <= MAX_PROPERTY_NAME
                && e.properties.len() < MAX_PROPERTIES
                && !e.properties.iter().any(|(k, _)| k == prop)
            {
                e.properties.push((prop.to_string(), value));
            }
            continue;
        }
        // llmtap's own headers win over Helicone's when both are sent.
        let ours = name.starts_with("x-llmtap-");
        let slot = match name {
            "traceparent" => {
                e.traceparent = parse_traceparent(&value);
                continue;
            }
            "tracestate" => &mut e.tracestate,
            "x-llmtap-session-id" | "helicone-session-id" => &mut e.session_id,
            "x-llmtap-user-id" | "helicone-user-id" => &mut e.user_id,
            "x-llmtap-conversation-id" => &mut e.conversation_id,
            "x-llmtap-trace-name" | "helicone-session-name" if ours || e.trace_name.is_none() => {
                if !ours {
                    e.session_name = Some(value.clone());
                }
                &mut e.trace_name
            }
            "helicone-session-path" => &mut e.session_path,
            _ => continue,
        };
        if ours || slot.is_none() {
            *slot = Some(value);
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn traceparent_validation() {
        let ok =
            parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(ok.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ok.parent_span_id, "00f067aa0ba902b7");
        assert_eq!(ok.flags, 1);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
        // A future version may carry more fields.
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-zz")
                .is_some()
        );
    }

    #[test]
    fn ours_and_helicone_headers() {
        let stats = ContextStats::default();
        let e = from_headers(
            &headers(&[
                ("x-llmtap-session-id", b"s1"),
                ("helicone-session-id", b"s2"),
                ("helicone-user-id", b"u9"),
                ("x-llmtap-conversation-id", b"c1"),
                ("x-llmtap-property-team", b"search"),
                ("helicone-property-env", b"prod"),
                ("helicone-session-path", b"/plan/step-1"),
                ("helicone-session-name", b"Trip planner"),
                ("tracestate", b"vendor=abc"),
                (
                    "traceparent",
                    b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                ),
            ]),
            &stats,
        );
        assert_eq!(e.session_id.as_deref(), Some("s1"));
        assert_eq!(e.user_id.as_deref(), Some("u9"));
        assert_eq!(e.conversation_id.as_deref(), Some("c1"));
        assert_eq!(e.session_path.as_deref(), Some("/plan/step-1"));
        assert_eq!(e.trace_name.as_deref(), Some("Trip planner"));
        assert_eq!(
            e.traceparent.as_ref().unwrap().parent_span_id,
            "00f067aa0ba902b7"
        );
        let props: serde_json::Value = serde_json::from_str(&e.properties_json().unwrap()).unwrap();
        assert_eq!(props["team"], "search");
        assert_eq!(props["env"], "prod");
        assert_eq!(props["tracestate"], "vendor=abc");
        assert_eq!(props["llmtap.session_path"], "/plan/step-1");
    }

    #[test]
    fn limits_and_invalid_utf8() {
        let stats = ContextStats::default();
        let long = vec![b'x'; 5000];
        let mut pairs: Vec<(String, Vec<u8>)> = vec![
            ("x-llmtap-user-id".into(), b"\xff\xfe".to_vec()),
            ("x-llmtap-session-id".into(), long.clone()),
            ("x-llmtap-property-".into(), b"no name".to_vec()),
            (
                "x-llmtap-property-".to_string() + &"n".repeat(100),
                b"long name".to_vec(),
            ),
        ];
        for i in 0..100 {
            pairs.push((format!("x-llmtap-property-p{i}"), b"v".to_vec()));
        }
        let refs: Vec<(&str, &[u8])> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        let e = from_headers(&headers(&refs), &stats);
        assert_eq!(stats.invalid_utf8.load(Ordering::Relaxed), 1);
        assert!(e.user_id.is_none());
        assert_eq!(e.session_id.unwrap().len(), MAX_VALUE_BYTES);
        assert_eq!(e.properties.len(), MAX_PROPERTIES);
        assert!(e.properties.iter().all(|(k, _)| k.starts_with('p')));
        assert!(from_headers(&HeaderMap::new(), &stats)
            .properties_json()
            .is_none());
    }
}
