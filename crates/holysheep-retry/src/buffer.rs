//! [`BufferRequestLayer`]: reads a request body into memory so the layers below can replay it.
//!
//! [`RetryLayer`](crate::RetryLayer) sends a fresh copy of the request on every attempt, so it
//! needs a `Clone` body. Bodies that stream (tonic's `tonic::body::Body`, hyper's `Incoming`,
//! axum's `Body`) are not; this layer, placed above the retry layer, collects them once into
//! a [`Full<Bytes>`], up to a bound. See the [crate docs](crate#grpc-and-tonic) for the tonic
//! recipe.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use holysheep_core::BoxError;
use http::{Request, request::Parts};
use http_body::Body;
use http_body_util::combinators::Collect;
use http_body_util::{BodyExt, Full, Limited};
use pin_project_lite::pin_project;
use tower::Service;
use tower_layer::Layer;

/// Applies [`BufferRequest`]: collects every request body into a [`Full<Bytes>`] of at most
/// `limit` bytes before the inner service is called.
///
/// Meant for small bodies (an LLM prompt, a unary gRPC message): the whole body is held in
/// memory, and the call waits for its last byte. A body longer than the bound fails the call
/// with [`LengthLimitError`](crate::error::LengthLimitError) in the error's `source()` chain
/// (its [`ErrorClass`](holysheep_core::error::ErrorClass) is `Other`), and a body that fails
/// to arrive fails it with the body's own error. Request trailers are dropped.
#[derive(Debug, Clone, Copy)]
pub struct BufferRequestLayer {
    limit: usize,
}

impl BufferRequestLayer {
    /// Buffers request bodies of at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for BufferRequestLayer {
    type Service = BufferRequest<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BufferRequest::new(inner, self.limit)
    }
}

/// Collects each request body into a [`Full<Bytes>`] before calling the inner service. See
/// [`BufferRequestLayer`].
///
/// Readiness is the inner service's: the service that was polled ready goes with the call and
/// is called once the body is in (a clone stays behind for the next call), so a slot it
/// reserved in `poll_ready` is held while the body is read.
#[derive(Debug, Clone)]
pub struct BufferRequest<S> {
    inner: S,
    limit: usize,
}

impl<S> BufferRequest<S> {
    /// Wraps `inner`, buffering request bodies of at most `limit` bytes.
    pub fn new(inner: S, limit: usize) -> Self {
        Self { inner, limit }
    }

    /// A [`BufferRequestLayer`] with this bound.
    pub fn layer(limit: usize) -> BufferRequestLayer {
        BufferRequestLayer::new(limit)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for BufferRequest<S>
where
    S: Service<Request<Full<Bytes>>> + Clone,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = req.into_parts();
        ResponseFuture {
            state: State::Collecting {
                collect: Limited::new(body, self.limit).collect(),
                parts: Some(parts),
                service: Some(ready),
            },
        }
    }
}

pin_project! {
    /// The response future of [`BufferRequest`]: reads the body, then calls the inner service.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<Full<Bytes>>>,
        B: Body,
        B::Error: Into<BoxError>,
    {
        #[pin]
        state: State<S, B, S::Future>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B, F>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        Collecting {
            #[pin]
            collect: Collect<Limited<B>>,
            parts: Option<Parts>,
            service: Option<S>,
        },
        Calling {
            #[pin]
            future: F,
        },
    }
}

impl<S, B> Future for ResponseFuture<S, B>
where
    S: Service<Request<Full<Bytes>>>,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Collecting {
                    collect,
                    parts,
                    service,
                } => {
                    let body = ready!(collect.poll(cx))?.to_bytes();
                    let parts = parts.take().expect("polled after completion");
                    let mut service = service.take().expect("polled after completion");
                    let future = service.call(Request::from_parts(parts, Full::new(body)));
                    state.set(State::Calling { future });
                }
                StateProj::Calling { future } => {
                    return future.poll(cx).map_err(Into::into);
                }
            }
        }
    }
}

impl<S, B> std::fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<Full<Bytes>>>,
    B: Body,
    B::Error: Into<BoxError>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::stream;
    use http::Response;
    use http_body::Frame;
    use http_body_util::StreamBody;
    use tower::{ServiceExt, service_fn};

    use crate::error::LengthLimitError;

    type Chunks = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BoxError>>>>;

    fn chunks(parts: &[&'static str]) -> Chunks {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(stream::iter(frames))
    }

    fn echo(
        calls: Arc<AtomicUsize>,
    ) -> impl Service<
        Request<Full<Bytes>>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<Full<Bytes>>, Infallible>>,
    > + Clone {
        service_fn(move |req: Request<Full<Bytes>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let method = req.method().clone();
            let body = req.into_body();
            async move {
                let mut res = Response::new(body);
                res.headers_mut()
                    .insert("x-method", method.as_str().parse().unwrap());
                Ok(res)
            }
        })
    }

    #[tokio::test]
    async fn a_streamed_body_arrives_whole_with_its_head() {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = BufferRequestLayer::new(16).layer(echo(calls.clone()));
        let req = Request::put("/x")
            .body(chunks(&["hel", "lo ", "world"]))
            .unwrap();
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.headers()["x-method"], "PUT");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "hello world");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_past_the_bound_fails_without_a_call() {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = BufferRequest::new(echo(calls.clone()), 10);
        let req = Request::new(chunks(&["hello ", "world"]));
        let err = svc.oneshot(req).await.unwrap_err();
        assert!(err.is::<LengthLimitError>(), "{err}");
        assert_eq!(calls.load(Ordering::SeqCst), 0);

        // Exactly at the bound is fine.
        let svc = BufferRequest::new(echo(calls.clone()), 11);
        svc.oneshot(Request::new(chunks(&["hello ", "world"])))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_failing_body_fails_the_call_with_its_error() {
        let calls = Arc::new(AtomicUsize::new(0));
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"par"))),
            Err(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into()),
        ];
        let req = Request::new(StreamBody::new(stream::iter(frames)));
        let err = BufferRequest::new(echo(calls.clone()), 1024)
            .oneshot(req)
            .await
            .unwrap_err();
        assert_eq!(
            holysheep_core::error::ErrorClass::of(&*err),
            holysheep_core::error::ErrorClass::Connect
        );
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }
}
