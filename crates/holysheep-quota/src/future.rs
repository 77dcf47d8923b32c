//! The response future of [`Quota`](crate::Quota).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use holysheep_core::BoxError;
use http::Response;

use crate::body::ResponseBody;

type Boxed<B> = Pin<Box<dyn Future<Output = Result<Response<ResponseBody<B>>, BoxError>> + Send>>;

/// The response future of [`Quota`](crate::Quota).
///
/// Boxed: a call reads the request body, awaits the backend's decision (a Redis round trip
/// with that backend) and then the inner service; written as an `async fn`, those three awaits
/// read as what they are, where a hand-made state machine would triple the code for one
/// allocation per request.
pub struct ResponseFuture<B> {
    inner: Boxed<B>,
}

impl<B> ResponseFuture<B> {
    pub(crate) fn new(inner: Boxed<B>) -> Self {
        Self { inner }
    }
}

impl<B> Future for ResponseFuture<B> {
    type Output = Result<Response<ResponseBody<B>>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<B> fmt::Debug for ResponseFuture<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
