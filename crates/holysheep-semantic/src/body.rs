//! The response body of [`SemanticCache`](crate::SemanticCache).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use holysheep_core::BoxError;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::index::{BucketId, Quantized};
use crate::service::Shared;

pin_project! {
    /// The body of every response [`SemanticCache`](crate::SemanticCache) returns: a semantic
    /// hit rendered by the exact cache, or the inner service's answer passed through. A passed
    /// answer to a question the cache looked up records the question's vector when it ends
    /// well, never before: a cut or failed answer is not remembered.
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = Proj]
    enum Kind<B> {
        Hit { #[pin] body: holysheep_cache::ResponseBody },
        Inner { #[pin] body: B, record: Option<Record> },
    }
}

/// What to record when a passed answer ends well.
pub(crate) struct Record {
    pub(crate) shared: Arc<Shared>,
    pub(crate) bucket: BucketId,
    pub(crate) key: Arc<str>,
    pub(crate) vector: Quantized,
    pub(crate) expires_at: u64,
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn hit(body: holysheep_cache::ResponseBody) -> Self {
        Self {
            kind: Kind::Hit { body },
        }
    }

    pub(crate) fn inner(body: B, record: Option<Record>) -> Self {
        Self {
            kind: Kind::Inner { body, record },
        }
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Hit { .. } => f.write_str("ResponseBody::Hit"),
            Kind::Inner { record, .. } => f
                .debug_struct("ResponseBody::Inner")
                .field("record", record)
                .finish_non_exhaustive(),
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            Proj::Hit { body } => body.poll_frame(cx),
            Proj::Inner { body, record } => match ready!(body.poll_frame(cx)) {
                Some(Ok(frame)) => Poll::Ready(Some(Ok(
                    frame.map_data(|mut d| d.copy_to_bytes(d.remaining()))
                ))),
                Some(Err(error)) => {
                    *record = None;
                    Poll::Ready(Some(Err(error.into())))
                }
                None => {
                    if let Some(record) = record.take() {
                        record.shared.record(
                            record.bucket,
                            record.key,
                            record.vector,
                            record.expires_at,
                        );
                    }
                    Poll::Ready(None)
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            // A recording body must be polled to its end, so the end is seen.
            Kind::Inner { body, record } => record.is_none() && body.is_end_stream(),
            Kind::Hit { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Hit { body } => body.size_hint(),
            Kind::Inner { body, .. } => body.size_hint(),
        }
    }
}
