//! Configuration: the TOML file, environment overrides and validation.
//!
//! Owns the one `Config` struct every other module reads. Precedence is
//! built-in defaults < `config/llmtap.toml` (or `--config`) < environment
//! (`LLMTAP_*` and the four seed names `ENABLE_TRACING`, `TRACE_BATCH_SIZE`,
//! `TRACE_BATCH_INTERVAL_MS`, `TRACE_DEBUG`) < command-line flags (applied by
//! `main`). Unknown keys and invalid values stop start-up with a message that
//! names the key. This module never touches the network or the store.
//!
//! Here: the structs, their defaults and the built-in routes. Loading the
//! file is `load.rs`, the environment overrides `env.rs`, the checks at
//! load `validate.rs`.

mod env;
mod load;
mod validate;

use std::collections::BTreeMap;
#[cfg(test)]
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

pub use load::DEFAULT_CONFIG_PATH;

use serde::Deserialize;

/// Everything that can go wrong while loading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for {key}: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The wire format a route speaks; selects the parser in `providers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// OpenAI and OpenAI-compatible APIs (chat completions, embeddings, ...).
    Openai,
    /// Anthropic Messages API.
    Anthropic,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Openai => "openai",
            Format::Anthropic => "anthropic",
        }
    }
}

/// Top-level configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the proxy listens on.
    pub listen: SocketAddr,
    /// Address of the admin listener (`/healthz`, `/readyz` and the query
    /// API under `/api/`).
    pub admin_listen: SocketAddr,
    /// Bearer token required for the admin listener's `/api/` paths
    /// (`Authorization: Bearer TOKEN`). Empty = no token, allowed only while
    /// `admin_listen` is a loopback address. Visible ASCII, no spaces.
    pub admin_token: String,
    /// Where spans are stored: `sqlite://PATH` (or a bare file path), or
    /// `postgres://USER[:PASSWORD]@HOST:PORT/DATABASE` (an existing database;
    /// several replicas may share it).
    pub database_url: String,
    /// `database` (the store at `database_url`) or `none`: spans go only to
    /// the exporters (`[otlp]`), and the query API answers 503.
    pub store: StoreKind,
    /// A TOML price file that adds to or overrides `config/pricing.toml`
    /// (same format). Empty: the shipped prices only.
    pub pricing_file: Option<PathBuf>,
    /// Span recording and the background writer.
    pub tracing: TracingConfig,
    /// Connections to providers.
    pub upstream: UpstreamConfig,
    /// Limits on what clients may send (headers, bodies, HTTP/2 streams).
    pub limits: LimitsConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Zero-code trace structure (see `stitch`).
    pub stitching: StitchingConfig,
    /// OpenTelemetry export (OTLP/HTTP protobuf).
    pub otlp: OtlpConfig,
    /// Routes by path prefix; the first (longest) matching prefix wins.
    pub routes: Vec<RouteConfig>,
}

/// Where recorded spans are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The store at `database_url`.
    Database,
    /// No store: spans are only exported.
    None,
}

/// Body compression of OTLP requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
}

