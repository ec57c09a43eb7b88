//! Configuration: the TOML file, environment overrides and validation.
//!
//! Owns the one `Config` struct every other module reads. Precedence is
//! built-in defaults < `config/llmtap.toml` (or `--config`) < environment
//! (`LLMTAP_*` and the four seed names `ENABLE_TRACING`, `TRACE_BATCH_SIZE`,
//! `TRACE_BATCH_INTERVAL_MS`, `TRACE_DEBUG`) < command-line flags (applied by
//! `main`). Unknown keys and invalid values stop start-up with a message that
//! names the key. This module never touches the network or the store.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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

/// Where `load` looks when no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "config/llmtap.toml";

impl Config {
    /// Parses TOML text. `path` only labels errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Loads the file (`explicit` must exist; the default path may be
    /// missing), applies `env` overrides and validates.
    pub fn load(
        explicit: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let path = explicit
            .map(Path::to_path_buf)
            .or_else(|| env.get("LLMTAP_CONFIG").map(PathBuf::from));
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                Config::from_toml(&text, &path)?
            }
            None => {
                let path = Path::new(DEFAULT_CONFIG_PATH);
                match std::fs::read_to_string(path) {
                    Ok(text) => Config::from_toml(&text, path)?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::default(),
                    Err(source) => {
                        return Err(ConfigError::Read {
                            path: path.to_path_buf(),
                            source,
                        })
                    }
                }
            }
        };
        config.apply_env(env)?;
        config.validate()?;
        Ok(config)
    }

    /// Applies environment overrides. Each variable names one key.
    pub fn apply_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        fn get<T: std::str::FromStr>(
            env: &HashMap<String, String>,
            key: &str,
        ) -> Result<Option<T>, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            match env.get(key) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<T>()
                    .map(Some)
                    .map_err(|e| ConfigError::invalid(key, format!("{v:?}: {e}"))),
            }
        }
        fn get_bool(env: &HashMap<String, String>, key: &str) -> Result<Option<bool>, ConfigError> {
            match env.get(key).map(|v| v.trim().to_ascii_lowercase()) {
                None => Ok(None),
                Some(v) => match v.as_str() {
                    "1" | "true" | "yes" | "on" => Ok(Some(true)),
                    "0" | "false" | "no" | "off" => Ok(Some(false)),
                    _ => Err(ConfigError::invalid(
                        key,
                        format!("{v:?} is not a boolean (true/false)"),
                    )),
                },
            }
        }
        if let Some(v) = get(env, "LLMTAP_LISTEN")? {
            self.listen = v;
        }
        if let Some(v) = get(env, "LLMTAP_ADMIN_LISTEN")? {
            self.admin_listen = v;
        }
        if let Some(v) = env.get("LLMTAP_ADMIN_TOKEN") {
            self.admin_token = v.trim().to_string();
        }
        if let Some(v) = env.get("LLMTAP_DATABASE_URL") {
            self.database_url = v.clone();
        }
        if let Some(v) = env.get("LLMTAP_PRICING_FILE") {
            self.pricing_file = (!v.trim().is_empty()).then(|| PathBuf::from(v.trim()));
        }
        for key in ["ENABLE_TRACING", "LLMTAP_TRACING_ENABLED"] {
            if let Some(v) = get_bool(env, key)? {
                self.tracing.enabled = v;
            }
        }
        for key in ["TRACE_BATCH_SIZE", "LLMTAP_BATCH_SIZE"] {
            if let Some(v) = get(env, key)? {
                self.tracing.batch_size = v;
            }
        }
        for key in ["TRACE_BATCH_INTERVAL_MS", "LLMTAP_BATCH_INTERVAL_MS"] {
            if let Some(v) = get(env, key)? {
                self.tracing.batch_interval_ms = v;
            }
        }
        for key in ["TRACE_DEBUG", "LLMTAP_DEBUG"] {
            if let Some(v) = get_bool(env, key)? {
                self.tracing.debug = v;
            }
        }
        if let Some(v) = get(env, "LLMTAP_QUEUE_MAX_BYTES")? {
            self.tracing.queue_max_bytes = v;
        }
        if let Some(v) = get_bool(env, "LLMTAP_CAPTURE_BODIES")? {
            self.tracing.capture_bodies = v;
        }
        if let Some(v) = get(env, "LLMTAP_MAX_CAPTURE_BYTES")? {
            self.tracing.max_capture_bytes = v;
        }
        if let Some(v) = get_bool(env, "LLMTAP_EXACT_STREAM_USAGE")? {
            self.tracing.exact_stream_usage = v;
        }
        if let Some(v) = env.get("LLMTAP_API_KEY_SALT") {
            self.tracing.api_key_salt = v.clone();
        }
        if let Some(v) = get_bool(env, "LLMTAP_STITCHING")? {
            self.stitching.enabled = v;
        }
        if let Some(v) = get(env, "LLMTAP_DRAIN_TIMEOUT_MS")? {
            self.shutdown.drain_timeout_ms = v;
        }
        if let Some(v) = get(env, "LLMTAP_CONNECT_TIMEOUT_MS")? {
            self.upstream.connect_timeout_ms = v;
        }
        if let Some(v) = get(env, "LLMTAP_FIRST_BYTE_TIMEOUT_MS")? {
            self.upstream.first_byte_timeout_ms = v;
        }
        if let Some(v) = get(env, "LLMTAP_IDLE_TIMEOUT_MS")? {
            self.upstream.idle_timeout_ms = v;
        }
        if let Some(v) = get(env, "LLMTAP_MAX_BODY_BYTES")? {
            self.limits.max_body_bytes = v;
        }
        if let Some(v) = env.get("LLMTAP_STORE") {
            self.store = match v.trim().to_ascii_lowercase().as_str() {
                "database" => StoreKind::Database,
                "none" => StoreKind::None,
                other => {
                    return Err(ConfigError::invalid(
                        "LLMTAP_STORE",
                        format!("{other:?} is not \"database\" or \"none\""),
                    ))
                }
            };
        }
        if let Some(v) = get(env, "LLMTAP_SAMPLE_RATE")? {
            self.tracing.sample_rate = v;
        }
        self.apply_otel_env(env)
    }

    /// The OpenTelemetry exporter variables (the signal-specific
    /// `..._TRACES_...` ones win over the general ones).
    fn apply_otel_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
        let o = &mut self.otlp;
        let non_empty = |k: &str| env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        if let Some(v) = non_empty("OTEL_EXPORTER_OTLP_ENDPOINT") {
            o.endpoint = v.to_string();
        }
        if let Some(v) = non_empty("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            o.traces_endpoint = v.to_string();
        }
        for key in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            if let Some(v) = env.get(key) {
                for (k, v) in crate::output::otlp::parse_kv_list(v)
                    .map_err(|e| ConfigError::invalid(key, e))?
                {
                    o.headers.insert(k, v);
                }
            }
        }
        for key in [
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        ] {
            if let Some(v) = non_empty(key) {
                o.timeout_ms = v
                    .parse()
                    .map_err(|e| ConfigError::invalid(key, format!("{v:?}: {e}")))?;
            }
        }
        for key in [
            "OTEL_EXPORTER_OTLP_COMPRESSION",
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
        ] {
            if let Some(v) = non_empty(key) {
                o.compression = match v.to_ascii_lowercase().as_str() {
                    "gzip" => Compression::Gzip,
                    "none" => Compression::None,
                    _ => {
                        return Err(ConfigError::invalid(
                            key,
                            format!("{v:?} is not \"gzip\" or \"none\""),
                        ))
                    }
                };
            }
        }
        for key in [
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ] {
            if let Some(v) = non_empty(key) {
                if v != "http/protobuf" {
                    return Err(ConfigError::invalid(
                        key,
                        format!("{v:?}: llmtap exports OTLP over \"http/protobuf\" only"),
                    ));
                }
            }
        }
        if let Some(v) = env.get("OTEL_RESOURCE_ATTRIBUTES") {
            for (k, v) in crate::output::otlp::parse_kv_list(v)
                .map_err(|e| ConfigError::invalid("OTEL_RESOURCE_ATTRIBUTES", e))?
            {
                if k == "service.name" {
                    o.service_name = v;
                } else {
                    o.resource_attributes.insert(k, v);
                }
            }
        }
        if let Some(v) = non_empty("OTEL_SERVICE_NAME") {
            o.service_name = v.to_string();
        }
        let get_num = |key: &str| -> Result<Option<u64>, ConfigError> {
            non_empty(key)
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|e| ConfigError::invalid(key, format!("{v:?}: {e}")))
                })
                .transpose()
        };
        if let Some(v) = get_num("OTEL_BSP_SCHEDULE_DELAY")? {
            o.batch_interval_ms = v;
        }
        if let Some(v) = get_num("OTEL_BSP_MAX_QUEUE_SIZE")? {
            o.queue_max_spans = v as usize;
        }
        if let Some(v) = get_num("OTEL_BSP_MAX_EXPORT_BATCH_SIZE")? {
            o.batch_size = v as usize;
        }
        let disabled = env
            .get("OTEL_SDK_DISABLED")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            || env
                .get("OTEL_TRACES_EXPORTER")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("none"));
        if disabled {
            o.endpoint.clear();
            o.traces_endpoint.clear();
        }
        Ok(())
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.admin_token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::invalid(
                "admin_token",
                "must be visible ASCII without spaces (it is sent in an Authorization header)",
            ));
        }
        if !self.admin_listen.ip().is_loopback() && self.admin_token.is_empty() {
            return Err(ConfigError::invalid(
                "admin_token",
                format!(
                    "admin_listen {} is not a loopback address: set admin_token \
                     (or LLMTAP_ADMIN_TOKEN) so the query API is not open to the network",
                    self.admin_listen
                ),
            ));
        }
        let t = &self.tracing;
        if t.batch_size == 0 || t.batch_size > 100_000 {
            return Err(ConfigError::invalid(
                "tracing.batch_size",
                "must be between 1 and 100000",
            ));
        }
        if t.batch_interval_ms == 0 {
            return Err(ConfigError::invalid(
                "tracing.batch_interval_ms",
                "must be at least 1",
            ));
        }
        if t.queue_max_bytes < 64 * 1024 {
            return Err(ConfigError::invalid(
                "tracing.queue_max_bytes",
                "must be at least 65536",
            ));
        }
        if let Err(e) = crate::output::redact::Redactor::new(&t.redact_patterns) {
            return Err(ConfigError::invalid(
                format!("tracing.redact_patterns[{}]", e.index),
                e.to_string(),
            ));
        }
        if self.upstream.connect_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "upstream.connect_timeout_ms",
                "must be at least 1",
            ));
        }
        if self.upstream.first_byte_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "upstream.first_byte_timeout_ms",
                "must be at least 1",
            ));
        }
        if self.upstream.idle_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "upstream.idle_timeout_ms",
                "must be at least 1",
            ));
        }
        self.limits.validate()?;
        if t.enabled && self.store == StoreKind::Database {
            crate::output::store::StoreUrl::parse(&self.database_url)
                .map_err(|e| ConfigError::invalid("database_url", e.to_string()))?;
        }
        if !(0.0..=1.0).contains(&t.sample_rate) {
            return Err(ConfigError::invalid(
                "tracing.sample_rate",
                "must be between 0.0 and 1.0",
            ));
        }
        if t.enabled && self.store == StoreKind::None && !self.otlp.enabled() {
            return Err(ConfigError::invalid(
                "store",
                "store = \"none\" needs an exporter: set [otlp] endpoint \
                 (or OTEL_EXPORTER_OTLP_ENDPOINT), or use store = \"database\"",
            ));
        }
        self.validate_otlp()?;
        if self.stitching.ttl_secs == 0 {
            return Err(ConfigError::invalid(
                "stitching.ttl_secs",
                "must be at least 1",
            ));
        }
        if self.stitching.max_entries == 0 {
            return Err(ConfigError::invalid(
                "stitching.max_entries",
                "must be at least 1",
            ));
        }
        if self.routes.is_empty() {
            return Err(ConfigError::invalid(
                "routes",
                "at least one route is needed",
            ));
        }
        for (i, route) in self.routes.iter().enumerate() {
            let key = |field: &str| format!("routes[{i}].{field}");
            if !route.prefix.starts_with('/') || route.prefix.contains(['?', '#']) {
                return Err(ConfigError::invalid(
                    key("prefix"),
                    format!(
                        "{:?} must start with '/' and hold a path only",
                        route.prefix
                    ),
                ));
            }
            crate::path::router::UpstreamBase::parse(&route.upstream, route.allow_insecure)
                .map_err(|e| ConfigError::invalid(key("upstream"), e))?;
            for (name, value) in [
                ("connect_timeout_ms", route.connect_timeout_ms),
                ("first_byte_timeout_ms", route.first_byte_timeout_ms),
                ("idle_timeout_ms", route.idle_timeout_ms),
            ] {
                if value == Some(0) {
                    return Err(ConfigError::invalid(key(name), "must be at least 1"));
                }
            }
            if self.routes[..i]
                .iter()
                .any(|r| normalize_prefix(&r.prefix) == normalize_prefix(&route.prefix))
            {
                return Err(ConfigError::invalid(
                    key("prefix"),
                    format!("{:?} is configured twice", route.prefix),
                ));
            }
        }
        Ok(())
    }
}

