//! llmtap: a transparent reverse proxy that records every LLM call as a
//! span.
//!
//! The modules follow the data path (see ARCHITECTURE.md), in four wings:
//! `path` (`listener` → `router` → `proxy` → `upstream`, with `tee`
//! copying both bodies), `record` (the observers and the `Exchange` that
//! turn the copies into a span: `providers` / `sse` / `decode` / `tokens`
//! / `pricing` / `stitch`), `output` (`sink` → `store`, and `otlp`, the
//! OpenTelemetry exporter, recording the result in the background) and
//! `admin`. `run` wires them together; `recorder` starts and stops the
//! recording side.

pub mod admin;
pub mod config;
pub mod output;
pub mod path;
pub mod record;
mod recorder;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::api;
use crate::config::Config;
use crate::output::{metrics, otlp, redact, store};
use crate::path::{listener, proxy, router, upstream};
use crate::record::pricing;
use crate::recorder::Recorder;

/// Errors that stop llmtap from starting.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid database_url: {0}")]
    StoreUrl(#[from] store::StoreUrlError),
    #[error("cannot open the span store: {0}")]
    Store(#[from] store::StoreError),
    #[error("invalid routes: {0}")]
    Routes(String),
    #[error("prices: {0}")]
    Pricing(#[from] pricing::PricingError),
    #[error("invalid tracing.redact_patterns: {0}")]
    Redact(#[from] redact::PatternError),
    #[error("the admin listener is on {0}, not a loopback address: set admin_token (LLMTAP_ADMIN_TOKEN)")]
    AdminExposed(std::net::SocketAddr),
    #[error("OTLP export: {0}")]
    Otlp(#[from] otlp::OtlpError),
    #[error("cannot start the finishing thread: {0}")]
    Finisher(std::io::Error),
    #[error("invalid value for store: store = \"none\" needs an OTLP exporter (OTEL_EXPORTER_OTLP_ENDPOINT or [otlp] endpoint)")]
    NothingToRecordTo,
}

/// The listeners `run` serves; bound by the caller so tests can use port 0.
pub struct Listeners {
    pub proxy: TcpListener,
    /// `None` disables the admin listener.
    pub admin: Option<TcpListener>,
}

/// Runs llmtap until `shutdown` resolves, then shuts down in order.
pub async fn run(
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
    config: Config,
) -> Result<(), RunError> {
    // The query API is never open to the network without a token, whatever
    // address the caller bound.
    if let Some(addr) = listeners.admin.as_ref().and_then(|l| l.local_addr().ok()) {
        if !addr.ip().is_loopback() && config.admin_token.is_empty() {
            return Err(RunError::AdminExposed(addr));
        }
    }
    let router = router::Router::new(&config.routes, &config.upstream).map_err(RunError::Routes)?;
    let metrics = Arc::new(metrics::Metrics::default());
    let upstream = upstream::Upstream::new(
        &config.upstream,
        router.timeouts().map(|t| t.connect),
        Arc::clone(&metrics.traffic),
    );
    // The recorder: store (unless `store = "none"`), queue and batcher, the
    // OTLP exporter when configured (all absent with tracing off).
    let recorder = Recorder::start(&config, &metrics).await?;
    let recording = recorder.as_ref().map(|r| Arc::clone(r.recording()));
    let proxy = Arc::new(proxy::Proxy::new(
        router,
        upstream,
        recording.clone(),
        Arc::clone(&metrics),
        config.limits.max_body_bytes,
    ));

    let stop_rx = stop_signal(shutdown);
    let admin_task = listeners.admin.map(|listener| {
        let admin = admin(&config, &metrics, recorder.as_ref());
        spawn_admin(listener, admin, &config, stop_rx.clone())
    });

    tracing::info!(
        listen = %listeners.proxy.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        tracing = config.tracing.enabled,
        "llmtap ready"
    );

    // Shutdown order:
    // 1. stop accepting (inside `serve`, when the signal arrives);
    // 2. drain in-flight exchanges, up to `shutdown.drain_timeout_ms`; what
    //    is still open then is dropped, and its spans end `cancelled`
    //    (error type `shutdown`);
    // then `Recorder::shutdown`:
    // 3. finish the exchanges that ended (the finisher settles, up to
    //    `flush_timeout_ms`), write the tool calls still waiting for a
    //    result `cancelled`, and close the span queue: nothing more can be
    //    recorded;
    // 4. the batcher writes what is queued (up to `flush_timeout_ms` while
    //    the store fails) and exits (with `store = "none"`: wait, as long,
    //    for deferred finishing work instead);
    // 5. the OTLP exporter sends what is queued, retrying until
    //    `flush_timeout_ms` after its close; past that what is left is
    //    counted failed;
    // 6. close the store, then wait for the admin listener; return.
    listener::serve(
        listeners.proxy,
        move |req| {
            let proxy = Arc::clone(&proxy);
            // Boxed: hyper keeps a slot the size of this future for every
            // open connection, idle or not (~6.6 KB unboxed, most of it the
            // upstream client's call); boxed, the state lives only while a
            // request waits for its response head.
            Box::pin(async move { proxy.handle(req).await })
        },
        stopped(stop_rx),
        Duration::from_millis(config.shutdown.drain_timeout_ms),
        listener::ServeOptions {
            limits: config.limits.clone(),
            traffic: Some(Arc::clone(&metrics.traffic)),
        },
        move || {
            // Exchanges dropped from now on were cut by llmtap.
            if let Some(rec) = recording {
                rec.drain_over
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
        },
    )
    .await;
    if let Some(recorder) = recorder {
        let flush = Duration::from_millis(config.shutdown.flush_timeout_ms);
        recorder.shutdown(flush).await;
    }
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    Ok(())
}

/// The stop signal, sent once `shutdown` resolves, for every listener.
fn stop_signal(shutdown: impl Future<Output = ()> + Send + 'static) -> watch::Receiver<bool> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    stop_rx
}

/// Resolves once the stop signal is sent.
async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Serves the admin listener until the stop signal (with a 1 s drain).
fn spawn_admin(
    listener: TcpListener,
    admin: Arc<admin::Admin>,
    config: &Config,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(listener::serve(
        listener,
        move |req| Arc::clone(&admin).handle(req),
        stopped(stop),
        Duration::from_millis(1000),
        listener::ServeOptions {
            limits: config.limits.clone(),
            traffic: None,
        },
        || {},
    ))
}

/// The admin listener's handler: probes, metrics, the query API.
fn admin(
    config: &Config,
    metrics: &Arc<metrics::Metrics>,
    recorder: Option<&Recorder>,
) -> Arc<admin::Admin> {
    Arc::new(admin::Admin {
        store: recorder.and_then(Recorder::store),
        sink: recorder.map(Recorder::sink),
        queue_max_bytes: config.tracing.queue_max_bytes,
        metrics: Arc::clone(metrics),
        recording: recorder.map(|r| Arc::clone(r.recording())),
        api: api::Api {
            store: recorder.and_then(Recorder::store),
            live: recorder.map(|r| Arc::clone(&r.recording().live)),
            token: (!config.admin_token.is_empty()).then(|| config.admin_token.clone()),
            store_none: config.tracing.enabled && config.store == config::StoreKind::None,
        },
        exporter: recorder.and_then(Recorder::exporter),
    })
}
