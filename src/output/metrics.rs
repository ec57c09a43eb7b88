//! Metrics: Prometheus text exposition of what llmtap sees and does.
//!
//! Owns the in-memory series: requests by provider/model/operation/status,
//! the OpenTelemetry GenAI client histograms (`gen_ai_client_operation_duration_seconds`,
//! `gen_ai_client_token_usage`, time to first chunk) with the semantic
//! conventions' bucket boundaries, and renders them together with the
//! recorder's own gauges and counters. Recording is a short mutex section
//! per finished span; label sets are capped (`MAX_SERIES`), past which
//! series fold into `model="other"`. Never awaits, never fails.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::record::span::Span;

/// Bucket boundaries of `gen_ai.client.operation.duration` (seconds).
pub const DURATION_BUCKETS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// Bucket boundaries of `gen_ai.client.token.usage` (tokens).
pub const TOKEN_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];
/// Most distinct label sets per metric.
pub const MAX_SERIES: usize = 2000;
/// Bucket boundaries of `llmtap_added_latency_seconds`: llmtap's own time is
/// tens of microseconds, so the buckets start where the GenAI ones cannot see.
pub const ADDED_LATENCY_BUCKETS: &[f64] = &[
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005,
    0.01, 0.025, 0.1,
];

/// A lock-free histogram of llmtap's own time per exchange: the time in the
/// proxy handler minus the time spent waiting for the upstream's response
/// head (connect, TLS, upload and the provider's think time are the
/// upstream's). Recorded by the request path with two relaxed atomic adds.
pub struct AddedLatency {
    counts: [AtomicU64; 13],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Default for AddedLatency {
    fn default() -> Self {
        AddedLatency {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl AddedLatency {
    /// Records one exchange's added time.
    pub fn observe(&self, added: std::time::Duration) {
        let secs = added.as_secs_f64();
        if let Some(i) = ADDED_LATENCY_BUCKETS.iter().position(|&b| secs <= b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        let ns = u64::try_from(added.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    fn render(&self, out: &mut String) {
        let name = "llmtap_added_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time spent in llmtap per exchange, excluding the wait for the upstream's response head.\n# TYPE {name} histogram"
        );
        let mut cumulative = 0;
        for (b, c) in ADDED_LATENCY_BUCKETS.iter().zip(&self.counts) {
            cumulative += c.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_ns.load(Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

#[derive(Debug, Clone)]
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| v <= b) {
            self.counts[i] += 1;
        }
        self.sum += v;
        self.count += 1;
    }
}

/// (provider, model, operation[, extra]) label values.
type Labels = (String, String, String, String);

#[derive(Default)]
struct Series {
    requests: HashMap<Labels, u64>,
    duration: HashMap<Labels, Histogram>,
    tokens: HashMap<Labels, Histogram>,
    ttfc: HashMap<Labels, Histogram>,
}

/// See the module docs.
#[derive(Default)]
pub struct Metrics {
    series: Mutex<Series>,
    /// llmtap's own time per exchange, recorded by the proxy (tracing on or off).
    pub added_latency: AddedLatency,
    /// Connections and requests in flight on the request path.
    pub traffic: Arc<Traffic>,
}

/// Gauges and counters of the request path, updated with single atomic
/// operations (never a lock) by the listener, the proxy and the upstream
/// client. After every connection has closed, all three gauges are 0: the
/// fault tests assert exactly that to prove nothing leaked.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Client connections open on the proxy listener.
    pub open_connections: AtomicI64,
    /// Proxied requests whose response has not ended (a request counts
    /// until its response body is finished or dropped).
    pub inflight_requests: AtomicI64,
    /// TCP connections to upstreams (in use or idle in the pool).
    pub upstream_connections: AtomicI64,
    /// Requests answered 413 or cut for a body over `limits.max_body_bytes`.
    pub body_too_large: AtomicU64,
    /// Response bodies cut by the idle timeout.
    pub idle_timeouts: AtomicU64,
}

/// Holds one unit of a gauge; gives it back when dropped.
#[derive(Debug)]
pub struct GaugeGuard {
    gauge: Arc<Traffic>,
    which: fn(&Traffic) -> &AtomicI64,
}

impl GaugeGuard {
    /// Adds one to the gauge `which` picks, until the guard is dropped.
    pub fn new(traffic: &Arc<Traffic>, which: fn(&Traffic) -> &AtomicI64) -> GaugeGuard {
        which(traffic).fetch_add(1, Ordering::Relaxed);
        GaugeGuard {
            gauge: Arc::clone(traffic),
            which,
        }
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        (self.which)(&self.gauge).fetch_sub(1, Ordering::Relaxed);
    }
}

impl Traffic {
    fn render(&self, out: &mut String) {
        let rows: [(&str, &str, &str, i64); 5] = [
            (
                "llmtap_open_connections",
                "gauge",
                "Client connections open on the proxy listener.",
                self.open_connections.load(Ordering::Relaxed),
            ),
            (
                "llmtap_inflight_requests",
                "gauge",
                "Proxied requests whose response has not ended.",
                self.inflight_requests.load(Ordering::Relaxed),
            ),
            (
                "llmtap_upstream_connections",
                "gauge",
                "TCP connections to upstreams, in use or pooled.",
                self.upstream_connections.load(Ordering::Relaxed),
            ),
            (
                "llmtap_request_body_too_large_total",
                "counter",
                "Requests refused (413) or cut for a body over limits.max_body_bytes.",
                self.body_too_large.load(Ordering::Relaxed) as i64,
            ),
            (
                "llmtap_idle_timeouts_total",
                "counter",
                "Response bodies cut after the upstream sent nothing for the idle timeout.",
                self.idle_timeouts.load(Ordering::Relaxed) as i64,
            ),
        ];
        for (name, kind, help, v) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
    }
}

/// Gauges and counters owned elsewhere, passed in at render time.
#[derive(Debug, Default, Clone)]
pub struct Extra {
    pub queue_spans: usize,
    pub queue_bytes: usize,
    pub spans_enqueued: u64,
    pub spans_written: u64,
    pub spans_dropped: u64,
    pub store_errors: u64,
    pub batches: u64,
    pub unknown_price: u64,
    pub invalid_header_values: u64,
    pub stitch_turns: usize,
    pub stitch_pending_calls: usize,
    /// Spans left out by `sample_rate` (not "dropped").
    pub spans_sampled_out: u64,
    /// The OTLP exporter's counters, when one is configured.
    pub otlp: Option<OtlpExtra>,
}

/// The OTLP exporter's counters and queue.
#[derive(Debug, Default, Clone)]
pub struct OtlpExtra {
    pub queue_spans: usize,
    pub exported: u64,
    pub dropped: u64,
    pub failed: u64,
    pub request_errors: u64,
}

/// Label values borrowed from a span: what `record` looks series up by,
/// so a hit allocates nothing (only a new series copies its labels).
type LabelRef<'a> = (&'a str, &'a str, &'a str, &'a str);

/// A key that can stand for [`Labels`] in a map lookup. Hashes and compares
/// exactly as the owned tuple does (a tuple hashes its fields in order, a
/// `String` as its `str`).
trait AsLabels {
    fn parts(&self) -> LabelRef<'_>;
}

impl AsLabels for Labels {
    fn parts(&self) -> LabelRef<'_> {
        (&self.0, &self.1, &self.2, &self.3)
    }
}

impl AsLabels for LabelRef<'_> {
    fn parts(&self) -> LabelRef<'_> {
        *self
    }
}

impl<'a> std::borrow::Borrow<dyn AsLabels + 'a> for Labels {
    fn borrow(&self) -> &(dyn AsLabels + 'a) {
        self
    }
}

impl std::hash::Hash for dyn AsLabels + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.parts().hash(state);
    }
}

impl PartialEq for dyn AsLabels + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn AsLabels + '_ {}

/// The series for `key`, created if new; past [`MAX_SERIES`] new models
/// share the series of model "other". (Always `Some`: an `Option` only
/// because the borrow checker cannot yet return a `get_mut` hit and insert
/// on a miss in one function without a second lookup.)
fn bounded<'m, V>(
    map: &'m mut HashMap<Labels, V>,
    key: LabelRef<'_>,
    new: impl Fn() -> V,
) -> Option<&'m mut V> {
    let mut key = key;
    if !map.contains_key(&key as &dyn AsLabels) {
        if map.len() >= MAX_SERIES {
            key.1 = "other";
        }
        if !map.contains_key(&key as &dyn AsLabels) {
            let owned = (
                key.0.to_string(),
                key.1.to_string(),
                key.2.to_string(),
                key.3.to_string(),
            );
            map.insert(owned, new());
        }
    }
    map.get_mut(&key as &dyn AsLabels)
}

