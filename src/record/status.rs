//! A finished exchange's status: `completed`, `failed` or `cancelled`, with
//! the error type and message that say why.
//!
//! One pure function, [`classify`], from the facts of how the exchange
//! ended (the tee's end, llmtap's own error, the HTTP status, the error
//! the provider's body reported, a stream cut short, whether shutdown's
//! drain window was over) to the span's three status fields. It reads no
//! clock, no setting and no atomic: the caller gathers the facts.

use crate::path::error::IDLE_TIMEOUT;
use crate::path::tee::End;
use crate::record::providers::ApiError;
use crate::record::span::SpanStatus;

/// How an exchange ended, as far as its status goes.
pub(crate) struct Ending<'a> {
    /// How the response body (or the exchange) ended.
    pub end: &'a End,
    /// llmtap's own error `(code, message)`: it answered for the upstream.
    pub proxy_error: Option<&'a (String, String)>,
    /// Shutdown's drain window was over when the exchange was cut (only
    /// read for a cancelled end).
    pub drain_over: bool,
    /// The HTTP status the client got, if any.
    pub http_status: Option<u16>,
    /// The error the provider's body reported, if it parsed.
    pub api_error: Option<&'a ApiError>,
    /// A complete stream with no finish reason and no `[DONE]`.
    pub stream_incomplete: bool,
}

/// A span's status fields.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Classified {
    pub status: SpanStatus,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
}

impl Classified {
    fn failed(error_type: impl Into<String>, error_message: impl Into<String>) -> Classified {
        Classified {
            status: SpanStatus::Failed,
            error_type: Some(error_type.into()),
            error_message: Some(error_message.into()),
        }
    }

    fn cancelled(error_type: &str, error_message: &str) -> Classified {
        Classified {
            status: SpanStatus::Cancelled,
            ..Classified::failed(error_type, error_message)
        }
    }
}

/// The status of an exchange that ended as `e` says. In order: a cut
/// (shutdown, else the client), a broken upstream stream, llmtap's own
/// error, an HTTP error status (≥ 400, typed and worded by the provider's
/// error body when it has one), an error body under a 2xx, a stream cut
/// short, else completed.
pub(crate) fn classify(e: &Ending<'_>) -> Classified {
    match (e.end, e.proxy_error) {
        (End::Cancelled, _) if e.drain_over => Classified::cancelled(
            "shutdown",
            "llmtap shut down before the response ended (shutdown.drain_timeout_ms passed)",
        ),
        (End::Cancelled, _) => Classified::cancelled(
            "client_disconnected",
            "client closed the connection before the response ended",
        ),
        (End::Error(msg), _) => Classified::failed(
            if msg.starts_with(IDLE_TIMEOUT) {
                IDLE_TIMEOUT
            } else {
                "upstream_stream_error"
            },
            format!("upstream stream ended abnormally: {msg}"),
        ),
        (End::Complete, Some((code, message))) => Classified::failed(code, message),
        (End::Complete, None) => completed(e),
    }
}

