//! The mock's response bodies: whole JSON, error bodies, SSE streams that
//! can be delayed, cut or gzipped frame by frame ([`MockBody`],
//! [`SseStream`]), and JSON string escaping ([`js`]).

use super::*;

/// A JSON string literal for `s`.
pub(super) fn js(s: &str) -> String {
    // Serializing a `&str` cannot fail; the fallback is never used.
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

/// A complete JSON response with an explicit `content-length`.
pub(super) fn json_response(status: StatusCode, body: Bytes) -> Response<MockBody> {
    let len = body.len() as u64;
    let mut resp = Response::new(MockBody::full(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    resp
}

/// An OpenAI-style error response.
pub(super) fn error_response(
    status: StatusCode,
    message: &str,
    kind: &str,
    code: &str,
) -> Response<MockBody> {
    let body = format!(
        "{{\"error\":{{\"message\":{},\"type\":{},\"param\":null,\"code\":{}}}}}",
        js(message),
        js(kind),
        js(code)
    );
    json_response(status, Bytes::from(body))
}

/// A `200 text/event-stream` response over `stream`.
pub(super) fn sse_response(stream: SseStream) -> Response<MockBody> {
    let mut resp = Response::new(MockBody::stream(stream));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// Gzips a response body: whole-body for complete bodies (with a new
/// `content-length`), per-frame sync-flushed for streamed bodies.
pub(super) fn gzip_response(resp: Response<MockBody>) -> Response<MockBody> {
    let (mut parts, body) = resp.into_parts();
    let body = match body.kind {
        Kind::Full(bytes) => {
            let plain = bytes.unwrap_or_default();
            let mut enc = GzEncoder::new(Vec::new(), Compression::default());
            // Writing into a Vec cannot fail; on the impossible error keep
            // the plain body.
            match enc.write_all(&plain).and_then(|()| enc.finish()) {
                Ok(gz) => {
                    parts
                        .headers
                        .insert(CONTENT_LENGTH, HeaderValue::from(gz.len() as u64));
                    parts
                        .headers
                        .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                    MockBody::full(Bytes::from(gz))
                }
                Err(_) => MockBody::full(plain),
            }
        }
        Kind::Stream(mut stream) => {
            stream.gzip = Some(GzEncoder::new(Vec::new(), Compression::default()));
            parts.headers.remove(CONTENT_LENGTH);
            parts
                .headers
                .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            MockBody {
                kind: Kind::Stream(stream),
            }
        }
    };
    Response::from_parts(parts, body)
}

/// The response body type of the mock: either a complete buffer or a
/// frame-by-frame stream.
pub struct MockBody {
    pub(super) kind: Kind,
}

/// The two shapes of [`MockBody`].
pub(super) enum Kind {
    /// A complete body, yielded as one frame (`None` once yielded).
    Full(Option<Bytes>),
    /// A streamed body, one frame per SSE event.
    Stream(Box<SseStream>),
}

impl MockBody {
    pub(super) fn full(bytes: Bytes) -> MockBody {
        MockBody {
            kind: Kind::Full(Some(bytes)),
        }
    }

    pub(super) fn stream(stream: SseStream) -> MockBody {
        MockBody {
            kind: Kind::Stream(Box::new(stream)),
        }
    }
}

/// A streamed body: yields `frames` one at a time, optionally sleeping
/// before each frame after the first, optionally failing after `cut_after`
/// frames, optionally gzip-encoding with a sync flush per frame.
pub(super) struct SseStream {
    pub(super) state: Arc<MockState>,
    pub(super) frames: VecDeque<Bytes>,
    pub(super) yielded: usize,
    pub(super) delay: Option<Duration>,
    pub(super) sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Whether the wait before the next frame has already elapsed.
    pub(super) waited: bool,
    pub(super) cut_after: Option<usize>,
    pub(super) gzip: Option<GzEncoder<Vec<u8>>>,
    /// Whether this stream updates the `MockState` stream counters.
    pub(super) track: bool,
    /// Set once the last frame (or the cut error) has been yielded.
    pub(super) finished: bool,
}

impl SseStream {
    pub(super) fn new(
        state: Arc<MockState>,
        frames: Vec<Bytes>,
        delay: Option<Duration>,
        cut_after: Option<usize>,
        track: bool,
    ) -> SseStream {
        SseStream {
            state,
            frames: frames.into(),
            yielded: 0,
            delay,
            sleep: None,
            waited: false,
            cut_after,
            gzip: None,
            track,
            finished: false,
        }
    }

    /// Gzip-encodes one frame (sync flush), finishing the gzip stream when
    /// `last` is set. Without gzip, returns the frame unchanged.
    pub(super) fn encode(&mut self, frame: Bytes, last: bool) -> std::io::Result<Bytes> {
        let Some(enc) = self.gzip.as_mut() else {
            return Ok(frame);
        };
        enc.write_all(&frame)?;
        if last {
            match self.gzip.take() {
                Some(enc) => enc.finish().map(Bytes::from),
                None => Ok(Bytes::new()),
            }
        } else {
            enc.flush()?;
            Ok(Bytes::from(std::mem::take(enc.get_mut())))
        }
    }

    /// Whether the body must fail instead of yielding the next frame.
    pub(super) fn cut_now(&self) -> bool {
        self.cut_after.is_some_and(|k| self.yielded >= k)
    }

    pub(super) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.finished {
            return Poll::Ready(None);
        }
        if !self.waited {
            // One sleep per position: the per-chunk delay (after the first
            // frame) plus, before a cut, a grace period so the server flushes
            // the frames already yielded before the body fails (hyper drops
            // unflushed output when a body errors).
            let mut wait = Duration::ZERO;
            if self.yielded > 0 {
                wait += self.delay.unwrap_or_default();
            }
            if self.cut_now() {
                wait += CUT_FLUSH_GRACE;
            }
            if !wait.is_zero() {
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(wait)));
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.sleep = None;
            }
            self.waited = true;
        }
        if self.cut_now() {
            self.finished = true;
            return Poll::Ready(Some(Err(std::io::Error::other("mock: stream cut"))));
        }
        let Some(frame) = self.frames.pop_front() else {
            self.finished = true;
            return Poll::Ready(None);
        };
        let last = self.frames.is_empty();
        let data = match self.encode(frame, last) {
            Ok(data) => data,
            Err(e) => {
                self.finished = true;
                return Poll::Ready(Some(Err(e)));
            }
        };
        self.yielded += 1;
        self.waited = false;
        if last {
            self.finished = true;
            if self.track {
                *lock(&self.state.last_chunk_sent_at) = Some(Instant::now());
                self.state.streams_completed.fetch_add(1, Ordering::SeqCst);
            }
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }
}

impl Drop for SseStream {
    fn drop(&mut self) {
        if self.track && !self.finished {
            self.state.streams_dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Stream(stream) => stream.poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Stream(stream) => stream.finished,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Stream(_) => SizeHint::default(),
        }
    }
}
