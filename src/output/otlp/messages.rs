//! Message content for OTLP: a span's captured bodies →
//! `gen_ai.input.messages` / `gen_ai.output.messages` JSON in the GenAI
//! semantic conventions' parts format.
//!
//! Reads nothing itself: the span's endpoint (from its operation type and
//! path) picks the format, and `record::providers::messages` reads the
//! bodies with the providers' own parsers (one reading per format, shared
//! with the admin UI). Best-effort: a body it cannot read gives no
//! attribute. Never sees headers, so never a key.

use crate::record::providers::messages;
use crate::record::providers::Endpoint;
use crate::record::span::Span;

/// `gen_ai.input.messages`, from the request body.
pub fn input(s: &Span) -> Option<String> {
    let endpoint = Endpoint::of_stored(&s.operation_type, &s.path)?;
    messages::input(endpoint, s.request_body.as_deref()?).semconv()
}

/// `gen_ai.output.messages`, from the response body (JSON or SSE).
pub fn output(s: &Span) -> Option<String> {
    let endpoint = Endpoint::of_stored(&s.operation_type, &s.path)?;
    messages::output(endpoint, s.response_body.as_deref()?).semconv()
}
