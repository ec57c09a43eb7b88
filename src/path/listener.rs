//! Listener: accepts TCP connections and serves HTTP/1.1 and HTTP/2
//! (cleartext, prior knowledge) on each, until shutdown; then drains.
//!
//! Used by both the proxy and the admin listener. Shutdown: stop accepting,
//! let every open connection finish its in-flight exchanges (HTTP/1
//! keep-alive and HTTP/2 connections are told to close after them) for up
//! to `drain`, then call `on_cut` and drop whatever is left (their spans
//! end `cancelled`) and wait for those tasks to unwind.
//!
//! The protocol is picked by peeking at a connection's first bytes (the
//! HTTP/2 preface or not); a client that sends none within the head
//! timeout is closed, and one that has sent none when shutdown starts is
//! closed at once (it has no exchange to drain).
//!
//! Limits (`[limits]`): the HTTP/1 head size (past it, 431) and the time
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
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::config::LimitsConfig;
use crate::output::metrics::{GaugeGuard, Traffic};

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
    let builders = Arc::new(Builders::new(&options.limits));
    let graceful = GracefulShutdown::new();
    // Tells connections still deciding their protocol that the listener
    // is stopping: they have no exchange to finish, so they end at once.
    let (stopping, stop_rx) = tokio::sync::watch::channel(false);
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
                // Counted by the drain from here on, sniffing included.
                let watcher = graceful.watcher();
                let builders = Arc::clone(&builders);
                let mut stop_rx = stop_rx.clone();
                let open = options
                    .traffic
                    .as_ref()
                    .map(|t| GaugeGuard::new(t, |t| &t.open_connections));
                tasks.spawn(async move {
                    let _open = open;
                    let protocol = tokio::select! {
                        picked = builders.pick(&stream) => picked,
                        _ = stop_rx.wait_for(|stop| *stop) => None,
                    };
                    let io = TokioIo::new(stream);
                    let ended = match protocol {
                        Some(Protocol::Http1) => {
                            let conn = builders.http1.serve_connection(io, service);
                            watcher.watch(conn).await
                        }
                        Some(Protocol::Http2) => {
                            let conn = builders.http2.serve_connection(io, service);
                            watcher.watch(conn).await
                        }
                        // Silent past the head timeout, or gone.
                        None => Ok(()),
                    };
                    if let Err(error) = ended {
                        tracing::debug!(error = %error, "Connection ended with an error");
                    }
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = &mut shutdown => {
                let _ = stopping.send(true);
                break;
            }
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

/// The connection builders, one per protocol; which one serves a
/// connection is decided by peeking at its first bytes.
///
/// hyper-util's `auto` builder read the first 24 bytes itself and replayed
/// them to the HTTP/1 codec, whose first read then found 24 bytes in its
/// 8 KB buffer and doubled it to 16 KB for the life of the connection
/// (heaptrack, 1,000 open connections: 16 MB). Peeked bytes stay in the
/// socket for the codec's own read.
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    /// How long a client may take to send its first bytes
    /// (`limits.header_read_timeout_ms`).
    first_bytes_timeout: Duration,
}

/// What an HTTP/2 client with prior knowledge sends first.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl Builders {
    fn new(limits: &LimitsConfig) -> Builders {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            // The head limit, exact (431 past it). The buffer cap alone
            // is not: a read may overshoot it and bring a whole larger
            // head in.
            .max_header_size(limits.max_header_bytes)
            .max_buf_size(limits.max_header_bytes)
            .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms));
        let keep_alive = (limits.h2_keep_alive_interval_ms > 0)
            .then(|| Duration::from_millis(limits.h2_keep_alive_interval_ms));
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(limits.h2_max_concurrent_streams)
            .max_pending_accept_reset_streams(limits.h2_max_pending_reset_streams)
            .keep_alive_interval(keep_alive)
            .keep_alive_timeout(Duration::from_millis(limits.h2_keep_alive_timeout_ms));
        Builders {
            http1,
            http2,
            first_bytes_timeout: Duration::from_millis(limits.header_read_timeout_ms),
        }
    }

    /// The connection's protocol, from a peek at its first bytes: HTTP/2
    /// for the whole preface, HTTP/1 for anything that cannot begin it.
    /// `None` when the client closes, or has not told within the head
    /// timeout (as HTTP/1's codec closes a head that slow).
    async fn pick(&self, stream: &tokio::net::TcpStream) -> Option<Protocol> {
        let deadline = tokio::time::Instant::now() + self.first_bytes_timeout;
        let mut first = [0u8; 24];
        loop {
            let n = tokio::time::timeout_at(deadline, stream.peek(&mut first))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            if let Some(protocol) = sniff(&first[..n]) {
                return Some(protocol);
            }
            // Part of the preface so far: a peek returns at once while
            // those bytes wait, so look again a moment later.
            tokio::time::sleep_until(
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(1)),
            )
            .await;
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// The protocol a connection's first bytes show, `None` while they are
/// still a proper beginning of the HTTP/2 preface (or empty).
fn sniff(first: &[u8]) -> Option<Protocol> {
    if first.len() >= H2_PREFACE.len() && first[..H2_PREFACE.len()] == H2_PREFACE[..] {
        Some(Protocol::Http2)
    } else if H2_PREFACE.starts_with(first) {
        None
    } else {
        Some(Protocol::Http1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_pick_the_protocol() {
        assert_eq!(sniff(H2_PREFACE), Some(Protocol::Http2));
        assert_eq!(
            sniff(b"POST /v1/chat/completions HTTP/1.1\r\n"),
            Some(Protocol::Http1)
        );
        assert_eq!(sniff(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http1));
        // A method that shares the preface's first letter.
        assert_eq!(sniff(b"PUT / HTTP/1.1\r\n"), Some(Protocol::Http1));
        // Too early to tell: `pick` peeks again.
        assert_eq!(sniff(b""), None);
        assert_eq!(sniff(b"P"), None);
        assert_eq!(sniff(b"PRI * HTTP/2.0\r\n"), None);
    }
}
