//! The response future of [`SemanticCache`](crate::SemanticCache).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use holysheep_core::BoxError;
use http::{Request, Response};
use http_body_util::Full;
use pin_project_lite::pin_project;
use tower::Service;
use tower::util::Oneshot;

use crate::body::ResponseBody;

pin_project! {
    /// The response future of [`SemanticCache`](crate::SemanticCache).
    ///
    /// A request the semantic cache leaves alone is a plain call of the inner service; one it
    /// looks up is one boxed `async` block (embedding, index, exact store, upstream), whose hand
    /// written state machine would cost more clarity than the allocation it saves.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<Full<Bytes>>>,
    {
        #[pin]
        kind: Kind<S, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, B>
    where
        S: Service<Request<Full<Bytes>>>,
    {
        Pass { #[pin] call: Oneshot<S, Request<Full<Bytes>>> },
        Serve { future: BoxFuture<'static, Result<Response<ResponseBody<B>>, BoxError>> },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<Full<Bytes>>>,
{
    pub(crate) fn pass(call: Oneshot<S, Request<Full<Bytes>>>) -> Self {
        Self {
            kind: Kind::Pass { call },
        }
    }

    pub(crate) fn serve(
        future: BoxFuture<'static, Result<Response<ResponseBody<B>>, BoxError>>,
    ) -> Self {
        Self {
            kind: Kind::Serve { future },
        }
    }
}

impl<S, B> Future for ResponseFuture<S, B>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Pass { call } => {
                let res = ready!(call.poll(cx)).map_err(Into::into)?;
                Poll::Ready(Ok(res.map(|body| ResponseBody::inner(body, None))))
            }
            KindProj::Serve { future } => future.as_mut().poll(cx),
        }
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<Full<Bytes>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