// === impl LimitsConfig ===

impl LimitsConfig {
    /// Checks values hyper would reject or that would make llmtap useless.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_header_bytes < 8192 || self.max_header_bytes > 16 * 1024 * 1024 {
            return Err(ConfigError::invalid(
                "limits.max_header_bytes",
                "must be between 8192 and 16777216",
            ));
        }
        if self.max_body_bytes == 0 {
            return Err(ConfigError::invalid(
                "limits.max_body_bytes",
                "must be at least 1",
            ));
        }
        if self.header_read_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "limits.header_read_timeout_ms",
                "must be at least 1",
            ));
        }
        if self.h2_max_concurrent_streams == 0 {
            return Err(ConfigError::invalid(
                "limits.h2_max_concurrent_streams",
                "must be at least 1",
            ));
        }
        if self.h2_max_pending_reset_streams == 0 {
            return Err(ConfigError::invalid(
                "limits.h2_max_pending_reset_streams",
                "must be at least 1 (0 would turn off the rapid-reset guard)",
            ));
        }
        if self.h2_keep_alive_interval_ms > 0 && self.h2_keep_alive_timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "limits.h2_keep_alive_timeout_ms",
                "must be at least 1 when h2_keep_alive_interval_ms is set",
            ));
        }
        Ok(())
    }
}

