//! Proxy: the per-request handler that ties the stages together.
//!
//! route → (start exchange, tee request body) → upstream → (tee response
//! body) → client. When tracing is off no tee, parser or span exists on the
//! path: the bodies are handed straight through.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::error::ProxyError;
use crate::observe::{Exchange, Recording, ResponseObserver};
use crate::providers::Endpoint;
use crate::router::Router;
use crate::span;
use crate::tee::Tee;
use crate::upstream::{self, Upstream, UpstreamBody};

/// What the client receives.
pub type ProxyBody = Either<Either<Incoming, Tee<Incoming, ResponseObserver>>, Full<Bytes>>;

/// The request handler. Shared by all connections.
pub struct Proxy {
    router: Router,
    upstream: Upstream,
    /// `None` when tracing is off.
    recording: Option<Arc<Recording>>,
}

impl Proxy {
    pub fn new(router: Router, upstream: Upstream, recording: Option<Arc<Recording>>) -> Proxy {
        Proxy {
            router,
            upstream,
            recording,
        }
    }

    /// Handles one request. Never fails: llmtap's own errors become
    /// OpenAI-style JSON responses.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let started = Instant::now();
        let matched = match self.router.route(req.uri()) {
            Ok(m) => m,
            Err(_) => {
                let e = ProxyError::NoRoute {
                    path: req.uri().path().to_string(),
                    prefixes: self
                        .router
                        .prefixes()
                        .iter()
                        .map(|p| p.to_string())
                        .collect(),
                };
                return e.to_response().map(Either::Right);
            }
        };
        let (mut parts, body) = req.into_parts();
        let route = &matched.route;
        let label = format!("{}://{}", route.upstream.scheme, route.upstream.authority);

        let (exchange, body): (Option<Exchange>, UpstreamBody) = match &self.recording {
            Some(rec) => {
                let endpoint =
                    Endpoint::classify(route.format, &parts.method, &matched.upstream_path);
                let (exchange, observer) = Exchange::start(
                    Arc::clone(rec),
                    started,
                    span::now_us(),
                    endpoint,
                    &route.provider,
                    &route.prefix,
                    &parts.method,
                    parts.uri.path(),
                    &matched.upstream_path,
                    &parts.headers,
                );
                (Some(exchange), Either::Right(Tee::new(body, observer)))
            }
            None => (None, Either::Left(body)),
        };

        upstream::request_headers(&mut parts.headers);
        parts.uri = matched.upstream_uri;
        parts.version = Version::HTTP_11;
        let upstream_req = Request::from_parts(parts, body);

        match self.upstream.send(upstream_req, &label).await {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                upstream::response_headers(&mut parts.headers);
                parts.version = Version::HTTP_11;
                let body = match exchange {
                    Some(exchange) => {
                        let observer =
                            exchange.into_response_observer(parts.status.as_u16(), &parts.headers);
                        Either::Right(Tee::new(body, observer))
                    }
                    None => Either::Left(body),
                };
                Response::from_parts(parts, Either::Left(body))
            }
            Err(error) => {
                tracing::warn!(%error, upstream = %label, "Upstream request failed");
                let resp = error.to_response().map(Either::Right);
                if let Some(exchange) = exchange {
                    exchange.fail(&error);
                }
                resp
            }
        }
    }
}