impl Metrics {
    /// Records a finished span.
    pub fn record(&self, s: &Span) {
        let model = s
            .model
            .as_deref()
            .or(s.response_model.as_deref())
            .unwrap_or_default();
        let (provider, op) = (s.provider.as_str(), s.operation_type.as_str());
        let with = |extra| (provider, model, op, extra);
        let error = s.error_type.as_deref().unwrap_or_default();
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = bounded(&mut series.requests, with(s.status.as_str()), || 0) {
            *n += 1;
        }
        let duration = || Histogram::new(DURATION_BUCKETS);
        if let Some(h) = bounded(&mut series.duration, with(error), duration) {
            h.observe(s.duration_ms / 1000.0);
        }
        if let Some(t) = s.ttft_ms {
            if let Some(h) = bounded(&mut series.ttfc, with(""), duration) {
                h.observe(t / 1000.0);
            }
        }
        let tokens = || Histogram::new(TOKEN_BUCKETS);
        for (kind, n) in [("input", s.input_tokens), ("output", s.output_tokens)] {
            let Some(n) = n else { continue };
            if let Some(h) = bounded(&mut series.tokens, with(kind), tokens) {
                h.observe(n as f64);
            }
        }
    }

    /// The Prometheus text exposition (version 0.0.4).
    pub fn render(&self, extra: &Extra) -> String {
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::with_capacity(4096);
        counter_family(
            &mut out,
            "llmtap_requests_total",
            "Exchanges seen, by provider, model, operation type and span status.",
            &series.requests,
            "status",
        );
        histogram_family(
            &mut out,
            "gen_ai_client_operation_duration_seconds",
            "GenAI operation duration (OpenTelemetry semantic conventions).",
            &series.duration,
            "error_type",
        );
        histogram_family(
            &mut out,
            "gen_ai_client_token_usage",
            "Tokens used per operation, by token type (OpenTelemetry semantic conventions).",
            &series.tokens,
            "gen_ai_token_type",
        );
        histogram_family(
            &mut out,
            "gen_ai_client_time_to_first_chunk_seconds",
            "Time from the request to the first content-bearing chunk of a stream.",
            &series.ttfc,
            "",
        );
        self.added_latency.render(&mut out);
        scalars(&mut out, writer_scalars(extra));
        self.traffic.render(&mut out);
        scalars(&mut out, later_scalars(extra));
        out
    }
}