/// The status of a response that ended whole.
fn completed(e: &Ending<'_>) -> Classified {
    if let Some(code) = e.http_status.filter(|&c| c >= 400) {
        Classified::failed(
            e.api_error
                .and_then(|a| a.kind.clone())
                .unwrap_or_else(|| code.to_string()),
            e.api_error
                .map(|a| a.message.clone())
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| format!("upstream answered HTTP {code}")),
        )
    } else if let Some(a) = e.api_error {
        Classified::failed(
            a.kind.clone().unwrap_or_else(|| "api_error".into()),
            a.message.clone(),
        )
    } else if e.stream_incomplete {
        Classified::failed(
            "stream_incomplete",
            "stream ended without a finish reason or [DONE]",
        )
    } else {
        Classified {
            status: SpanStatus::Completed,
            error_type: None,
            error_message: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(kind: Option<&str>, message: &str) -> ApiError {
        ApiError {
            kind: kind.map(str::to_string),
            message: message.to_string(),
        }
    }

    /// name, end, proxy error, drain over, http status, api error, stream
    /// incomplete => status, error type, error message.
    type Row<'a> = (
        &'a str,
        &'a End,
        Option<&'a (String, String)>,
        bool,
        Option<u16>,
        Option<&'a ApiError>,
        bool,
        SpanStatus,
        Option<&'a str>,
        Option<&'a str>,
    );

    /// Every row of the classification, as it was when the match lived in
    /// the exchange's finish.
    #[test]
    fn every_ending_has_its_status() {
        use SpanStatus::{Cancelled, Completed, Failed};
        let proxy = (
            "upstream_timeout".to_string(),
            "no answer in 30s".to_string(),
        );
        let rate = api(Some("rate_limit_error"), "slow down");
        let untyped = api(None, "boom");
        let mute = api(Some("invalid_request_error"), "");
        let overloaded = api(Some("overloaded_error"), "Overloaded");
        let bare = api(None, "");
        let idle = End::Error("idle_timeout: no frame for 60s".into());
        let reset = End::Error("connection reset".into());
        let shutdown =
            "llmtap shut down before the response ended (shutdown.drain_timeout_ms passed)";
        let gone = "client closed the connection before the response ended";
        let incomplete = "stream ended without a finish reason or [DONE]";
        #[rustfmt::skip]
        let rows: &[Row<'_>] = &[
            // name, end, proxy error, drain over, http, api error, incomplete => status, type, message
            ("cut after the drain window", &End::Cancelled, None, true, Some(200), None, false, Cancelled, Some("shutdown"), Some(shutdown)),
            ("cut after the drain window, whatever else", &End::Cancelled, Some(&proxy), true, Some(500), Some(&rate), true, Cancelled, Some("shutdown"), Some(shutdown)),
            ("client gone", &End::Cancelled, None, false, Some(200), None, false, Cancelled, Some("client_disconnected"), Some(gone)),
            ("client gone, no response", &End::Cancelled, None, false, None, None, false, Cancelled, Some("client_disconnected"), Some(gone)),
            ("client gone beats a proxy error", &End::Cancelled, Some(&proxy), false, Some(502), None, false, Cancelled, Some("client_disconnected"), Some(gone)),
            ("client gone beats an HTTP error", &End::Cancelled, None, false, Some(500), Some(&rate), true, Cancelled, Some("client_disconnected"), Some(gone)),
            ("idle timeout", &idle, None, false, Some(200), None, false, Failed, Some("idle_timeout"), Some("upstream stream ended abnormally: idle_timeout: no frame for 60s")),
            ("stream error", &reset, None, false, Some(200), None, false, Failed, Some("upstream_stream_error"), Some("upstream stream ended abnormally: connection reset")),
            ("stream error, drain over", &reset, None, true, Some(200), None, false, Failed, Some("upstream_stream_error"), Some("upstream stream ended abnormally: connection reset")),
            ("stream error beats the rest", &reset, Some(&proxy), false, Some(500), Some(&rate), true, Failed, Some("upstream_stream_error"), Some("upstream stream ended abnormally: connection reset")),
            ("proxy error", &End::Complete, Some(&proxy), false, Some(504), None, false, Failed, Some("upstream_timeout"), Some("no answer in 30s")),
            ("proxy error beats the body", &End::Complete, Some(&proxy), true, Some(502), Some(&rate), true, Failed, Some("upstream_timeout"), Some("no answer in 30s")),
            ("HTTP error with a typed body", &End::Complete, None, false, Some(429), Some(&rate), false, Failed, Some("rate_limit_error"), Some("slow down")),
            ("HTTP error with an untyped body", &End::Complete, None, false, Some(500), Some(&untyped), false, Failed, Some("500"), Some("boom")),
            ("HTTP error with an empty message", &End::Complete, None, false, Some(400), Some(&mute), false, Failed, Some("invalid_request_error"), Some("upstream answered HTTP 400")),
            ("HTTP error with neither", &End::Complete, None, false, Some(400), Some(&bare), false, Failed, Some("400"), Some("upstream answered HTTP 400")),
            ("HTTP error, no body", &End::Complete, None, false, Some(503), None, false, Failed, Some("503"), Some("upstream answered HTTP 503")),
            ("HTTP error beats an incomplete stream", &End::Complete, None, false, Some(404), None, true, Failed, Some("404"), Some("upstream answered HTTP 404")),
            ("HTTP error, drain over", &End::Complete, None, true, Some(503), None, false, Failed, Some("503"), Some("upstream answered HTTP 503")),
            ("error body under a 2xx", &End::Complete, None, false, Some(200), Some(&overloaded), false, Failed, Some("overloaded_error"), Some("Overloaded")),
            ("untyped error body under a 2xx", &End::Complete, None, false, Some(200), Some(&bare), false, Failed, Some("api_error"), Some("")),
            ("error body beats an incomplete stream", &End::Complete, None, false, Some(200), Some(&untyped), true, Failed, Some("api_error"), Some("boom")),
            ("error body under a 3xx", &End::Complete, None, false, Some(399), Some(&rate), false, Failed, Some("rate_limit_error"), Some("slow down")),
            ("incomplete stream", &End::Complete, None, false, Some(200), None, true, Failed, Some("stream_incomplete"), Some(incomplete)),
            ("incomplete stream, no status", &End::Complete, None, false, None, None, true, Failed, Some("stream_incomplete"), Some(incomplete)),
            ("completed", &End::Complete, None, false, Some(200), None, false, Completed, None, None),
            ("completed, drain over", &End::Complete, None, true, Some(200), None, false, Completed, None, None),
            ("completed 3xx", &End::Complete, None, false, Some(304), None, false, Completed, None, None),
            ("completed 399", &End::Complete, None, false, Some(399), None, false, Completed, None, None),
            ("completed, no status", &End::Complete, None, false, None, None, false, Completed, None, None),
        ];
        for &(
            name,
            end,
            proxy_error,
            drain_over,
            http_status,
            api_error,
            stream_incomplete,
            status,
            ty,
            msg,
        ) in rows
        {
            let got = classify(&Ending {
                end,
                proxy_error,
                drain_over,
                http_status,
                api_error,
                stream_incomplete,
            });
            let want = Classified {
                status,
                error_type: ty.map(str::to_string),
                error_message: msg.map(str::to_string),
            };
            assert_eq!(got, want, "{name}");
        }
    }
}
