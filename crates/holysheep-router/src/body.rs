//! [`RouterBody`]: the answer of the deployment that served, or the router's own error body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use holysheep_client::ResponseBody;
use holysheep_core::BoxError;
use holysheep_pool_limit::PermitBody;
use http_body::{Body, Frame, SizeHint};

/// The body of a routed response: the upstream's answer as it streams (still holding its pool
/// slot until it ends), with the first frame in front when the router read it already to see
/// the first byte come (see [time-to-first-byte failover](crate#time-to-first-byte-failover)),
/// or a body the router made itself.
#[derive(Debug)]
pub struct RouterBody {
    first: Option<Frame<Bytes>>,
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Upstream(PermitBody<ResponseBody>),
    Full(Option<Bytes>),
}

impl RouterBody {
    pub(crate) fn upstream(body: PermitBody<ResponseBody>, first: Option<Frame<Bytes>>) -> Self {
        Self {
            first,
            inner: Inner::Upstream(body),
        }
    }

    pub(crate) fn full(bytes: Bytes) -> Self {
        Self {
            first: None,
            inner: Inner::Full((!bytes.is_empty()).then_some(bytes)),
        }
    }
}

impl Body for RouterBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(frame) = this.first.take() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match &mut this.inner {
            Inner::Upstream(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map_err(Into::into))),
            Inner::Full(bytes) => Poll::Ready(bytes.take().map(|bytes| Ok(Frame::data(bytes)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none()
            && match &self.inner {
                Inner::Upstream(body) => body.is_end_stream(),
                Inner::Full(bytes) => bytes.is_none(),
            }
    }

    fn size_hint(&self) -> SizeHint {
        let first = self
            .first
            .as_ref()
            .and_then(Frame::data_ref)
            .map_or(0, |data| data.len() as u64);
        let inner = match &self.inner {
            Inner::Upstream(body) => body.size_hint(),
            Inner::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        };
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + first);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + first);
        }
        hint
    }
}