/// One gauge or counter: name, type, help, value.
type Scalar = (&'static str, &'static str, &'static str, f64);

/// Writes each scalar as its own family.
fn scalars(out: &mut String, list: impl IntoIterator<Item = Scalar>) {
    for (name, kind, help, v) in list {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    }
}

/// The queue, writer, pricing and stitching figures (before the traffic
/// families).
fn writer_scalars(extra: &Extra) -> [Scalar; 11] {
    [
        (
            "llmtap_queue_spans",
            "gauge",
            "Spans waiting to be written.",
            extra.queue_spans as f64,
        ),
        (
            "llmtap_queue_bytes",
            "gauge",
            "Memory held by spans waiting to be written.",
            extra.queue_bytes as f64,
        ),
        (
            "llmtap_spans_enqueued_total",
            "counter",
            "Spans handed to the writer.",
            extra.spans_enqueued as f64,
        ),
        (
            "llmtap_spans_written_total",
            "counter",
            "Spans written to the store.",
            extra.spans_written as f64,
        ),
        (
            "llmtap_spans_dropped_total",
            "counter",
            "Spans dropped (over the memory budget, or at shutdown with the store down).",
            extra.spans_dropped as f64,
        ),
        (
            "llmtap_store_errors_total",
            "counter",
            "Failed batch writes (each retried).",
            extra.store_errors as f64,
        ),
        (
            "llmtap_store_batches_total",
            "counter",
            "Batches written.",
            extra.batches as f64,
        ),
        (
            "llmtap_unknown_price_total",
            "counter",
            "Spans whose model has no known price (cost NULL).",
            extra.unknown_price as f64,
        ),
        (
            "llmtap_invalid_header_values_total",
            "counter",
            "Context header values dropped for not being UTF-8.",
            extra.invalid_header_values as f64,
        ),
        (
            "llmtap_stitch_turns",
            "gauge",
            "Exchanges remembered for zero-code stitching.",
            extra.stitch_turns as f64,
        ),
        (
            "llmtap_stitch_pending_tool_calls",
            "gauge",
            "Tool calls waiting for their results.",
            extra.stitch_pending_calls as f64,
        ),
    ]
}

/// Sampling and, when exporting, the OTLP queue's figures (after the
/// traffic families).
fn later_scalars(extra: &Extra) -> Vec<Scalar> {
    let mut more: Vec<Scalar> = vec![(
        "llmtap_spans_sampled_out_total",
        "counter",
        "Spans not recorded because sample_rate left their trace out.",
        extra.spans_sampled_out as f64,
    )];
    if let Some(o) = &extra.otlp {
        more.extend([
            (
                "llmtap_otlp_queue_spans",
                "gauge",
                "Spans waiting for OTLP export.",
                o.queue_spans as f64,
            ),
            (
                "llmtap_otlp_spans_exported_total",
                "counter",
                "Spans the OTLP collector accepted.",
                o.exported as f64,
            ),
            (
                "llmtap_otlp_spans_dropped_total",
                "counter",
                "Spans dropped from the full OTLP export queue.",
                o.dropped as f64,
            ),
            (
                "llmtap_otlp_spans_failed_total",
                "counter",
                "Spans given up on (rejected, retries exhausted, or shutdown deadline).",
                o.failed as f64,
            ),
            (
                "llmtap_otlp_request_errors_total",
                "counter",
                "Failed OTLP export requests (each attempt).",
                o.request_errors as f64,
            ),
        ]);
    }
    more
}

/// Escapes a label value (backslash, double quote, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(l: &Labels, extra_name: &str) -> String {
    let mut s = format!(
        "gen_ai_provider_name=\"{}\",gen_ai_request_model=\"{}\",llmtap_operation_type=\"{}\"",
        esc(&l.0),
        esc(&l.1),
        esc(&l.2)
    );
    if !extra_name.is_empty() && !l.3.is_empty() {
        let _ = write!(s, ",{extra_name}=\"{}\"", esc(&l.3));
    }
    s
}

