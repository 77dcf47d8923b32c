use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::record::Tracker;

pin_project! {
    /// Response body of [`Metrics`](crate::Metrics): passes every frame through unchanged while
    /// it times the first and the last byte and reads `model` and `usage` from OpenAI JSON and
    /// SSE answers.
    ///
    /// The request is finished when the body ends (`outcome="completed"`), fails
    /// (`outcome="error"`) or is dropped before its end (`outcome="cancelled"`), exactly once
    /// in every case: the record it carries ends itself on drop if nothing ended it before.
    pub struct RecordingBody<B> {
        #[pin]
        inner: B,
        tracker: Option<Tracker>,
    }
}

impl<B: Body> RecordingBody<B> {
    pub(crate) fn wrap(res: Response<B>, tracker: Option<Tracker>) -> Response<Self> {
        let (parts, inner) = res.into_parts();
        let tracker = tracker.and_then(|mut tracker| {
            tracker.on_response(&parts, inner.size_hint().lower());
            // A body that is over before it starts may never be polled (hyper checks first).
            if inner.is_end_stream() {
                tracker.complete();
                None
            } else {
                Some(tracker)
            }
        });
        Response::from_parts(parts, Self { inner, tracker })
    }
}

impl<B> RecordingBody<B> {
    /// The inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// The inner body, mutably. Frames read through it are not seen by the metrics.
    pub fn get_mut(&mut self) -> &mut B {
        &mut self.inner
    }
}

impl<B> Body for RecordingBody<B>
where
    B: Body,
    B::Error: 'static,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let Some(tracker) = this.tracker.as_mut() else {
            return this.inner.poll_frame(cx);
        };
        let frame = {
            let _enter = tracker.span.enter();
            ready!(this.inner.as_mut().poll_frame(cx))
        };
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    tracker.on_data(data);
                }
                // After the last frame of a sized body, hyper stops polling without a `None`.
                if this.inner.is_end_stream()
                    && let Some(tracker) = this.tracker.take()
                {
                    tracker.complete();
                }
            }
            Some(Err(error)) => {
                if let Some(tracker) = this.tracker.take() {
                    tracker.fail(error);
                }
            }
            None => {
                if let Some(tracker) = this.tracker.take() {
                    tracker.complete();
                }
            }
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

impl<B: std::fmt::Debug> std::fmt::Debug for RecordingBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingBody")
            .field("inner", &self.inner)
            .field("recording", &self.tracker.is_some())
            .finish()
    }
}
