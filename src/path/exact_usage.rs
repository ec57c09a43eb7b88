//! Opt-in exact stream usage (`tracing.exact_stream_usage = true`).
//!
//! OpenAI-style streams report usage only when the request asks for it
//! (`stream_options.include_usage`). With this option llmtap asks on the
//! client's behalf, records the exact usage, and removes from the response
//! what the request change added — the usage-only chunk and the
//! `"usage":null` field of every other chunk — so the client receives the
//! bytes it would have received without the option. Off by default, because
//! the default never alters traffic.
//!
//! This module only rewrites: `inject` the request body, `StripUsage` the
//! response body. It must never alter a request it did not inject into, and
//! gives up (passing bytes through unchanged) on anything it does not
//! recognise.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// The request body with `stream_options.include_usage = true` added, when
/// it is a streamed request that does not already ask for usage. `None`
/// means: forward the original unchanged.
pub fn inject(body: &[u8]) -> Option<Bytes> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object()?;
    if obj.get("stream").and_then(|s| s.as_bool()) != Some(true) {
        return None;
    }
    if obj.contains_key("stream_options") {
        // Present (with include_usage or without): leave the client's choice.
        return None;
    }
    // Insert before the closing brace so every other byte stays as sent.
    let end = body.iter().rposition(|&b| b == b'}')?;
    let mut out = Vec::with_capacity(body.len() + 40);
    out.extend_from_slice(&body[..end]);
    let empty = obj.is_empty();
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(br#""stream_options":{"include_usage":true}"#);
    out.extend_from_slice(&body[end..]);
    Some(Bytes::from(out))
}

/// Largest event `StripUsage` holds while waiting for its end; past it,
/// stripping stops and bytes pass through unchanged.
const MAX_PENDING: usize = 1 << 20;

pin_project! {
    /// Removes the usage chunk and `,"usage":null` fields from an SSE body,
    /// event by event.
    pub struct StripUsage<B> {
        #[pin]
        inner: B,
        pending: BytesMut,
        gave_up: bool,
    }
}

impl<B> StripUsage<B> {
    pub fn new(inner: B) -> Self {
        StripUsage {
            inner,
            pending: BytesMut::new(),
            gave_up: false,
        }
    }
}

/// Rewrites one complete event (including its blank-line terminator).
fn rewrite_event(event: &[u8], out: &mut BytesMut) {
    let is_usage_chunk = memchr::memmem::find(event, br#""choices":[]"#).is_some()
        && memchr::memmem::find(event, br#""usage":{"#).is_some();
    if is_usage_chunk {
        return;
    }
    let needle = br#","usage":null"#;
    let mut rest = event;
    while let Some(i) = memchr::memmem::find(rest, needle) {
        out.extend_from_slice(&rest[..i]);
        rest = &rest[i + needle.len()..];
    }
    out.extend_from_slice(rest);
}

/// Splits off complete events (ending in a blank line, `\n\n` or
/// `\r\n\r\n`) from the front of `pending` and rewrites them into `out`.
fn drain_events(pending: &mut BytesMut, out: &mut BytesMut) {
    loop {
        let nn = memchr::memmem::find(pending, b"\n\n").map(|i| i + 2);
        let crlf = memchr::memmem::find(pending, b"\r\n\r\n").map(|i| i + 4);
        let end = match (nn, crlf) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(e) => e,
                None => return,
            },
        };
        let event = pending.split_to(end);
        rewrite_event(&event, out);
    }
}

impl<B> Body for StripUsage<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        loop {
            match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    if this.pending.is_empty() {
                        return Poll::Ready(None);
                    }
                    // An unterminated tail: pass it on as it is.
                    let tail = this.pending.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(tail))));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => {
                    let data = match frame.into_data() {
                        Ok(d) => d,
                        Err(frame) => return Poll::Ready(Some(Ok(frame))),
                    };
                    if *this.gave_up {
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    this.pending.extend_from_slice(&data);
                    let mut out = BytesMut::new();
                    drain_events(this.pending, &mut out);
                    if this.pending.len() > MAX_PENDING {
                        *this.gave_up = true;
                        out.extend_from_slice(&this.pending.split());
                    }
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                    }
                    // Nothing complete yet (or all of it removed): read on.
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream() && self.pending.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        // The length changes; only "unknown" is honest.
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};

    #[test]
    fn inject_only_where_it_applies() {
        let b = br#"{"model":"gpt-4o","stream":true,"messages":[]}"#;
        assert_eq!(
            &inject(b).unwrap()[..],
            br#"{"model":"gpt-4o","stream":true,"messages":[],"stream_options":{"include_usage":true}}"#
        );
        assert!(inject(br#"{"model":"gpt-4o","messages":[]}"#).is_none());
        assert!(inject(br#"{"stream":true,"stream_options":{"include_usage":false}}"#).is_none());
        assert!(inject(b"{not json").is_none());
        let spaced = b"{ \"stream\" : true }\n";
        assert_eq!(
            &inject(spaced).unwrap()[..],
            b"{ \"stream\" : true ,\"stream_options\":{\"include_usage\":true}}\n"
        );
    }

    #[tokio::test]
    async fn strips_usage_chunk_and_nulls_across_any_framing() {
        let with = concat!(
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
            "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n",
            "data: [DONE]\n\n"
        );
        let without = concat!(
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n"
        );
        for step in [1, 3, 17, with.len()] {
            let frames: Vec<Bytes> = with
                .as_bytes()
                .chunks(step)
                .map(Bytes::copy_from_slice)
                .collect();
            let body = http_body_util::StreamBody::new(FramesStream(frames.into_iter()));
            let out = StripUsage::new(body).collect().await.unwrap().to_bytes();
            assert_eq!(std::str::from_utf8(&out).unwrap(), without, "step {step}");
        }
        let plain = StripUsage::new(Full::new(Bytes::from_static(b"data: x\n\ntail")));
        assert_eq!(
            &plain.collect().await.unwrap().to_bytes()[..],
            b"data: x\n\ntail"
        );
    }

    struct FramesStream(std::vec::IntoIter<Bytes>);
    impl futures_core::Stream for FramesStream {
        type Item = Result<Frame<Bytes>, std::convert::Infallible>;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Ready(self.0.next().map(|b| Ok(Frame::data(b))))
        }
    }
}
