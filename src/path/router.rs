//! Router: maps an incoming path to a configured route and builds the
//! upstream URI.
//!
//! Owns prefix matching (on segment boundaries, longest prefix first) and the
//! rewrite of path and query onto the route's upstream base. It must never
//! produce a URI whose host is not a configured upstream: llmtap is not an
//! open proxy, and no request header can change where a request goes.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;

use crate::config::{normalize_prefix, Format, RouteConfig, UpstreamConfig};

/// The parsed upstream base URL of a route.
#[derive(Debug, Clone)]
pub struct UpstreamBase {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Path prefix on the upstream (e.g. `/openai` for a gateway), no
    /// trailing slash; empty for none.
    pub base_path: String,
    /// `scheme://authority`, how logs and errors name the upstream (built
    /// once, not per request).
    pub label: String,
}

impl UpstreamBase {
    /// Parses and checks an upstream URL: `https://host[:port][/path]`, or
    /// `http://` for loopback hosts (anything else needs `allow_insecure`).
    pub fn parse(url: &str, allow_insecure: bool) -> Result<UpstreamBase, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| format!("{url:?} needs a scheme (https://)"))?;
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("{url:?} needs a host"))?;
        if authority.as_str().contains('@') {
            return Err(format!("{url:?} must not carry credentials"));
        }
        if scheme == Scheme::HTTP {
            if !allow_insecure && !is_loopback_host(authority.host()) {
                return Err(format!(
                    "{url:?} is plain http to a non-loopback host; use https or set allow_insecure = true"
                ));
            }
        } else if scheme != Scheme::HTTPS {
            return Err(format!("{url:?}: scheme must be http or https"));
        }
        if uri.query().is_some() {
            return Err(format!("{url:?} must not have a query"));
        }
        let base_path = uri.path().trim_end_matches('/').to_string();
        Ok(UpstreamBase {
            label: format!("{scheme}://{authority}"),
            scheme,
            authority,
            base_path,
        })
    }
}

fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.eq_ignore_ascii_case("localhost") {
        return true;
    }
    bare.parse::<IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

/// A configured route, ready to match.
#[derive(Debug)]
pub struct Route {
    /// The prefix as configured, normalized (no trailing slash).
    pub prefix: String,
    pub upstream: UpstreamBase,
    pub format: Format,
    pub strip_prefix: bool,
    /// Provider name recorded on spans.
    pub provider: String,
    /// The route's timeouts ([upstream] defaults with its overrides).
    pub timeouts: Timeouts,
}

/// How long llmtap waits on an upstream, per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP + TLS connect.
    pub connect: Duration,
    /// From sending the request to the response head.
    pub first_byte: Duration,
    /// Between two frames of the response body.
    pub idle: Duration,
}

impl Timeouts {
    /// The `[upstream]` defaults with a route's overrides.
    pub fn resolve(defaults: &UpstreamConfig, route: &RouteConfig) -> Timeouts {
        let ms = |over: Option<u64>, default: u64| Duration::from_millis(over.unwrap_or(default));
        Timeouts {
            connect: ms(route.connect_timeout_ms, defaults.connect_timeout_ms),
            first_byte: ms(route.first_byte_timeout_ms, defaults.first_byte_timeout_ms),
            idle: ms(route.idle_timeout_ms, defaults.idle_timeout_ms),
        }
    }
}

/// All routes, longest prefix first.
#[derive(Debug, Clone)]
pub struct Router {
    routes: Arc<[Arc<Route>]>,
}

/// The result of matching a request.
#[derive(Debug, Clone)]
pub struct Matched {
    pub route: Arc<Route>,
    /// The full URI to send upstream.
    pub upstream_uri: Uri,
    /// The path as the provider sees it (after strip), without query; used
    /// to tell endpoints apart.
    pub upstream_path: String,
}

/// Errors building the upstream URI.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("no route for path {path}")]
    NoRoute { path: String },
    #[error("cannot build upstream URI: {0}")]
    BadUri(String),
}

// === impl Router ===

impl Router {
    /// Builds the table from validated config; `defaults` gives the
    /// timeouts a route does not set.
    pub fn new(routes: &[RouteConfig], defaults: &UpstreamConfig) -> Result<Router, String> {
        let mut built = Vec::with_capacity(routes.len());
        for r in routes {
            let upstream = UpstreamBase::parse(&r.upstream, r.allow_insecure)?;
            let provider = r.provider.clone().unwrap_or_else(|| {
                match r.format {
                    Format::Openai => "openai",
                    Format::Anthropic => "anthropic",
                }
                .to_string()
            });
            built.push(Arc::new(Route {
                prefix: normalize_prefix(&r.prefix).to_string(),
                upstream,
                format: r.format,
                strip_prefix: r.strip_prefix,
                provider,
                timeouts: Timeouts::resolve(defaults, r),
            }));
        }
        built.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(Router {
            routes: built.into(),
        })
    }

