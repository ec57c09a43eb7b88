//! The span record: one row per finished exchange (or tool call).
//!
//! Owns the record's fields, the W3C-hex ids and the status vocabulary. A
//! span is plain data: building, parsing and writing it happen elsewhere.
//! Its columns, for everything that walks them one by one, are declared in
//! [`schema`].

pub mod schema;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;

/// How a span ended. (`running` exists only in memory, before the span is
/// written.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpanStatus {
    #[default]
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl SpanStatus {
    /// The stored name back into a status.
    pub fn parse(s: &str) -> Option<SpanStatus> {
        Some(match s {
            "running" => SpanStatus::Running,
            "completed" => SpanStatus::Completed,
            "failed" => SpanStatus::Failed,
            "cancelled" => SpanStatus::Cancelled,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SpanStatus::Running => "running",
            SpanStatus::Completed => "completed",
            SpanStatus::Failed => "failed",
            SpanStatus::Cancelled => "cancelled",
        }
    }
}

/// One span, as stored. Times are microseconds since the Unix epoch.
/// Every field is a column of [`schema::COLUMNS`], in this order. The
/// default is all empty: no ids, status `running`, times 0.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Span {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    /// OpenTelemetry style: `"{operation} {model}"`, e.g. `chat gpt-4o`.
    pub name: String,
    /// `llm_call`, `embedding`, `tool_call`, `http`, ...
    pub operation_type: String,
    pub provider: String,
    /// The route prefix that matched.
    pub route: String,
    pub method: String,
    /// The path as the client sent it (no query: queries can carry keys).
    pub path: String,
    pub model: Option<String>,
    pub response_model: Option<String>,
    pub stream: bool,
    pub http_status: Option<u16>,
    pub status: SpanStatus,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub start_time_us: i64,
    pub end_time_us: i64,
    pub duration_ms: f64,
    /// Request arrival to the first content-bearing chunk of a stream.
    pub ttft_ms: Option<f64>,
    pub input_tokens: Option<i64>,
    pub output_tokens: Option<i64>,
    pub cached_input_tokens: Option<i64>,
    pub cache_write_tokens: Option<i64>,
    pub reasoning_tokens: Option<i64>,
    /// True when any token count was estimated rather than reported.
    pub tokens_estimated: bool,
    /// NULL when the model has no known price (never 0 for unknown).
    pub cost_usd: Option<f64>,
    pub finish_reason: Option<String>,
    /// The provider's response id: the message id.
    pub response_id: Option<String>,
    pub conversation_id: Option<String>,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    /// Short salted hash of the API key; never the key.
    pub api_key_hash: Option<String>,
    /// JSON object text of custom properties.
    pub properties: Option<String>,
    pub request_body: Option<String>,
    pub response_body: Option<String>,
}

impl Span {
    /// A span with fresh ids, status `running`, starting now.
    pub fn start(now_us: i64) -> Span {
        Span {
            trace_id: new_trace_id(),
            span_id: new_span_id(),
            start_time_us: now_us,
            end_time_us: now_us,
            ..Span::default()
        }
    }

    /// Approximate heap + inline size, for the queue's byte budget: the
    /// struct and the bytes of its `String` fields.
    pub fn approx_bytes(&self) -> usize {
        let mut n = std::mem::size_of::<Span>();
        let _ = schema::try_for_each_value(self, |c, v| {
            if let (Some(_), schema::Value::Text(Some(t))) = (c.text_mut, v) {
                n += t.len();
            }
            Ok::<(), std::convert::Infallible>(())
        });
        n
    }
}

/// Token counts as reported (or estimated). `input` is the total input
/// (cached and cache-write tokens included, as OpenTelemetry counts it);
/// `output` includes reasoning tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: Option<i64>,
    pub output: Option<i64>,
    pub cached_input: Option<i64>,
    pub cache_write: Option<i64>,
    pub reasoning: Option<i64>,
}

impl Span {
    /// The span's token counts as one value.
    pub fn usage(&self) -> Usage {
        Usage {
            input: self.input_tokens,
            output: self.output_tokens,
            cached_input: self.cached_input_tokens,
            cache_write: self.cache_write_tokens,
            reasoning: self.reasoning_tokens,
        }
    }

