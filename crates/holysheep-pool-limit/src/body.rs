//! The response body that holds the request's slots until the stream ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::state::Permits;

pin_project! {
    /// A response body that keeps its request's pool slots until the body ends, fails, or is
    /// dropped, so a long Server-Sent-Events stream counts as in flight for as long as it runs.
    #[derive(Debug)]
    pub struct PermitBody<B> {
        #[pin]
        inner: B,
        permits: Option<Permits>,
    }
}

impl<B: Body> PermitBody<B> {
    pub(crate) fn new(inner: B, permits: Permits) -> Self {
        // An empty answer (e.g. 204) is over already; the caller may never poll it.
        let permits = (!inner.is_end_stream()).then_some(permits);
        Self { inner, permits }
    }
}

impl<B> PermitBody<B> {
    /// The wrapped body. Dropping the result of [`into_inner`](Self::into_inner) is what frees
    /// the slots; reading through `get_ref` does not.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// Unwraps the body, freeing the slots at once.
    pub fn into_inner(self) -> B {
        self.inner
    }

    /// Whether the body still holds its slots.
    pub fn holds_permit(&self) -> bool {
        self.permits.is_some()
    }
}

impl<B: Body> Body for PermitBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = std::task::ready!(this.inner.as_mut().poll_frame(cx));
        let finished = match &frame {
            Some(Ok(_)) => this.inner.is_end_stream(),
            // The end of the stream, or a failure that ends it.
            Some(Err(_)) | None => true,
        };
        if finished {
            this.permits.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
