//! The `Recorder`: the recording side of a running llmtap, wired from the
//! record and output wings. It owns what exists only with tracing on: the
//! store (unless `store = "none"`), the span queue and its batcher, the
//! OTLP exporter (when configured), the shared `Recording` (with its
//! finisher) and the tool-call expiry ticker; and its part of the shutdown
//! order (see `run`): settle the finisher → expire tool calls → close the
//! queue → the batcher drains → the exporter flushes (capped) → the store
//! closes.
//!
//! Start-up only and shutdown only: nothing here is on the request path,
//! and nothing here decides what a span says.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::config::{self, Config};
use crate::output::metrics::Metrics;
use crate::output::sink::{self, SpanSink};
use crate::output::store::{Store, StoreUrl};
use crate::output::{otlp, redact};
use crate::record::finisher::Finisher;
use crate::record::recording::Recording;
use crate::record::{context, live, pricing, span, stitch, tool_calls};
use crate::RunError;

/// The recorder of a running llmtap (tracing on).
pub(crate) struct Recorder {
    store: Option<Store>,
    sink: SpanSink,
    /// Writes the queue to the store (`None` with `store = "none"`).
    batcher: JoinHandle<()>,
    exporter: Option<(otlp::Exporter, JoinHandle<()>)>,
    recording: Arc<Recording>,
}

impl Recorder {
    /// Opens the store, starts the queue, its batcher, the OTLP exporter,
    /// the finisher and the expiry ticker; `None` with tracing off (then
    /// no tee, parser or store exists).
    pub(crate) async fn start(
        config: &Config,
        metrics: &Arc<Metrics>,
    ) -> Result<Option<Recorder>, RunError> {
        if !config.tracing.enabled {
            return Ok(None);
        }
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
        let mut exporter = None;
        if config.otlp.enabled() {
            let settings = otlp::Settings::new(&config.otlp, &config.routes)?;
            exporter = Some(otlp::spawn(&config.otlp, settings));
        }
        let salt = api_key_salt(config, store.as_ref()).await?;
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
            Some(Arc::clone(metrics)),
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
        let recording = Arc::new(recording(config, sink.clone(), salt, prices)?);
        if recording.index.is_some() {
            spawn_expiry(Arc::clone(&recording));
        }
        Ok(Some(Recorder {
            store,
            sink,
            batcher,
            exporter,
            recording,
        }))
    }

    /// The store (`None` with `store = "none"`).
    pub(crate) fn store(&self) -> Option<Store> {
        self.store.clone()
    }

    /// The span queue.
    pub(crate) fn sink(&self) -> SpanSink {
        self.sink.clone()
    }

    /// The OTLP exporter, when configured.
    pub(crate) fn exporter(&self) -> Option<otlp::Exporter> {
        self.exporter.as_ref().map(|(e, _)| e.clone())
    }

    /// What every exchange shares.
    pub(crate) fn recording(&self) -> &Arc<Recording> {
        &self.recording
    }

    /// The recorder's part of the shutdown order (steps 3 to 6 of `run`'s),
    /// once the proxy has drained: exchanges that ended are finished, tool
    /// calls still waiting are written `cancelled`, the queue closes, the
    /// batcher writes what is queued, the exporter flushes (up to `flush`),
    /// the store closes.
    pub(crate) async fn shutdown(self, flush: Duration) {
        // Exchanges that ended are finished before anything is closed.
        if let Some(f) = &self.recording.finisher {
            f.settle(flush).await;
        }
        // Tool calls still waiting for a result will never get one now.
        tool_calls::expire_tool_calls(&self.recording, true);
        self.sink.close();
        let _ = self.batcher.await;
        let stats = self.sink.stats();
        tracing::info!(
            written = stats.written.load(Ordering::Relaxed),
            dropped = stats.dropped.load(Ordering::Relaxed),
            "Span writer drained"
        );
        if let Some((exporter, task)) = self.exporter {
            flush_exporter(exporter, task, flush).await;
        }
        if let Some(store) = self.store {
            store.close().await;
        }
    }
}

/// The salt of API key hashes: configured, else the store's, else (no
/// store to keep one in) a random one for this process (hashes are stable
/// until restart).
async fn api_key_salt(config: &Config, store: Option<&Store>) -> Result<String, RunError> {
    Ok(if !config.tracing.api_key_salt.is_empty() {
        config.tracing.api_key_salt.clone()
    } else if let Some(store) = store {
        store.salt().await?
    } else {
        span::new_trace_id()
    })
}

/// The settings every exchange shares, with the finisher started.
fn recording(
    config: &Config,
    sink: SpanSink,
    api_key_salt: String,
    prices: pricing::PriceTable,
) -> Result<Recording, RunError> {
    Ok(Recording {
        sink,
        capture_bodies: config.tracing.capture_bodies,
        max_capture_bytes: config.tracing.max_capture_bytes,
        max_parse_bytes: config.tracing.max_parse_bytes,
        api_key_salt,
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
        finisher: Some(Finisher::start().map_err(RunError::Finisher)?),
    })
}

/// Tool calls whose results never come are written `cancelled`, checked
/// every second until the queue closes.
fn spawn_expiry(rec: Arc<Recording>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if rec.sink.is_closed() {
                return;
            }
            tool_calls::expire_tool_calls(&rec, false);
        }
    });
}

/// Closes the exporter and waits up to `flush` for it to send what is
/// queued; past that what is left is counted lost.
async fn flush_exporter(exporter: otlp::Exporter, mut task: JoinHandle<()>, flush: Duration) {
    exporter.close();
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
        exported = s.exported.load(Ordering::Relaxed),
        failed = s.failed.load(Ordering::Relaxed),
        dropped = s.dropped.load(Ordering::Relaxed),
        "OTLP exporter flushed"
    );
}
