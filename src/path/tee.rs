//! Tee: a body wrapper that passes every frame through unchanged, shows a
//! copy to an observer, and fires end-of-stream exactly once.
//!
//! Frames, `size_hint` and `is_end_stream` pass through untouched; the
//! observer sees `&Bytes` (a cheap reference-counted view, no copy). The end
//! is one of complete (the inner body finished, or reports it has), error
//! (the inner body failed; the error still reaches the consumer), or
//! cancelled (the tee was dropped before the end: the consumer hung up).
//! Nothing the observer does can fail or delay the stream beyond its own
//! synchronous work.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// How a body ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// All frames were passed on.
    Complete,
    /// The inner body failed; the message is its error.
    Error(String),
    /// The tee was dropped before the end.
    Cancelled,
}

/// Sees a copy of a body as it streams.
pub trait Observer: Send + 'static {
    /// A data frame, just before it is passed on.
    fn on_data(&mut self, data: &Bytes);
    /// Trailers, if the body has them.
    fn on_trailers(&mut self, _trailers: &HeaderMap) {}
    /// Called exactly once.
    fn on_end(self, end: End);
}

pin_project! {
    /// See the module docs.
    pub struct Tee<B: Body, O: Observer> {
        #[pin]
        inner: B,
        observer: Option<O>,
    }

    impl<B: Body, O: Observer> PinnedDrop for Tee<B, O> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(observer) = this.observer.take() {
                // A body that reports its end may never be polled again (or
                // at all, when empty): that is completion, not cancellation.
                let end = if this.inner.is_end_stream() { End::Complete } else { End::Cancelled };
                observer.on_end(end);
            }
        }
    }
}

impl<B: Body, O: Observer> Tee<B, O> {
    pub fn new(inner: B, observer: O) -> Self {
        Tee {
            inner,
            observer: Some(observer),
        }
    }
}

impl<B, O> Body for Tee<B, O>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
    O: Observer,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Pending => {}
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(observer) = this.observer.as_mut() {
                    if let Some(data) = frame.data_ref() {
                        observer.on_data(data);
                    } else if let Some(trailers) = frame.trailers_ref() {
                        observer.on_trailers(trailers);
                    }
                }
                if this.inner.is_end_stream() {
                    if let Some(observer) = this.observer.take() {
                        observer.on_end(End::Complete);
                    }
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(observer) = this.observer.take() {
                    observer.on_end(End::Error(e.to_string()));
                }
            }
            Poll::Ready(None) => {
                if let Some(observer) = this.observer.take() {
                    observer.on_end(End::Complete);
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};
    use std::sync::{Arc, Mutex};

    #[derive(Default, Clone)]
    struct Log(Arc<Mutex<(Vec<u8>, Vec<End>)>>);

    impl Observer for Log {
        fn on_data(&mut self, data: &Bytes) {
            self.0.lock().unwrap().0.extend_from_slice(data);
        }
        fn on_end(self, end: End) {
            self.0.lock().unwrap().1.push(end);
        }
    }

    #[tokio::test]
    async fn passes_bytes_and_completes_once() {
        let log = Log::default();
        let body = Tee::new(Full::new(Bytes::from_static(b"hello")), log.clone());
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(&out[..], b"hello");
        let l = log.0.lock().unwrap();
        assert_eq!(&l.0[..], b"hello");
        assert_eq!(l.1, vec![End::Complete]);
    }

    #[tokio::test]
    async fn empty_body_dropped_unpolled_is_complete() {
        let log = Log::default();
        drop(Tee::new(Full::new(Bytes::new()), log.clone()));
        assert_eq!(log.0.lock().unwrap().1, vec![End::Complete]);
    }

    #[tokio::test]
    async fn error_passes_through_and_drop_after_is_silent() {
        let log = Log::default();
        let frames: Vec<Result<Frame<Bytes>, String>> = vec![
            Ok(Frame::data(Bytes::from_static(b"a"))),
            Err("cut".to_string()),
        ];
        let mut body = Tee::new(StreamBody::new(futures_iter(frames)), log.clone());
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), Bytes::from_static(b"a"));
        assert!(body.frame().await.unwrap().is_err());
        drop(body);
        assert_eq!(log.0.lock().unwrap().1, vec![End::Error("cut".into())]);
    }

    #[tokio::test]
    async fn dropped_mid_stream_is_cancelled() {
        let log = Log::default();
        let frames: Vec<Result<Frame<Bytes>, String>> = vec![
            Ok(Frame::data(Bytes::from_static(b"a"))),
            Ok(Frame::data(Bytes::from_static(b"b"))),
        ];
        let mut body = Tee::new(StreamBody::new(futures_iter(frames)), log.clone());
        let _ = body.frame().await;
        drop(body);
        assert_eq!(log.0.lock().unwrap().1, vec![End::Cancelled]);
    }

    /// A minimal `Stream` over a vector, to avoid a futures dependency.
    fn futures_iter<T: Unpin>(v: Vec<T>) -> IterStream<T> {
        IterStream(v.into_iter())
    }
    struct IterStream<T>(std::vec::IntoIter<T>);
    impl<T: Unpin> futures_core::Stream for IterStream<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<T>> {
            Poll::Ready(self.0.next())
        }
    }
}
