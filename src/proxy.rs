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
use crate::exact_usage::{self, StripUsage};
use crate::metrics::Metrics;
use crate::observe::{Exchange, Recording, ResponseObserver};
use crate::providers::Endpoint;
use crate::router::Router;
use crate::span;
use crate::tee::Tee;
use crate::upstream::{self, Upstream, UpstreamBody};

/// The upstream's response as the client receives it.
type Passed = Either<Incoming, Tee<Incoming, ResponseObserver>>;

/// What the client receives: the upstream's body (teed or not, stripped of
/// an injected usage chunk or not), or llmtap's own JSON error.
pub type ProxyBody =
    Either<Either<Passed, StripUsage<Tee<Incoming, ResponseObserver>>>, Full<Bytes>>;

/// The request handler. Shared by all connections.
pub struct Proxy {
    router: Router,
    upstream: Upstream,
    /// `None` when tracing is off.
    recording: Option<Arc<Recording>>,
    /// Where llmtap's own time per exchange is recorded (tracing on or off).
    metrics: Arc<Metrics>,
}

impl Proxy {
    pub fn new(
        router: Router,
        upstream: Upstream,
        recording: Option<Arc<Recording>>,
        metrics: Arc<Metrics>,
    ) -> Proxy {
        Proxy {
            router,
            upstream,
            recording,
            metrics,
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
                let (mut exchange, observer) = Exchange::start(
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
                if exchange.wants_exact_usage() {
                    match read_and_inject(&mut parts, body, observer, exchange.max_parse_bytes())
                        .await
                    {
                        Ok((injected, bytes)) => {
                            if injected {
                                exchange.set_injected_usage();
                            }
                            (Some(exchange), Either::Right(Full::new(bytes)))
                        }
                        Err(e) => {
                            // The client's upload failed: it is gone.
                            drop(exchange);
                            return e.to_response().map(Either::Right);
                        }
                    }
                } else {
                    (
                        Some(exchange),
                        Either::Left(Either::Right(Tee::new(body, observer))),
                    )
                }
            }
            None => (None, Either::Left(Either::Left(body))),
        };

        upstream::request_headers(&mut parts.headers);
        parts.uri = matched.upstream_uri;
        parts.version = Version::HTTP_11;
        let upstream_req = Request::from_parts(parts, body);

        let sent = Instant::now();
        let result = self.upstream.send(upstream_req, &label).await;
        let answered = Instant::now();
        let resp = self.respond(result, exchange, &label);
        // llmtap's own time: before the upstream call and after its answer.
        self.metrics
            .added_latency
            .observe(sent.duration_since(started) + answered.elapsed());
        resp
    }

    /// Turns the upstream's answer (or failure) into the client's response.
    fn respond(
        &self,
        result: Result<Response<Incoming>, ProxyError>,
        mut exchange: Option<Exchange>,
        label: &str,
    ) -> Response<ProxyBody> {
        match result {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                upstream::response_headers(&mut parts.headers);
                parts.version = Version::HTTP_11;
                let strip = exchange.as_ref().is_some_and(|e| {
                    e.injected_usage()
                        && parts.status.is_success()
                        && is_event_stream(&parts.headers)
                });
                let body = match exchange.take() {
                    Some(exchange) => {
                        let observer =
                            exchange.into_response_observer(parts.status.as_u16(), &parts.headers);
                        let teed = Tee::new(body, observer);
                        if strip {
                            parts.headers.remove(http::header::CONTENT_LENGTH);
                            Either::Right(StripUsage::new(teed))
                        } else {
                            Either::Left(Either::Right(teed))
                        }
                    }
                    None => Either::Left(Either::Left(body)),
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

fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// For `exact_stream_usage`: reads a (declared, small, unencoded) request
/// body whole, shows it to the request observer as the client sent it, and
/// returns the body to forward — with `include_usage` added when that
/// applies (`true`), otherwise unchanged.
async fn read_and_inject(
    parts: &mut http::request::Parts,
    body: Incoming,
    mut observer: crate::observe::RequestObserver,
    max: usize,
) -> Result<(bool, Bytes), ProxyError> {
    use crate::tee::{End, Observer};
    use http_body_util::BodyExt;
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let encoded = parts.headers.contains_key(http::header::CONTENT_ENCODING);
    let limited = http_body_util::Limited::new(body, max);
    let bytes = match limited.collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            observer.on_end(End::Error(e.to_string()));
            return Err(ProxyError::BadRequest(format!(
                "request body could not be read: {e}"
            )));
        }
    };
    observer.on_data(&bytes);
    observer.on_end(End::Complete);
    let injected = match declared {
        Some(n) if n == bytes.len() && !encoded => exact_usage::inject(&bytes),
        _ => None,
    };
    match injected {
        Some(new) => {
            parts.headers.insert(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from(new.len()),
            );
            // The usage chunk is removed from plain text only.
            parts.headers.insert(
                http::header::ACCEPT_ENCODING,
                http::HeaderValue::from_static("identity"),
            );
            Ok((true, new))
        }
        None => Ok((false, bytes)),
    }
}
