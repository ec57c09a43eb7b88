//! The recorder: what an exchange was. Observers read the copies the path's
//! tees hand over, the providers' parsers turn them into span fields, tokens
//! are counted and priced, turns are stitched into traces, and the finished
//! span is handed to the outputs' queue.
//!
//! Pure work and bounded memory: nothing here awaits, and nothing here
//! touches the store.

pub mod context;
pub mod decode;
pub mod live;
pub mod observe;
pub mod pricing;
pub mod providers;
pub mod span;
pub mod sse;
pub mod stitch;
pub mod tokens;
