//! Environment overrides: the `LLMTAP_*` variables, the four seed names
//! (`ENABLE_TRACING`, `TRACE_BATCH_SIZE`, `TRACE_BATCH_INTERVAL_MS`,
//! `TRACE_DEBUG`) and the OpenTelemetry exporter variables (`OTEL_*`). Each
//! variable names one key; a bad value is an error naming the variable.
//!
//! Reads the map it is given, never the process environment itself.

use std::collections::HashMap;
use std::path::PathBuf;

use super::{Compression, Config, ConfigError, StoreKind};

impl Config {
    /// Applies environment overrides. Each variable names one key.
    pub fn apply_env(&mut self, env: &HashMap<String, String>) -> Result<(), ConfigError> {
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
}

/// Variable `key` parsed as `T`, if set.
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
/// Variable `key` as a boolean (`true`/`false`, `1`/`0`, `yes`/`no`,
/// `on`/`off`), if set.
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

#[cfg(test)]
mod tests {
    use super::super::test_env as env;
    use super::*;

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
}
