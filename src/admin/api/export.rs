//! The streamed export of `GET /api/export`: a task pages through the
//! matching spans ([`EXPORT_PAGE`] per store round trip) and sends them, as
//! a JSON array or NDJSON lines in chunks of about 64 KiB, through a
//! bounded channel to the response body ([`ExportBody`]).
//!
//! Never builds an export in memory; never outlives a client that went
//! away (a closed channel ends the task).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::mpsc;

use super::ApiError;
use crate::output::store::{SpanFilter, SpanKey, Store};
use crate::record::span::Span;

/// Spans read per store round trip by an export.
pub const EXPORT_PAGE: usize = 500;
/// Chunks (about 64 KiB each) an export may have waiting for the client.
pub(super) const EXPORT_CHANNEL: usize = 8;
const EXPORT_CHUNK: usize = 64 * 1024;

/// The streamed export body: frames from the export task's channel.
pub struct ExportBody {
    pub(super) rx: mpsc::Receiver<Result<Bytes, ApiError>>,
}

impl http_body::Body for ExportBody {
    type Data = Bytes;
    type Error = ApiError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ApiError>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|r| r.map(Frame::data)))
    }
}

/// Pages through the matching spans (keyset on start time and span id)
/// and sends them as JSON array elements or NDJSON lines. Ends early when
/// the client goes away (the channel closes); a store error ends the body
/// with an error.
pub(super) async fn export_task(
    store: Store,
    filter: SpanFilter,
    ndjson: bool,
    bodies: bool,
    tx: mpsc::Sender<Result<Bytes, ApiError>>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(EXPORT_CHUNK);
    if !ndjson {
        buf.push(b'[');
    }
    let mut first = true;
    let mut after: Option<SpanKey> = None;
    loop {
        let page = match store
            .spans_page(&filter, after.as_ref(), EXPORT_PAGE, bodies)
            .await
        {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(%error, "Export failed");
                let _ = tx.send(Err(ApiError::Store(error))).await;
                return;
            }
        };
        let full = page.len() == EXPORT_PAGE;
        after = page.last().map(|s: &Span| SpanKey {
            start_time_us: s.start_time_us,
            span_id: s.span_id.clone(),
        });
        for span in &page {
            if !ndjson && !std::mem::take(&mut first) {
                buf.push(b',');
            }
            // Writing plain data to a Vec cannot fail (non-finite floats
            // become null).
            let _ = serde_json::to_writer(&mut buf, span);
            if ndjson {
                buf.push(b'\n');
            }
            if buf.len() >= EXPORT_CHUNK {
                let chunk = Bytes::from(std::mem::replace(
                    &mut buf,
                    Vec::with_capacity(EXPORT_CHUNK),
                ));
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
            }
        }
        if !full {
            break;
        }
    }
    if !ndjson {
        buf.push(b']');
    }
    if !buf.is_empty() {
        let _ = tx.send(Ok(Bytes::from(buf))).await;
    }
}
