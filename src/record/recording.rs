//! The recording settings every exchange shares (`Recording`): the span
//! queue, what is captured and parsed, the API key salt, prices, the
//! stitching index, the live registry and the finisher.
//!
//! Built once by the recorder at start-up and read-only after that (but
//! for `drain_over`, set once at shutdown). Never holds per-exchange state,
//! and never awaits.

use std::sync::Arc;

use http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::output::sink::SpanSink;
use crate::record::context::ContextStats;
use crate::record::finisher::Finisher;
use crate::record::live::Live;
use crate::record::pricing::Pricing;
use crate::record::span;
use crate::record::stitch::Index;

/// Recording settings shared by every exchange.
pub struct Recording {
    pub sink: SpanSink,
    pub capture_bodies: bool,
    pub max_capture_bytes: usize,
    pub max_parse_bytes: usize,
    pub api_key_salt: String,
    pub pricing: Pricing,
    /// See `exact_usage`.
    pub exact_stream_usage: bool,
    /// Header values dropped for not being UTF-8.
    pub context_stats: ContextStats,
    /// The stitching index (`None` when stitching is off).
    pub index: Option<Index>,
    /// Exchanges in flight, for `/api/live`.
    pub live: Arc<Live>,
    /// Set at shutdown when the drain window ends with exchanges still open:
    /// those dropped from then on were cut by llmtap, not by their client.
    pub drain_over: std::sync::atomic::AtomicBool,
    /// Finishes exchanges off the request path (`None`: where they end).
    pub finisher: Option<Finisher>,
}

/// Decoded bytes past which an observer stops decompressing (bomb cap).
pub(crate) const MAX_DECODED_BYTES: usize = 256 << 20;

impl Recording {
    /// Short salted hash of the request's API key, if it carries one
    /// (`Authorization`, `x-api-key` or `api-key`). 16 hex digits.
    pub fn api_key_hash(&self, headers: &HeaderMap) -> Option<String> {
        let key = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim())
            .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
            .or_else(|| headers.get("api-key").and_then(|v| v.to_str().ok()))
            .filter(|k| !k.is_empty())?;
        let mut h = Sha256::new();
        h.update(self.api_key_salt.as_bytes());
        h.update([0u8]);
        h.update(key.as_bytes());
        Some(span::hex(&h.finalize()[..8]))
    }

    /// True when finishes are queued or running on the finisher (see
    /// [`Finisher::busy`]); false without a finisher.
    pub(crate) fn finisher_busy(&self) -> bool {
        self.finisher.as_ref().is_some_and(Finisher::busy)
    }
}

/// The first `max` bytes of a captured body as text, marked when cut
/// (`total` is how many bytes the body had).
pub(crate) fn capture_text(buf: &[u8], total: usize, max: usize) -> String {
    let cut = buf.len().min(max);
    let mut s = String::from_utf8_lossy(&buf[..cut]).into_owned();
    if total > cut {
        s.push_str(&format!("…[truncated {} bytes]", total - cut));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::pricing::PriceTable;

    #[test]
    fn api_key_hash_is_short_salted_and_stable() {
        let rec = Recording {
            sink: SpanSink::new(10, 1 << 20),
            capture_bodies: true,
            max_capture_bytes: 10,
            max_parse_bytes: 100,
            api_key_salt: "salt".into(),
            pricing: Pricing::new(PriceTable::default()),
            exact_stream_usage: false,
            context_stats: Default::default(),
            index: None,
            live: Default::default(),
            drain_over: Default::default(),
            finisher: None,
        };
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer sk-secret".parse().unwrap());
        let a = rec.api_key_hash(&h).unwrap();
        assert_eq!(a.len(), 16);
        assert!(!a.contains("secret"));
        let mut h2 = HeaderMap::new();
        h2.insert("x-api-key", "sk-secret".parse().unwrap());
        assert_eq!(rec.api_key_hash(&h2).unwrap(), a);
        let other = Recording {
            api_key_salt: "pepper".into(),
            ..rec
        };
        assert_ne!(other.api_key_hash(&h).unwrap(), a);
        assert!(other.api_key_hash(&HeaderMap::new()).is_none());
    }

    #[test]
    fn capture_marks_truncation() {
        assert_eq!(capture_text(b"hello", 5, 10), "hello");
        assert_eq!(capture_text(b"hello", 9, 3), "hel…[truncated 6 bytes]");
    }
}
