//! The response body: hyper's stream with a read timeout between frames.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::Error;

pin_project! {
    /// The body of a response from [`HolySheepClient`](crate::HolySheepClient).
    ///
    /// Streams the upstream's body frame by frame: each chunk is handed on as soon as it
    /// arrives, nothing is buffered here, so Server-Sent Events reach the caller live.
    ///
    /// The read timeout ([`Builder::read_timeout`](crate::Builder::read_timeout), 50 s by
    /// default) bounds how long the body waits for the next frame once the caller has asked
    /// for it; it restarts with every frame. Time the caller spends not polling does not count.
    /// When it passes, the body yields an [`Error`] with
    /// [`is_timeout`](Error::is_timeout) and [`is_body`](Error::is_body) true and then ends.
    ///
    /// The error type is [`crate::Error`]: downcast a `BoxError` to it, or walk its
    /// `source()` chain to the [`hyper::Error`] of a broken stream.
    pub struct ResponseBody {
        #[pin]
        inner: Incoming,
        // Armed when a poll finds no frame ready; cleared when a frame arrives. Boxed so the
        // body is `Unpin` (callers can use `body.frame().await` directly) and allocated only
        // once the body first has to wait.
        stall: Option<Pin<Box<Sleep>>>,
        read_timeout: Duration,
        armed: bool,
        failed: bool,
    }
}

impl ResponseBody {
    pub(crate) fn new(inner: Incoming, read_timeout: Duration) -> Self {
        Self {
            inner,
            stall: None,
            read_timeout,
            armed: false,
            failed: false,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            *this.armed = false;
            return Poll::Ready(match frame {
                Some(Ok(frame)) => Some(Ok(frame)),
                Some(Err(error)) => {
                    *this.failed = true;
                    Some(Err(Error::body(error)))
                }
                None => None,
            });
        }
        if !*this.armed {
            let deadline = Instant::now() + *this.read_timeout;
            match this.stall.as_mut() {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => *this.stall = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            *this.armed = true;
        }
        if let Some(sleep) = this.stall.as_mut() {
            ready!(sleep.as_mut().poll(cx));
            *this.failed = true;
            tracing::debug!(read_timeout = ?this.read_timeout, "upstream body stalled");
            return Poll::Ready(Some(Err(Error::read_timeout(*this.read_timeout))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.failed {
            SizeHint::with_exact(0)
        } else {
            self.inner.size_hint()
        }
    }
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("read_timeout", &self.read_timeout)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}