fn sorted<V>(m: &HashMap<Labels, V>) -> Vec<(&Labels, &V)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

fn counter_family(out: &mut String, name: &str, help: &str, m: &HashMap<Labels, u64>, extra: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
    for (l, v) in sorted(m) {
        let _ = writeln!(out, "{name}{{{}}} {v}", labels(l, extra));
    }
}

fn histogram_family(
    out: &mut String,
    name: &str,
    help: &str,
    m: &HashMap<Labels, Histogram>,
    extra: &str,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (l, h) in sorted(m) {
        let ls = labels(l, extra);
        let mut cumulative = 0;
        for (b, c) in h.bounds.iter().zip(&h.counts) {
            cumulative += c;
            let _ = writeln!(out, "{name}_bucket{{{ls},le=\"{b}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{ls},le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum{{{ls}}} {}", h.sum);
        let _ = writeln!(out, "{name}_count{{{ls}}} {}", h.count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::span::SpanStatus;

    fn span(model: &str, ms: f64, status: SpanStatus) -> Span {
        let mut s = Span::start(0);
        s.provider = "openai".into();
        s.model = Some(model.into());
        s.operation_type = "llm_call".into();
        s.duration_ms = ms;
        s.status = status;
        s.input_tokens = Some(100);
        s.output_tokens = Some(20);
        s.ttft_ms = Some(50.0);
        s
    }

    #[test]
    fn renders_counters_and_cumulative_histograms() {
        let m = Metrics::default();
        m.record(&span("gpt-4o", 30.0, SpanStatus::Completed));
        m.record(&span("gpt-4o", 500.0, SpanStatus::Completed));
        let mut failed = span("gpt-4o", 5.0, SpanStatus::Failed);
        failed.error_type = Some("rate_limit\"x".into());
        m.record(&failed);
        let text = m.render(&Extra {
            spans_written: 3,
            ..Extra::default()
        });
        assert!(text.contains("llmtap_requests_total{gen_ai_provider_name=\"openai\",gen_ai_request_model=\"gpt-4o\",llmtap_operation_type=\"llm_call\",status=\"completed\"} 2"), "{text}");
        assert!(text.contains("status=\"failed\"} 1"));
        // Cumulative buckets: 30 ms falls in le=0.04, 500 ms in le=0.64.
        assert!(text.contains("gen_ai_client_operation_duration_seconds_bucket{gen_ai_provider_name=\"openai\",gen_ai_request_model=\"gpt-4o\",llmtap_operation_type=\"llm_call\",le=\"0.04\"} 1"), "{text}");
        assert!(text.contains("llmtap_operation_type=\"llm_call\",le=\"0.64\"} 2"));
        assert!(text.contains("le=\"+Inf\"} 2"));
        assert!(
            text.contains("error_type=\"rate_limit\\\"x\""),
            "escaped label value"
        );
        assert!(text.contains("gen_ai_token_type=\"input\",le=\"256\"} 3"));
        assert!(text.contains("llmtap_spans_written_total 3"));
    }

    #[test]
    fn series_are_capped() {
        let m = Metrics::default();
        for i in 0..(MAX_SERIES + 50) {
            m.record(&span(&format!("model-{i}"), 1.0, SpanStatus::Completed));
        }
        let series = m.series.lock().unwrap();
        assert!(series.requests.len() <= MAX_SERIES + 1);
        let other: Vec<_> = series
            .requests
            .iter()
            .filter(|(k, _)| k.1 == "other")
            .collect();
        // One shared series, counting every model past the cap.
        assert_eq!(other.len(), 1);
        let first_model_count = series.requests.len() - 1;
        assert_eq!(*other[0].1 as usize, MAX_SERIES + 50 - first_model_count);
    }
}
