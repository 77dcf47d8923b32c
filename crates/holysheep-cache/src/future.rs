//! The response future of [`Cache`](crate::Cache).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;
use holysheep_core::BoxError;
use http::Response;
use pin_project_lite::pin_project;

use crate::body::ResponseBody;

pin_project! {
    /// The response future of [`Cache`](crate::Cache).
    ///
    /// It boxes one `async` block: the request path has up to five await points (body, store
    /// lookup, coalescing wait, upstream call, JSON read-ahead) and a hand-written state machine
    /// for them would cost far more clarity than the one allocation it saves.
    pub struct ResponseFuture {
        #[pin]
        inner: BoxFuture<'static, Result<Response<ResponseBody>, BoxError>>,
    }
}

impl ResponseFuture {
    pub(crate) fn new(inner: BoxFuture<'static, Result<Response<ResponseBody>, BoxError>>) -> Self {
        Self { inner }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<ResponseBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
