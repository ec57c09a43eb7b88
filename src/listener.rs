//! Listener: accepts TCP connections and serves HTTP/1.1 and HTTP/2
//! (cleartext, prior knowledge) on each, until shutdown; then drains.
//!
//! Used by both the proxy and the admin listener. Shutdown: stop accepting,
//! let every open connection finish its in-flight exchanges (HTTP/1
//! keep-alive and HTTP/2 connections are told to close after them) for up
//! to `drain`, then call `on_cut` and drop whatever is left (their spans
//! end `cancelled`) and wait for those tasks to unwind.
//!
//! Limits (`[limits]`): the HTTP/1 head buffer (past it, 431) and the time
//! to send a head (slowloris: the connection is closed), HTTP/2's header
//! list size, concurrent streams, keep-alive pings and the rapid-reset
//! guard. Open connections are counted (`llmtap_open_connections`).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::config::LimitsConfig;
use crate::metrics::{GaugeGuard, Traffic};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a listener treats its connections.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Protocol limits.
    pub limits: LimitsConfig,
    /// Where open connections are counted (`None`: not counted).
    pub traffic: Option<Arc<Traffic>>,
}

/// Serves `handler` on `listener` until `shutdown` resolves, then drains for
/// at most `drain`. `on_cut` runs if the window ends with connections still
/// open, before they are dropped (so their exchanges can tell a cut by
/// llmtap from a client hanging up).
pub async fn serve<F, Fut, B>(
    listener: TcpListener,
    handler: F,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    options: ServeOptions,
    on_cut: impl FnOnce(),
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let limits = &options.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(limits.max_header_bytes)
        .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms));
    let keep_alive = (limits.h2_keep_alive_interval_ms > 0)
        .then(|| Duration::from_millis(limits.h2_keep_alive_interval_ms));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_pending_accept_reset_streams(limits.h2_max_pending_reset_streams)
        .keep_alive_interval(keep_alive)
        .keep_alive_timeout(Duration::from_millis(limits.h2_keep_alive_timeout_ms));
    let graceful = GracefulShutdown::new();
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(a) => a,
                    Err(error) => {
                        // Out of file descriptors and the like: back off a
                        // moment instead of spinning.
                        tracing::warn!(%error, "Accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                let service = service_fn(move |req| {
                    let fut = handler(req);
                    async move { Ok::<_, Infallible>(fut.await) }
                });
                let conn = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned();
                let conn = graceful.watch(conn);
                let open = options
                    .traffic
                    .as_ref()
                    .map(|t| GaugeGuard::new(t, |t| &t.open_connections));
                tasks.spawn(async move {
                    let _open = open;
                    if let Err(error) = conn.await {
                        tracing::debug!(error = %error, "Connection ended with an error");
                    }
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(drain) => {
            tracing::warn!(open = tasks.len(), "Drain window over; closing remaining connections");
            on_cut();
            tasks.abort_all();
        }
    }
    while tasks.join_next().await.is_some() {}
}
