//! Tool-call spans: the calls a completed response asked for (kept by the
//! stitching index until a request carries their results), and the span
//! each becomes: `completed` when its result arrives, `cancelled` when the
//! index expires or evicts it, or at shutdown.
//!
//! Each tool call is written once (ARCHITECTURE.md, invariant 4). Nothing
//! here awaits; the spans go to the queue like any other.

use crate::record::providers::ResponseFacts;
use crate::record::recording::{capture_text, Recording};
use crate::record::span::{self, Span, SpanStatus};
use crate::record::stitch::PendingCall;

/// The tool calls `r` asked for (those with an id), waiting for their
/// results as children of the LLM span `s`.
pub(crate) fn pending_calls(s: &Span, r: &ResponseFacts) -> Vec<PendingCall> {
    r.tool_calls
        .iter()
        .filter(|c| !c.id.is_empty())
        .map(|c| PendingCall {
            call_id: c.id.clone(),
            name: c.name.clone(),
            arguments: c.arguments.clone(),
            trace_id: s.trace_id.clone(),
            parent_span_id: s.span_id.clone(),
            conversation_id: s.conversation_id.clone(),
            session_id: s.session_id.clone(),
            user_id: s.user_id.clone(),
            api_key_hash: s.api_key_hash.clone(),
            provider: s.provider.clone(),
            route: s.route.clone(),
            asked_at_us: s.end_time_us,
        })
        .collect()
}

/// The span of a tool call: from the response that asked for it to the
/// request that carried its result (`completed`), or to the moment the
/// index gave up waiting (`cancelled`).
pub(crate) fn tool_span(
    rec: &Recording,
    call: &PendingCall,
    end_us: i64,
    status: SpanStatus,
    result: Option<&str>,
) -> Span {
    let mut s = Span::start(call.asked_at_us);
    s.trace_id.clone_from(&call.trace_id);
    s.parent_span_id = Some(call.parent_span_id.clone());
    s.name = format!("execute_tool {}", call.name);
    s.operation_type = "tool_call".into();
    s.provider.clone_from(&call.provider);
    s.route.clone_from(&call.route);
    s.status = status;
    if status == SpanStatus::Cancelled {
        s.error_type = Some("tool_result_missing".into());
        s.error_message = Some("no request carried this tool call's result in time".into());
    }
    s.end_time_us = end_us.max(call.asked_at_us);
    s.duration_ms = (s.end_time_us - s.start_time_us) as f64 / 1000.0;
    s.conversation_id.clone_from(&call.conversation_id);
    s.session_id.clone_from(&call.session_id);
    s.user_id.clone_from(&call.user_id);
    s.api_key_hash.clone_from(&call.api_key_hash);
    s.properties = Some(
        serde_json::json!({"gen_ai.tool.call.id": call.call_id, "gen_ai.tool.name": call.name})
            .to_string(),
    );
    if rec.capture_bodies {
        let cap = |t: &str| capture_text(t.as_bytes(), t.len(), rec.max_capture_bytes);
        s.request_body = Some(cap(&call.arguments));
        s.response_body = result.map(cap);
    }
    s
}

/// Writes the tool calls whose results never came as `cancelled`: those
/// past the stitching TTL, or all of them (`all`, at shutdown).
pub fn expire_tool_calls(rec: &Recording, all: bool) -> usize {
    let Some(index) = &rec.index else { return 0 };
    let calls = if all {
        index.drain_calls()
    } else {
        index.sweep()
    };
    let now = span::now_us();
    let n = calls.len();
    for call in calls {
        rec.sink
            .send(tool_span(rec, &call, now, SpanStatus::Cancelled, None));
    }
    n
}
