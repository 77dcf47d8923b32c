use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;

use crate::body::RecordingBody;
use crate::record::Tracker;

pin_project! {
    /// Response future of [`Metrics`](crate::Metrics).
    ///
    /// Dropping it before the answer arrives counts the request as
    /// `status="none", outcome="cancelled"`.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        // Taken when the answer arrives; moves into the body.
        tracker: Option<Tracker>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, tracker: Tracker) -> Self {
        Self {
            inner,
            tracker: Some(tracker),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: 'static,
    B: Body,
{
    type Output = Result<Response<RecordingBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            // Logs and spans of the layers below belong to this request.
            let _enter = this.tracker.as_ref().map(|t| t.span.enter());
            ready!(this.inner.poll(cx))
        };
        let tracker = this.tracker.take();
        Poll::Ready(match result {
            Ok(res) => Ok(RecordingBody::wrap(res, tracker)),
            Err(error) => {
                if let Some(tracker) = tracker {
                    tracker.fail(&error);
                }
                Err(error)
            }
        })
    }
}

impl<F> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("pending", &self.tracker.is_some())
            .finish_non_exhaustive()
    }
}
