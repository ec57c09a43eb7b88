//! The outputs: where finished spans go. The bounded queue the recorder
//! pushes into, redaction, the store's batcher (SQLite or PostgreSQL), the
//! OTLP exporter and the Prometheus metrics.
//!
//! Runs in the background: nothing here is ever awaited by the path.

pub mod metrics;
pub mod otlp;
pub mod redact;
pub mod sink;
pub mod store;
