//! Loading: the TOML file (`--config`, `LLMTAP_CONFIG` or the default
//! path), then the environment overrides (`env.rs`), then validation
//! (`validate.rs`).
//!
//! Reads one file; never touches the network or the store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{Config, ConfigError};

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
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;

    #[test]
    fn shipped_config_parses_and_matches_defaults() {
        let text = include_str!("../../config/llmtap.toml");
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
    fn unknown_key_is_named() {
        let err = Config::from_toml("[tracing]\nbatch_sise = 3\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("batch_sise"), "{err}");
    }
}
