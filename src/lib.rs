//! llmtap: a transparent reverse proxy that records every LLM call as a
//! span.
//!
//! The modules follow the data path (see ARCHITECTURE.md):
//! `listener` → `router` → `proxy` → `upstream`, with `tee` + `observe`
//! watching both bodies, `providers` / `sse` / `decode` / `tokens` reading
//! them, and `span` → `sink` → `store` (and `otlp`, the OpenTelemetry
//! exporter) recording the result in the background. `run` wires them
//! together.

pub mod admin;
pub mod config;
pub mod output;
pub mod path;
pub mod record;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::api;
use crate::config::Config;
use crate::output::sink::SpanSink;
use crate::output::store::{Store, StoreUrl};
use crate::output::{metrics, otlp, redact, sink, store};
use crate::path::{listener, proxy, router, upstream};
use crate::record::observe::Recording;
use crate::record::{context, live, observe, pricing, span, stitch};

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
    let mut recorder = None;
    let mut exporter = None;
    if config.tracing.enabled {
        let use_store = config.store == config::StoreKind::Database;
        if !use_store && !config.otlp.enabled() {
            return Err(RunError::NothingToRecordTo);
        }
        let store = if use_store {
            let url = StoreUrl::parse(&config.database_url)?;
            Some(Store::open(&url).await?)
        } else {
            None
        };
        // Secrets are removed before a span is stored or exported.
        let redactor = redact::Redactor::new(&config.tracing.redact_patterns)?;
        if config.otlp.enabled() {
            let settings = otlp::Settings::new(&config.otlp, &config.routes)?;
            exporter = Some(otlp::spawn(&config.otlp, settings));
        }
        let salt = if !config.tracing.api_key_salt.is_empty() {
            config.tracing.api_key_salt.clone()
        } else if let Some(store) = &store {
            store.salt().await?
        } else {
            // No store to keep a salt in: a random one for this process
            // (hashes are stable until restart).
            span::new_trace_id()
        };
        if config.tracing.max_rows_per_statement.is_some() {
            tracing::warn!(
                "tracing.max_rows_per_statement is no longer used and is ignored \
                 (SQLite inserts one prepared row at a time, PostgreSQL uses COPY); remove it"
            );
        }
        let prices = pricing::PriceTable::load(config.pricing_file.as_deref())?;
        tracing::info!(
            models = prices.len(),
            checked = prices.checked(),
            "Prices loaded"
        );
        let sink = SpanSink::with_outputs(
            config.tracing.batch_size,
            config.tracing.queue_max_bytes,
            Some(Arc::clone(&metrics)),
            sink::Outputs {
                store: store.is_some(),
                exporter: exporter.as_ref().map(|(e, _)| e.clone()),
                sample_rate: config.tracing.sample_rate,
            },
        );
        sink.set_redactor(redactor);
        // Redacts each span once and hands it to the store and the exporter.
        let batcher = tokio::spawn(sink::run_batcher(
            sink.clone(),
            store.clone(),
            Duration::from_millis(config.tracing.batch_interval_ms),
            Duration::from_millis(config.tracing.min_flush_gap_ms),
            Duration::from_millis(config.shutdown.flush_timeout_ms),
        ));
        let recording = Arc::new(Recording {
            sink: sink.clone(),
            capture_bodies: config.tracing.capture_bodies,
            max_capture_bytes: config.tracing.max_capture_bytes,
            max_parse_bytes: config.tracing.max_parse_bytes,
            api_key_salt: salt,
            pricing: pricing::Pricing::new(prices),
            exact_stream_usage: config.tracing.exact_stream_usage,
            context_stats: context::ContextStats::default(),
            index: config.stitching.enabled.then(|| {
                stitch::Index::new(
                    Duration::from_secs(config.stitching.ttl_secs),
                    config.stitching.max_entries,
                    config.stitching.max_pending_calls,
                )
            }),
            live: Arc::new(live::Live::new(live::DEFAULT_CAP)),
            drain_over: std::sync::atomic::AtomicBool::new(false),
            finisher: Some(observe::Finisher::start().map_err(RunError::Finisher)?),
        });
        if recording.index.is_some() {
            // Tool calls whose results never come are written `cancelled`.
            let rec = Arc::clone(&recording);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    if rec.sink.is_closed() {
                        return;
                    }
                    observe::expire_tool_calls(&rec, false);
                }
            });
        }
        recorder = Some((store, sink, batcher, recording));
    }

    let proxy = Arc::new(proxy::Proxy::new(
        router,
        upstream,
        recorder.as_ref().map(|r| Arc::clone(&r.3)),
        Arc::clone(&metrics),
        config.limits.max_body_bytes,
    ));

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let admin_task = listeners.admin.map(|listener| {
        let admin = Arc::new(admin::Admin {
            store: recorder.as_ref().and_then(|r| r.0.clone()),
            sink: recorder.as_ref().map(|r| r.1.clone()),
            queue_max_bytes: config.tracing.queue_max_bytes,
            metrics: Arc::clone(&metrics),
            recording: recorder.as_ref().map(|r| Arc::clone(&r.3)),
            api: api::Api {
                store: recorder.as_ref().and_then(|r| r.0.clone()),
                live: recorder.as_ref().map(|r| Arc::clone(&r.3.live)),
                token: (!config.admin_token.is_empty()).then(|| config.admin_token.clone()),
                store_none: config.tracing.enabled && config.store == config::StoreKind::None,
            },
            exporter: exporter.as_ref().map(|(e, _)| e.clone()),
        });
        let rx = stop_rx.clone();
        tokio::spawn(listener::serve(
            listener,
            move |req| Arc::clone(&admin).handle(req),
            stopped(rx),
            Duration::from_millis(1000),
            listener::ServeOptions {
                limits: config.limits.clone(),
                traffic: None,
            },
            || {},
        ))
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
    // 3. close the span queue: nothing more can be recorded;
    // 4. the batcher redacts what is queued and hands it on, the store's
    //    writer writes it (up to `flush_timeout_ms` while the store fails),
    //    and both exit (deferred finishing work is waited for, as long);
    // 5. the OTLP exporter sends what is queued, retrying until
    //    `flush_timeout_ms` after its close; past that what is left is
    //    counted failed;
    // 6. close the store and the admin listener; return.
    let cut = recorder.as_ref().map(|r| Arc::clone(&r.3));
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
            if let Some(rec) = cut {
                rec.drain_over
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
        },
    )
    .await;
    if let Some((store, sink, batcher, recording)) = recorder {
        let flush = Duration::from_millis(config.shutdown.flush_timeout_ms);
        // Exchanges that ended are finished before anything is closed.
        if let Some(f) = &recording.finisher {
            f.settle(flush).await;
        }
        // Tool calls still waiting for a result will never get one now.
        observe::expire_tool_calls(&recording, true);
        sink.close();
        let _ = batcher.await;
        let stats = sink.stats();
        tracing::info!(
            written = stats.written.load(std::sync::atomic::Ordering::Relaxed),
            dropped = stats.dropped.load(std::sync::atomic::Ordering::Relaxed),
            "Span writer drained"
        );
        if let Some((exporter, task)) = exporter {
            exporter.close();
            let mut task = task;
            if tokio::time::timeout(flush, &mut task).await.is_err() {
                task.abort();
                let lost = exporter.abandon();
                tracing::error!(
                    lost,
                    "OTLP collector still failing at the shutdown deadline; spans lost"
                );
            }
            let s = exporter.stats();
            tracing::info!(
                exported = s.exported.load(std::sync::atomic::Ordering::Relaxed),
                failed = s.failed.load(std::sync::atomic::Ordering::Relaxed),
                dropped = s.dropped.load(std::sync::atomic::Ordering::Relaxed),
                "OTLP exporter flushed"
            );
        }
        if let Some(store) = store {
            store.close().await;
        }
    }
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    Ok(())
}
