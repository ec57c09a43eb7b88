//! Listener: accepts TCP connections and serves HTTP/1.1 and HTTP/2
//! (cleartext, prior knowledge) on each, until shutdown; then drains.
//!
//! Used by both the proxy and the admin listener. Shutdown: stop accepting,
//! let every open connection finish its in-flight exchanges (HTTP/1
//! keep-alive and HTTP/2 connections are told to close after them) for up
//! to `drain`, then call `on_cut` and drop whatever is left (their spans
//! end `cancelled`) and wait for those tasks to unwind.

use std::convert::Infallible;
use std::future::Future;
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

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves `handler` on `listener` until `shutdown` resolves, then drains for
/// at most `drain`. `on_cut` runs if the window ends with connections still
/// open, before they are dropped (so their exchanges can tell a cut by
/// llmtap from a client hanging up).
pub async fn serve<F, Fut, B>(
    listener: TcpListener,
    handler: F,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
    on_cut: impl FnOnce(),
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
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
                tasks.spawn(async move {
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
