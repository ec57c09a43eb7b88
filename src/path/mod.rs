//! The path: the bytes between the client and the provider. Accepting
//! connections, choosing a route, forwarding to the upstream, and the body
//! wrapper that hands a copy of every frame to the recorder.
//!
//! Owns the client's bytes: it must never change, delay or fail them for the
//! recorder's sake, and it never calls the store (the recorder's queue is the
//! only way out of this wing, and it never waits).

pub(crate) mod error;
pub mod exact_usage;
pub(crate) mod listener;
pub(crate) mod proxy;
pub(crate) mod router;
pub mod tee;
pub(crate) mod upstream;
