//! The recorder: what an exchange was. Observers read the copies the path's
//! tees hand over, the providers' parsers turn them into span fields, tokens
//! are counted and priced, turns are stitched into traces, and the finished
//! span is handed to the outputs' queue.
//!
//! Pure work and bounded memory: nothing here awaits, and nothing here
//! touches the store.
//!
//! An exchange, file by file: `recording` (the settings every exchange
//! shares), `exchange` (the span from start to finish), `request` and
//! `response` (the two observers), `status` (how an end becomes a status),
//! `tool_calls` (tool-call spans), `finisher` (finishing under load, in
//! order).

pub(crate) mod context;
pub mod decode;
pub(crate) mod exchange;
pub(crate) mod finisher;
pub(crate) mod live;
pub mod pricing;
pub mod providers;
pub(crate) mod recording;
pub(crate) mod request;
pub(crate) mod response;
pub mod span;
pub(crate) mod sse;
pub(crate) mod status;
pub mod stitch;
pub mod tokens;
pub(crate) mod tool_calls;