/// OpenTelemetry export: OTLP/HTTP with protobuf bodies. On when an
/// endpoint is set (here or by `OTEL_EXPORTER_OTLP_ENDPOINT` /
/// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// Collector base URL; spans go to `{endpoint}/v1/traces`. Empty = off
    /// (unless `traces_endpoint` is set).
    pub endpoint: String,
    /// The exact URL for traces (wins over `endpoint`).
    pub traces_endpoint: String,
    /// Extra request headers (e.g. an API key for a hosted collector).
    /// Sent, never logged.
    pub headers: BTreeMap<String, String>,
    /// Time for one export request, milliseconds.
    pub timeout_ms: u64,
    /// `none` or `gzip`.
    pub compression: Compression,
    /// The resource's `service.name`.
    pub service_name: String,
    /// More resource attributes (`deployment.environment`, ...).
    pub resource_attributes: BTreeMap<String, String>,
    /// Most spans in one export request; a full batch is sent at once.
    pub batch_size: usize,
    /// Send what is queued at least this often, milliseconds.
    pub batch_interval_ms: u64,
    /// Most spans waiting for export; past it the oldest are dropped and
    /// counted.
    pub queue_max_spans: usize,
    /// Memory budget of the export queue (bytes), same rule.
    pub queue_max_bytes: usize,
    /// How long one batch is retried (429/502/503/504, connection errors)
    /// before it is dropped and counted as failed, milliseconds.
    pub retry_max_elapsed_ms: u64,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            endpoint: String::new(),
            traces_endpoint: String::new(),
            headers: BTreeMap::new(),
            timeout_ms: 10_000,
            compression: Compression::None,
            service_name: "llmtap".to_string(),
            resource_attributes: BTreeMap::new(),
            batch_size: 512,
            batch_interval_ms: 1000,
            queue_max_spans: 8192,
            queue_max_bytes: 32 * 1024 * 1024,
            retry_max_elapsed_ms: 60_000,
        }
    }
}

impl OtlpConfig {
    /// True when an endpoint is configured.
    pub fn enabled(&self) -> bool {
        self.traces_url().is_some()
    }

    /// The URL spans are POSTed to.
    pub fn traces_url(&self) -> Option<String> {
        let exact = self.traces_endpoint.trim();
        if !exact.is_empty() {
            return Some(exact.to_string());
        }
        let base = self.endpoint.trim();
        (!base.is_empty()).then(|| format!("{}/v1/traces", base.trim_end_matches('/')))
    }
}

/// Span recording and the background writer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// Record spans at all. `false` makes llmtap a plain proxy.
    pub enabled: bool,
    /// Flush when this many spans are queued.
    pub batch_size: usize,
    /// Flush at least this often (milliseconds).
    pub batch_interval_ms: u64,
    /// Least time between two commits (milliseconds): under load, batches
    /// grow instead of commits multiplying, which is what keeps the writer's
    /// CPU per span low.
    pub min_flush_gap_ms: u64,
    /// No longer used, and ignored with a warning at start-up: SQLite now
    /// inserts through one prepared single-row statement and PostgreSQL by
    /// `COPY`, so there is no statement size to choose. Kept so that config
    /// files written for earlier versions still load.
    pub max_rows_per_statement: Option<usize>,
    /// Memory budget for spans waiting to be written; past it the oldest are
    /// dropped and counted.
    pub queue_max_bytes: usize,
    /// Debug-level logs.
    pub debug: bool,
    /// Store request and response bodies with the span.
    pub capture_bodies: bool,
    /// Most bytes of each body stored (the rest is cut, marked truncated).
    pub max_capture_bytes: usize,
    /// Most bytes of a JSON body (decoded) the observer will parse for span
    /// fields. Bodies past it are still forwarded whole.
    pub max_parse_bytes: usize,
    /// Salt for `api_key_hash`. Empty = a random salt generated once and kept
    /// in the store, so hashes are stable across restarts.
    pub api_key_salt: String,
    /// Opt-in: add `stream_options.include_usage` to streamed chat requests
    /// that lack it (for exact token counts) and remove the extra usage chunk
    /// from what the client receives. Off: traffic is never altered.
    pub exact_stream_usage: bool,
    /// Fraction of traces recorded (0.0-1.0), decided from the trace id so
    /// a trace is kept or dropped whole. Request metrics count every request.
    pub sample_rate: f64,
    /// Regular expressions for secrets removed from captured bodies, error
    /// messages and properties before a span is stored (group 1 of a match
    /// is replaced by `[REDACTED]`, or the whole match without groups).
    /// Setting it replaces the defaults; `[]` turns redaction off.
    pub redact_patterns: Vec<String>,
}

