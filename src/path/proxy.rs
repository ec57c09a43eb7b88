//! Proxy: the per-request handler that ties the stages together.
//!
//! route → (start exchange, tee request body) → upstream → (tee response
//! body) → client. When tracing is off no tee, parser or span exists on the
//! path: the bodies are handed straight through.
//!
//! Limits enforced here: a declared body over `limits.max_body_bytes` gets
//! 413 before the upstream is contacted, a chunked one is cut when it grows
//! past it; the response body is cut after the route's idle timeout. Every
//! request counts in `llmtap_inflight_requests` until its response body
//! ends or is dropped.

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full, Limited};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use crate::output::metrics::{GaugeGuard, Metrics, Traffic};
use crate::path::error::ProxyError;
use crate::path::exact_usage::{self, StripUsage};
use crate::path::router::Router;
use crate::path::tee::Tee;
use crate::path::upstream::{self, ClientBody, IdleTimeout, Upstream, UpstreamBody};
use crate::record::exchange::Exchange;
use crate::record::providers::Endpoint;
use crate::record::recording::Recording;
use crate::record::response::ResponseObserver;
use crate::record::span;

/// The upstream's body with the route's idle timeout.
type FromUpstream = IdleTimeout<Incoming>;

/// The upstream's response as the client receives it.
type Passed = Either<FromUpstream, Tee<FromUpstream, ResponseObserver>>;

/// The upstream's body (teed or not, stripped of an injected usage chunk or
/// not), or llmtap's own JSON error.
type Answer = Either<Either<Passed, StripUsage<Tee<FromUpstream, ResponseObserver>>>, Full<Bytes>>;

/// What the client receives: the answer, counted in flight until it ends.
pub type ProxyBody = InFlight<Answer>;

/// The request handler. Shared by all connections.
pub struct Proxy {
    router: Router,
    upstream: Upstream,
    /// `None` when tracing is off.
    recording: Option<Arc<Recording>>,
    /// Where llmtap's own time per exchange is recorded (tracing on or off).
    metrics: Arc<Metrics>,
    traffic: Arc<Traffic>,
    /// `limits.max_body_bytes`.
    max_body_bytes: u64,
}

impl Proxy {
    pub fn new(
        router: Router,
        upstream: Upstream,
        recording: Option<Arc<Recording>>,
        metrics: Arc<Metrics>,
        max_body_bytes: u64,
    ) -> Proxy {
        Proxy {
            router,
            upstream,
            recording,
            traffic: Arc::clone(&metrics.traffic),
            metrics,
            max_body_bytes,
        }
    }

    /// Handles one request. Never fails: llmtap's own errors become
    /// OpenAI-style JSON responses.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let guard = GaugeGuard::new(&self.traffic, |t| &t.inflight_requests);
        self.handle_inner(req).await.map(|body| InFlight {
            inner: body,
            _guard: guard,
        })
    }

    async fn handle_inner(&self, req: Request<Incoming>) -> Response<Answer> {
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
        let label = route.upstream.label.as_str();
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let too_large =
            declared
                .filter(|&n| n > self.max_body_bytes)
                .map(|n| ProxyError::BodyTooLarge {
                    declared: Some(n),
                    limit: self.max_body_bytes,
                });
        // A chunked body is cut where it passes the limit.
        let body: ClientBody = Limited::new(
            body,
            usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX),
        );

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
                if let Some(error) = too_large {
                    self.traffic.body_too_large.fetch_add(1, Ordering::Relaxed);
                    drop(observer);
                    let resp = error.to_response().map(Either::Right);
                    exchange.fail(&error);
                    return resp;
                }
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
            None => {
                if let Some(error) = too_large {
                    self.traffic.body_too_large.fetch_add(1, Ordering::Relaxed);
                    return error.to_response().map(Either::Right);
                }
                (None, Either::Left(Either::Left(body)))
            }
        };

        upstream::request_headers(&mut parts.headers);
        parts.uri = matched.upstream_uri;
        parts.version = Version::HTTP_11;
        let upstream_req = Request::from_parts(parts, body);

        let sent = Instant::now();
        let result = self
            .upstream
            .send(upstream_req, label, &route.timeouts)
            .await;
        let answered = Instant::now();
        let resp = self.respond(result, exchange, label, route.timeouts.idle);
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
        idle: std::time::Duration,
    ) -> Response<Answer> {
        match result {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                let body = IdleTimeout::new(body, idle, Arc::clone(&self.traffic));
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
                let error = match error {
                    ProxyError::BodyTooLarge { .. } => {
                        self.traffic.body_too_large.fetch_add(1, Ordering::Relaxed);
                        ProxyError::BodyTooLarge {
                            declared: None,
                            limit: self.max_body_bytes,
                        }
                    }
                    other => other,
                };
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
    body: ClientBody,
    mut observer: crate::record::request::RequestObserver,
    max: usize,
) -> Result<(bool, Bytes), ProxyError> {
    use crate::path::tee::{End, Observer};
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

// === impl InFlight ===

pin_project! {
    /// The response body as the client gets it, holding one unit of
    /// `llmtap_inflight_requests` until it ends or is dropped. Frames,
    /// `size_hint` and `is_end_stream` pass through untouched.
    pub struct InFlight<B> {
        #[pin]
        inner: B,
        _guard: GaugeGuard,
    }
}

impl<B: Body> Body for InFlight<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