    /// Every route's timeouts (the upstream client keeps one connection
    /// pool per distinct connect timeout).
    pub fn timeouts(&self) -> impl Iterator<Item = Timeouts> + '_ {
        self.routes.iter().map(|r| r.timeouts)
    }

    /// The configured prefixes, for error messages.
    pub fn prefixes(&self) -> Vec<&str> {
        self.routes.iter().map(|r| r.prefix.as_str()).collect()
    }

    /// Matches `uri`'s path and builds the upstream URI. Only the path and
    /// query of the incoming URI are used; its scheme and authority (and any
    /// `Host` header) are ignored, so a client cannot steer the request.
    pub fn route(&self, uri: &Uri) -> Result<Matched, RouteError> {
        let path = uri.path();
        let route = self
            .routes
            .iter()
            .find(|r| prefix_matches(&r.prefix, path))
            .ok_or_else(|| RouteError::NoRoute {
                path: path.to_string(),
            })?;
        let rest = if route.strip_prefix && route.prefix != "/" {
            &path[route.prefix.len()..]
        } else {
            path
        };
        let mut upstream_path =
            String::with_capacity(route.upstream.base_path.len() + rest.len() + 1);
        upstream_path.push_str(&route.upstream.base_path);
        if !rest.starts_with('/') {
            upstream_path.push('/');
        }
        upstream_path.push_str(rest);
        let mut pq = upstream_path.clone();
        if let Some(q) = uri.query() {
            pq.push('?');
            pq.push_str(q);
        }
        let pq = PathAndQuery::try_from(pq).map_err(|e| RouteError::BadUri(e.to_string()))?;
        let upstream_uri = Uri::builder()
            .scheme(route.upstream.scheme.clone())
            .authority(route.upstream.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|e| RouteError::BadUri(e.to_string()))?;
        Ok(Matched {
            route: Arc::clone(route),
            upstream_uri,
            upstream_path,
        })
    }
}

/// True when `path` is `prefix` or continues it at a `/`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::default_routes;

    fn router() -> Router {
        Router::new(&default_routes(), &UpstreamConfig::default()).unwrap()
    }

    #[test]
    fn openai_keeps_prefix() {
        let m = router()
            .route(&"/v1/chat/completions?x=1".parse().unwrap())
            .unwrap();
        assert_eq!(
            m.upstream_uri.to_string(),
            "https://api.openai.com/v1/chat/completions?x=1"
        );
        assert_eq!(m.route.provider, "openai");
        assert_eq!(m.upstream_path, "/v1/chat/completions");
    }

    #[test]
    fn anthropic_strips_prefix() {
        let m = router()
            .route(&"/anthropic/v1/messages".parse().unwrap())
            .unwrap();
        assert_eq!(
            m.upstream_uri.to_string(),
            "https://api.anthropic.com/v1/messages"
        );
        assert_eq!(m.route.format, Format::Anthropic);
    }

    #[test]
    fn segment_boundary_and_unknown() {
        assert!(router().route(&"/v10/x".parse().unwrap()).is_err());
        assert!(router().route(&"/anthropicx".parse().unwrap()).is_err());
        assert!(router().route(&"/".parse().unwrap()).is_err());
        // An absolute-form URI cannot pick another host.
        let m = router()
            .route(&"http://evil.example/v1/models".parse().unwrap())
            .unwrap();
        assert_eq!(m.upstream_uri.host(), Some("api.openai.com"));
    }

    #[test]
    fn upstream_base_checks() {
        assert!(UpstreamBase::parse("http://127.0.0.1:9", false).is_ok());
        assert!(UpstreamBase::parse("http://localhost:9", false).is_ok());
        assert!(UpstreamBase::parse("http://[::1]:9", false).is_ok());
        assert!(UpstreamBase::parse("http://10.0.0.1", false).is_err());
        assert!(UpstreamBase::parse("http://10.0.0.1", true).is_ok());
        assert!(UpstreamBase::parse("https://u:p@host", false).is_err());
        let b = UpstreamBase::parse("https://gw.example/openai/", false).unwrap();
        assert_eq!(b.base_path, "/openai");
    }

    #[test]
    fn route_timeouts_override_defaults() {
        let mut routes = default_routes();
        routes[1].idle_timeout_ms = Some(1500);
        routes[1].connect_timeout_ms = Some(700);
        let d = UpstreamConfig::default();
        let r = Router::new(&routes, &d).unwrap();
        let a = r.route(&"/anthropic/v1/messages".parse().unwrap()).unwrap();
        assert_eq!(a.route.timeouts.idle, Duration::from_millis(1500));
        assert_eq!(a.route.timeouts.connect, Duration::from_millis(700));
        assert_eq!(
            a.route.timeouts.first_byte,
            Duration::from_millis(d.first_byte_timeout_ms)
        );
        let o = r.route(&"/v1/models".parse().unwrap()).unwrap();
        assert_eq!(
            o.route.timeouts.idle,
            Duration::from_millis(d.idle_timeout_ms)
        );
    }

    #[test]
    fn base_path_joins() {
        let mut routes = default_routes();
        routes[1].upstream = "https://gw.example/anthropic-proxy".into();
        let r = Router::new(&routes, &UpstreamConfig::default()).unwrap();
        let m = r.route(&"/anthropic/v1/messages".parse().unwrap()).unwrap();
        assert_eq!(
            m.upstream_uri.to_string(),
            "https://gw.example/anthropic-proxy/v1/messages"
        );
    }
}