/// Connections to providers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// TCP (and TLS) connect timeout, milliseconds.
    pub connect_timeout_ms: u64,
    /// Time from sending the request to the response headers, milliseconds.
    /// Long on purpose: non-streaming reasoning calls can take minutes.
    pub first_byte_timeout_ms: u64,
    /// Most time between two chunks of a response body, milliseconds; past
    /// it the client's stream is cut (as if the upstream had reset it) and
    /// the span fails with `idle_timeout`. There is no cap on the total
    /// duration: a long generation that keeps sending is never cut.
    pub idle_timeout_ms: u64,
    /// Idle pooled connections are closed after this many milliseconds.
    pub pool_idle_timeout_ms: u64,
    /// Most idle pooled connections per upstream host.
    pub pool_max_idle_per_host: usize,
}

/// Limits on what clients may send. Past them llmtap answers itself (413,
/// 431) or closes the connection; below them traffic is forwarded untouched.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most bytes of a request head (request line and headers), at least
    /// 8192. HTTP/1: past it the client gets 431 (it also caps the read
    /// buffer); HTTP/2: the advertised `SETTINGS_MAX_HEADER_LIST_SIZE`.
    pub max_header_bytes: usize,
    /// Most bytes of a request body. A larger `Content-Length` gets 413
    /// before the upstream is contacted; a chunked body that grows past it is
    /// cut (the upstream sees an aborted upload, the client an error).
    pub max_body_bytes: u64,
    /// HTTP/1: time a client has to send a complete request head,
    /// milliseconds (against slowloris). Also closes idle keep-alive
    /// connections that start a request and stall, and new connections
    /// (HTTP/1 or HTTP/2) that send nothing at all for this long.
    pub header_read_timeout_ms: u64,
    /// HTTP/2: most concurrent streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2: most streams reset by the client before llmtap has accepted
    /// them (the "rapid reset" flood guard); past it the connection is
    /// closed with GOAWAY.
    pub h2_max_pending_reset_streams: usize,
    /// HTTP/2: ping an idle connection this often, milliseconds (0 = never);
    /// a ping unanswered for `h2_keep_alive_timeout_ms` closes it.
    pub h2_keep_alive_interval_ms: u64,
    /// HTTP/2: how long a keep-alive ping may go unanswered, milliseconds.
    pub h2_keep_alive_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_header_bytes: 64 * 1024,
            // OpenAI's Files API takes uploads up to 512 MB.
            max_body_bytes: 512 * 1024 * 1024,
            header_read_timeout_ms: 30_000,
            h2_max_concurrent_streams: 256,
            h2_max_pending_reset_streams: 20,
            h2_keep_alive_interval_ms: 30_000,
            h2_keep_alive_timeout_ms: 20_000,
        }
    }
}

/// Zero-code trace structure: multi-turn chats and agent loops joined into
/// one trace, tool calls as spans.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StitchingConfig {
    /// Join requests that extend an earlier exchange into its trace, and
    /// write `tool_call` spans. Explicit context (`traceparent`) always wins.
    pub enabled: bool,
    /// How long an exchange (or a tool call waiting for its result) stays
    /// joinable, in seconds; calls whose results never come are written
    /// `cancelled` then.
    pub ttl_secs: u64,
    /// Most exchanges remembered (about 420 bytes each).
    pub max_entries: usize,
    /// Most tool calls waiting for their results (about 1.2 KB each plus
    /// their arguments, capped at 8 KiB); past it the oldest are written
    /// `cancelled`.
    pub max_pending_calls: usize,
}

impl Default for StitchingConfig {
    fn default() -> Self {
        StitchingConfig {
            enabled: true,
            ttl_secs: 1800,
            max_entries: 50_000,
            max_pending_calls: 10_000,
        }
    }
}