    /// Sets the span's token counts from a provider's usage.
    pub fn set_usage(&mut self, u: Usage) {
        self.input_tokens = u.input;
        self.output_tokens = u.output;
        self.cached_input_tokens = u.cached_input;
        self.cache_write_tokens = u.cache_write;
        self.reasoning_tokens = u.reasoning;
    }
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// 32 lowercase hex digits, never all zero (W3C trace-id).
pub fn new_trace_id() -> String {
    // 48 bits of milliseconds since the epoch, then 80 random bits: ids sort
    // by creation time, so the store's indexes on them take appends (see
    // migration 0003), while the right-most 8 bytes stay random, as W3C
    // Trace Context level 2 and trace-id ratio samplers expect.
    let ms = (now_us() / 1000) as u128 & 0xffff_ffff_ffff;
    let random: u128 = rand::rng().random::<u128>() >> 48;
    hex(&((ms << 80) | random).max(1).to_be_bytes())
}

/// 16 lowercase hex digits, never all zero (W3C parent-id): 40 bits of
/// milliseconds since the epoch (wrapping every 34 years), then a 24-bit
/// per-process sequence that starts at a random value. Unique within a
/// process for 16 million spans per millisecond; the store keys spans by
/// (trace id, span id), as W3C scopes a span id to its trace.
pub fn new_span_id() -> String {
    static SEQ: OnceLock<AtomicU32> = OnceLock::new();
    let seq = SEQ
        .get_or_init(|| AtomicU32::new(rand::rng().random()))
        .fetch_add(1, Ordering::Relaxed);
    let ms = (now_us() / 1000) as u64 & 0xff_ffff_ffff;
    let v = (ms << 24) | u64::from(seq & 0xff_ffff);
    hex(&v.max(1).to_be_bytes())
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_w3c_hex() {
        let t = new_trace_id();
        let s = new_span_id();
        assert_eq!(t.len(), 32);
        assert_eq!(s.len(), 16);
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(t, new_trace_id());
    }

    #[test]
    fn ids_sort_by_creation_time_and_never_repeat() {
        let mut spans: Vec<String> = Vec::new();
        let mut traces: Vec<String> = Vec::new();
        for _ in 0..3 {
            for _ in 0..10_000 {
                spans.push(new_span_id());
                traces.push(new_trace_id());
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        // The time prefix never goes down between calls.
        let span_ms = |s: &String| u64::from_str_radix(&s[..10], 16).unwrap();
        let trace_ms = |s: &String| u64::from_str_radix(&s[..12], 16).unwrap();
        assert!(spans.windows(2).all(|w| span_ms(&w[0]) <= span_ms(&w[1])));
        assert!(traces
            .windows(2)
            .all(|w| trace_ms(&w[0]) <= trace_ms(&w[1])));
        let now_ms = (now_us() / 1000) as u64;
        assert!(now_ms - trace_ms(traces.last().unwrap()) < 60_000);
        let unique = |v: &[String]| v.iter().collect::<std::collections::HashSet<_>>().len();
        assert_eq!(unique(&spans), spans.len());
        assert_eq!(unique(&traces), traces.len());
        // The right-most 8 bytes of trace ids are random: not all equal.
        let low: std::collections::HashSet<_> = traces.iter().map(|t| &t[16..]).collect();
        assert!(low.len() > traces.len() - 10);
    }

    #[test]
    fn approx_bytes_grows_with_bodies() {
        let mut s = Span::start(0);
        let base = s.approx_bytes();
        s.request_body = Some("x".repeat(1000));
        assert_eq!(s.approx_bytes(), base + 1000);
    }

    /// The struct and the bytes of its `String` fields (not the status's
    /// static name).
    #[test]
    fn approx_bytes_counts_owned_text() {
        assert_eq!(Span::default().approx_bytes(), std::mem::size_of::<Span>());
        let s = schema::every_column_set();
        let text: usize = [&s.trace_id, &s.path, s.request_body.as_ref().unwrap()]
            .iter()
            .map(|t| t.len())
            .sum();
        assert!(s.approx_bytes() > std::mem::size_of::<Span>() + text);
    }
}
