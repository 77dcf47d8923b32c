//! The response future of [`Retry`](crate::Retry).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use holysheep_core::BoxError;
use holysheep_core::error::DeadlineExceeded;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::Service;
use tower::retry::Policy;
use tower::util::MapErr;

use crate::classify::Classify;
use crate::policy::RetryPolicy;
use crate::service::IntoBoxError;

type Attempts<S, C, B> = tower::retry::future::ResponseFuture<
    RetryPolicy<C>,
    MapErr<S, IntoBoxError<<S as Service<Request<B>>>::Error>>,
    Request<B>,
>;

pin_project! {
    /// The response future of [`Retry`](crate::Retry): tower's retry future, raced against the
    /// overall deadline.
    pub struct ResponseFuture<S, C, B>
    where
        S: Service<Request<B>>,
        RetryPolicy<C>: Policy<Request<B>, S::Response, BoxError>,
    {
        #[pin]
        attempts: Attempts<S, C, B>,
        #[pin]
        deadline: Sleep,
        timeout: Duration,
    }
}

impl<S, C, B> ResponseFuture<S, C, B>
where
    S: Service<Request<B>>,
    RetryPolicy<C>: Policy<Request<B>, S::Response, BoxError>,
{
    pub(crate) fn new(attempts: Attempts<S, C, B>, deadline: Instant, timeout: Duration) -> Self {
        Self {
            attempts,
            deadline: tokio::time::sleep_until(deadline),
            timeout,
        }
    }
}

impl<S, C, B, ResB> Future for ResponseFuture<S, C, B>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    C: Classify,
    B: Clone,
{
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // An answer that arrives together with the deadline still counts.
        if let Poll::Ready(result) = this.attempts.poll(cx) {
            return Poll::Ready(result);
        }
        match this.deadline.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(DeadlineExceeded::new(*this.timeout).into())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S, C, B> std::fmt::Debug for ResponseFuture<S, C, B>
where
    S: Service<Request<B>>,
    RetryPolicy<C>: Policy<Request<B>, S::Response, BoxError>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