/// Graceful shutdown.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long in-flight exchanges may run after a shutdown signal.
    pub drain_timeout_ms: u64,
    /// How long the writer may take to flush queued spans at exit.
    pub flush_timeout_ms: u64,
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Path prefix matched on a segment boundary, e.g. `/v1`.
    pub prefix: String,
    /// Base URL of the provider, e.g. `https://api.openai.com`.
    pub upstream: String,
    /// Wire format: `openai` or `anthropic`.
    #[serde(default = "default_format")]
    pub format: Format,
    /// Remove the prefix before forwarding.
    #[serde(default)]
    pub strip_prefix: bool,
    /// Provider name recorded on spans (OpenTelemetry names); defaults from
    /// the format.
    #[serde(default)]
    pub provider: Option<String>,
    /// Allow `http://` to a host that is not loopback.
    #[serde(default)]
    pub allow_insecure: bool,
    /// This route's connect timeout (ms); default `upstream.connect_timeout_ms`.
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    /// This route's first-byte timeout (ms); default
    /// `upstream.first_byte_timeout_ms`.
    #[serde(default)]
    pub first_byte_timeout_ms: Option<u64>,
    /// This route's idle timeout between response chunks (ms); default
    /// `upstream.idle_timeout_ms`.
    #[serde(default)]
    pub idle_timeout_ms: Option<u64>,
}

fn default_format() -> Format {
    Format::Openai
}

// === impl Config ===

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 4000)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 4001)),
            admin_token: String::new(),
            database_url: "sqlite://data/llmtap.db".to_string(),
            store: StoreKind::Database,
            pricing_file: None,
            tracing: TracingConfig::default(),
            upstream: UpstreamConfig::default(),
            limits: LimitsConfig::default(),
            shutdown: ShutdownConfig::default(),
            stitching: StitchingConfig::default(),
            otlp: OtlpConfig::default(),
            routes: default_routes(),
        }
    }
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            enabled: true,
            batch_size: 10,
            batch_interval_ms: 1000,
            min_flush_gap_ms: 25,
            max_rows_per_statement: None,
            queue_max_bytes: 64 * 1024 * 1024,
            debug: false,
            capture_bodies: true,
            max_capture_bytes: 64 * 1024,
            max_parse_bytes: 8 * 1024 * 1024,
            api_key_salt: String::new(),
            exact_stream_usage: false,
            sample_rate: 1.0,
            redact_patterns: crate::output::redact::DEFAULT_PATTERNS
                .iter()
                .map(|p| p.to_string())
                .collect(),
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout_ms: 10_000,
            first_byte_timeout_ms: 600_000,
            idle_timeout_ms: 300_000,
            pool_idle_timeout_ms: 90_000,
            pool_max_idle_per_host: 256,
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_timeout_ms: 30_000,
            flush_timeout_ms: 10_000,
        }
    }
}

/// The routes used when the config names none.
pub fn default_routes() -> Vec<RouteConfig> {
    vec![
        RouteConfig {
            prefix: "/v1".to_string(),
            upstream: "https://api.openai.com".to_string(),
            format: Format::Openai,
            strip_prefix: false,
            provider: None,
            allow_insecure: false,
            connect_timeout_ms: None,
            first_byte_timeout_ms: None,
            idle_timeout_ms: None,
        },
        RouteConfig {
            prefix: "/anthropic".to_string(),
            upstream: "https://api.anthropic.com".to_string(),
            format: Format::Anthropic,
            strip_prefix: true,
            provider: None,
            allow_insecure: false,
            connect_timeout_ms: None,
            first_byte_timeout_ms: None,
            idle_timeout_ms: None,
        },
    ]
}

/// A prefix without its trailing slashes (`/v1/` → `/v1`; `/` stays `/`).
pub fn normalize_prefix(prefix: &str) -> &str {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        "/"
    } else {
        trimmed
    }
}

/// A variable map for tests (`apply_env` and `load` take the environment
/// as an argument).
#[cfg(test)]
fn test_env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}