impl Config {
    fn validate_otlp(&self) -> Result<(), ConfigError> {
        let o = &self.otlp;
        if !o.enabled() {
            return Ok(());
        }
        let key = if o.traces_endpoint.trim().is_empty() {
            "otlp.endpoint"
        } else {
            "otlp.traces_endpoint"
        };
        let url = o.traces_url().unwrap_or_default();
        let has_userinfo = url
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.authority().map(|a| a.as_str().contains('@')))
            .unwrap_or(false);
        if has_userinfo {
            // Not echoed: it holds a credential.
            return Err(ConfigError::invalid(
                key,
                "must not carry credentials in the URL; use otlp.headers \
                 (OTEL_EXPORTER_OTLP_HEADERS)",
            ));
        }
        let ok = url.parse::<http::Uri>().ok().is_some_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
        });
        if !ok {
            return Err(ConfigError::invalid(
                key,
                format!("{url:?} is not an http(s) URL"),
            ));
        }
        for (k, v) in &o.headers {
            if http::HeaderName::from_bytes(k.trim().as_bytes()).is_err()
                || http::HeaderValue::from_str(v.trim()).is_err()
            {
                // The value may be a secret: name the header only.
                return Err(ConfigError::invalid(
                    format!("otlp.headers.{k}"),
                    "not a valid HTTP header name or value",
                ));
            }
        }
        let checks = [
            ("otlp.timeout_ms", o.timeout_ms == 0),
            ("otlp.batch_size", o.batch_size == 0),
            ("otlp.batch_interval_ms", o.batch_interval_ms == 0),
            ("otlp.queue_max_spans", o.queue_max_spans == 0),
            ("otlp.queue_max_bytes", o.queue_max_bytes < 64 * 1024),
        ];
        for (key, bad) in checks {
            if bad {
                return Err(ConfigError::invalid(
                    key,
                    if key == "otlp.queue_max_bytes" {
                        "must be at least 65536"
                    } else {
                        "must be at least 1"
                    },
                ));
            }
        }
        if o.service_name.trim().is_empty() {
            return Err(ConfigError::invalid(
                "otlp.service_name",
                "must not be empty",
            ));
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn shipped_config_parses_and_matches_defaults() {
        let text = include_str!("../config/llmtap.toml");
        let config = Config::from_toml(text, Path::new("config/llmtap.toml")).unwrap();
        config.validate().unwrap();
        let d = Config::default();
        assert_eq!(config.listen, d.listen);
        assert_eq!(config.admin_listen, d.admin_listen);
        assert_eq!(config.admin_token, d.admin_token);
        assert_eq!(config.database_url, d.database_url);
        assert_eq!(config.tracing.batch_size, d.tracing.batch_size);
        assert_eq!(
            config.tracing.batch_interval_ms,
            d.tracing.batch_interval_ms
        );
        assert_eq!(config.tracing.queue_max_bytes, d.tracing.queue_max_bytes);
        assert_eq!(config.tracing.redact_patterns, d.tracing.redact_patterns);
        assert_eq!(
            config.tracing.max_capture_bytes,
            d.tracing.max_capture_bytes
        );
        assert_eq!(
            config.upstream.first_byte_timeout_ms,
            d.upstream.first_byte_timeout_ms
        );
        assert_eq!(
            config.shutdown.drain_timeout_ms,
            d.shutdown.drain_timeout_ms
        );
        assert_eq!(config.upstream.idle_timeout_ms, d.upstream.idle_timeout_ms);
        let (l, dl) = (&config.limits, &d.limits);
        assert_eq!(l.max_header_bytes, dl.max_header_bytes);
        assert_eq!(l.max_body_bytes, dl.max_body_bytes);
        assert_eq!(l.header_read_timeout_ms, dl.header_read_timeout_ms);
        assert_eq!(l.h2_max_concurrent_streams, dl.h2_max_concurrent_streams);
        assert_eq!(
            l.h2_max_pending_reset_streams,
            dl.h2_max_pending_reset_streams
        );
        assert_eq!(l.h2_keep_alive_interval_ms, dl.h2_keep_alive_interval_ms);
        assert_eq!(l.h2_keep_alive_timeout_ms, dl.h2_keep_alive_timeout_ms);
        assert_eq!(config.store, d.store);
        assert_eq!(config.tracing.sample_rate, d.tracing.sample_rate);
        let (o, od) = (&config.otlp, &d.otlp);
        assert!(!o.enabled());
        assert_eq!(
            (o.timeout_ms, o.compression, &o.service_name, o.batch_size),
            (
                od.timeout_ms,
                od.compression,
                &od.service_name,
                od.batch_size
            )
        );
        assert_eq!(
            (o.batch_interval_ms, o.queue_max_spans, o.queue_max_bytes),
            (od.batch_interval_ms, od.queue_max_spans, od.queue_max_bytes)
        );
        assert_eq!(o.retry_max_elapsed_ms, od.retry_max_elapsed_ms);
        assert_eq!(config.routes[0].prefix, "/v1");
        assert_eq!(config.routes[1].prefix, "/anthropic");
        assert!(config.routes[1].strip_prefix);
        let providers: Vec<&str> = config
            .routes
            .iter()
            .filter_map(|r| r.provider.as_deref())
            .collect();
        for p in [
            "groq",
            "mistral_ai",
            "deepseek",
            "gcp.gemini",
            "vllm",
            "ollama",
            "openrouter",
            "together_ai",
        ] {
            assert!(providers.contains(&p), "no example route for {p}");
        }
        // The Azure example is commented out (it needs a resource name);
        // uncommented, it must be valid too.
        let azure: String = text
            .lines()
            .skip_while(|l| !l.starts_with("# [[routes]]"))
            .map(|l| l.trim_start_matches("# "))
            .collect::<Vec<_>>()
            .join("\n");
        let with_azure = Config::from_toml(&format!("{text}\n{azure}"), Path::new("x")).unwrap();
        with_azure.validate().unwrap();
        assert_eq!(
            with_azure.routes.last().unwrap().provider.as_deref(),
            Some("azure.ai.openai")
        );
    }

    #[test]
    fn route_timeouts_and_limits_parse_and_validate() {
        let text = r#"
            [upstream]
            idle_timeout_ms = 1000
            [limits]
            max_body_bytes = 1024
            [[routes]]
            prefix = "/slow"
            upstream = "http://127.0.0.1:8000"
            first_byte_timeout_ms = 1200000
            idle_timeout_ms = 900000
        "#;
        let c = Config::from_toml(text, Path::new("x")).unwrap();
        c.validate().unwrap();
        assert_eq!(c.upstream.idle_timeout_ms, 1000);
        assert_eq!(c.limits.max_body_bytes, 1024);
        assert_eq!(c.routes[0].first_byte_timeout_ms, Some(1_200_000));
        assert_eq!(c.routes[0].idle_timeout_ms, Some(900_000));
        assert_eq!(c.routes[0].connect_timeout_ms, None);
        let mut bad = c.clone();
        bad.routes[0].idle_timeout_ms = Some(0);
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("routes[0].idle_timeout_ms"), "{err}");
        let mut bad = c.clone();
        bad.limits.max_header_bytes = 100;
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("limits.max_header_bytes"), "{err}");
        let mut bad = c.clone();
        bad.limits.h2_max_pending_reset_streams = 0;
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("limits.h2_max_pending_reset_streams"), "{err}");
        let mut bad = c;
        bad.upstream.idle_timeout_ms = 0;
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("upstream.idle_timeout_ms"), "{err}");
        let err = Config::from_toml("[limits]\nmax_body = 1\n", Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_body"), "{err}");
        let mut c = Config::default();
        c.apply_env(&env(&[
            ("LLMTAP_IDLE_TIMEOUT_MS", "5000"),
            ("LLMTAP_MAX_BODY_BYTES", "77"),
        ]))
        .unwrap();
        assert_eq!(c.upstream.idle_timeout_ms, 5000);
        assert_eq!(c.limits.max_body_bytes, 77);
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("[tracing]\nbatch_sise = 3\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("batch_sise"), "{err}");
    }

    #[test]
    fn env_overrides_and_names_bad_values() {
        let mut c = Config::default();
        c.apply_env(&env(&[
            ("ENABLE_TRACING", "false"),
            ("TRACE_BATCH_SIZE", "25"),
            ("TRACE_BATCH_INTERVAL_MS", "50"),
            ("TRACE_DEBUG", "1"),
        ]))
        .unwrap();
        assert!(!c.tracing.enabled);
        assert_eq!(c.tracing.batch_size, 25);
        assert_eq!(c.tracing.batch_interval_ms, 50);
        assert!(c.tracing.debug);
        let err = c
            .apply_env(&env(&[("TRACE_BATCH_SIZE", "ten")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("TRACE_BATCH_SIZE"), "{err}");
        let err = c
            .apply_env(&env(&[("ENABLE_TRACING", "maybe")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ENABLE_TRACING"), "{err}");
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = Config::default();
        c.tracing.batch_size = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("tracing.batch_size"));
        let mut c = Config::default();
        c.routes[0].upstream = "ftp://x".into();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("routes[0].upstream"));
        let mut c = Config::default();
        c.routes[0].upstream = "http://example.com".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("routes[0].upstream") && err.contains("allow_insecure"),
            "{err}"
        );
        let mut c = Config {
            admin_listen: "0.0.0.0:4001".parse().unwrap(),
            ..Config::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("admin_token"), "{err}");
        c.apply_env(&env(&[("LLMTAP_ADMIN_TOKEN", " s3cret-token ")]))
            .unwrap();
        assert_eq!(c.admin_token, "s3cret-token");
        c.validate().unwrap();
        c.admin_token = "has space".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("admin_token"), "{err}");
        let c = Config {
            admin_listen: "[::1]:4001".parse().unwrap(),
            ..Config::default()
        };
        c.validate().unwrap();
        let mut c = Config::default();
        c.routes[1].prefix = "/v1/".into();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("routes[1].prefix"));
    }

    #[test]
    fn otel_env_is_honoured_signal_specific_first() {
        let mut c = Config::default();
        assert!(!c.otlp.enabled());
        c.apply_env(&env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-a=1,authorization=Bearer%20k",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-a=2"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "5000"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=a,deployment.environment=prod%2Ceu",
            ),
            ("OTEL_SERVICE_NAME", "gateway"),
            ("LLMTAP_SAMPLE_RATE", "0.25"),
            ("LLMTAP_STORE", "none"),
        ]))
        .unwrap();
        assert_eq!(
            c.otlp.traces_url().as_deref(),
            Some("http://127.0.0.1:4318/v1/traces")
        );
        assert_eq!(c.otlp.headers["x-a"], "2");
        assert_eq!(c.otlp.headers["authorization"], "Bearer k");
        assert_eq!(c.otlp.timeout_ms, 2500);
        assert_eq!(c.otlp.compression, Compression::Gzip);
        assert_eq!(c.otlp.service_name, "gateway");
        assert_eq!(
            c.otlp.resource_attributes["deployment.environment"],
            "prod,eu"
        );
        assert_eq!(c.tracing.sample_rate, 0.25);
        assert_eq!(c.store, StoreKind::None);
        c.validate().unwrap();
        c.apply_env(&env(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://c:1/x",
        )]))
        .unwrap();
        assert_eq!(c.otlp.traces_url().as_deref(), Some("http://c:1/x"));
        for (k, v) in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
            ("LLMTAP_STORE", "s3"),
        ] {
            let err = Config::default()
                .apply_env(&env(&[(k, v)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(k), "{err}");
        }
        let mut off = c.clone();
        off.apply_env(&env(&[("OTEL_SDK_DISABLED", "true")]))
            .unwrap();
        assert!(!off.otlp.enabled());
    }

    #[test]
    fn store_none_needs_an_exporter_and_rates_are_checked() {
        let c = Config {
            store: StoreKind::None,
            ..Config::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("store") && err.contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
            "{err}"
        );
        let c = Config::from_toml(
            "store = \"none\"\n[otlp]\nendpoint = \"http://127.0.0.1:4318\"\ncompression = \"gzip\"\n",
            Path::new("x"),
        )
        .unwrap();
        c.validate().unwrap();
        for rate in [-0.1, 1.5, f64::NAN] {
            let mut c = Config::default();
            c.tracing.sample_rate = rate;
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains("tracing.sample_rate"), "{err}");
        }
        let mut c = Config::default();
        c.otlp.endpoint = "http://user:pw-secret@127.0.0.1:4318".into();
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("otlp.endpoint") && !err.contains("pw-secret"),
            "{err}"
        );
        let mut c = Config::default();
        c.otlp.endpoint = "ftp://x".into();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("otlp.endpoint"));
        let mut c = Config::default();
        c.otlp.endpoint = "http://127.0.0.1:4318".into();
        c.otlp
            .headers
            .insert("bad header".into(), "secret-value".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("otlp.headers") && !err.contains("secret-value"),
            "{err}"
        );
    }

    #[test]
    fn bad_redact_pattern_names_the_key() {
        let mut c = Config::default();
        c.tracing.redact_patterns = vec!["sk-[a-z]+".into(), "(oops".into()];
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("tracing.redact_patterns[1]"), "{err}");
        c.tracing.redact_patterns = vec![];
        c.validate().unwrap();
    }
}
