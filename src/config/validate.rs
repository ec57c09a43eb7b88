//! Validation: the checks serde cannot make (ranges, URLs, header names,
//! routes, combinations of keys), run once at load. Every error names its
//! key, and never echoes a value that may be a credential.
//!
//! Checks only; never changes a value.

use super::{normalize_prefix, Config, ConfigError, LimitsConfig, StoreKind};

impl Config {
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
        self.validate_routes()
    }

    /// At least one route, each with a path prefix, an upstream URL and
    /// non-zero timeouts, no prefix twice.
    fn validate_routes(&self) -> Result<(), ConfigError> {
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::test_env as env;
    use super::*;

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
