//! The outputs: where finished spans go. The bounded queue type every stage
//! uses, the recorder's queue behind `SpanSink`, the batcher (a fan-out that
//! redacts each span once and shares it, then the store's writer for SQLite
//! or PostgreSQL), redaction, the OTLP exporter and the Prometheus metrics.
//!
//! Runs in the background: nothing here is ever awaited by the path.

pub(crate) mod batcher;
pub(crate) mod fanout;
pub(crate) mod metrics;
pub mod otlp;
pub mod queue;
pub mod redact;
pub mod sink;
pub mod store;
