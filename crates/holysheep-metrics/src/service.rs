use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use tower::Service;

use crate::body::RecordingBody;
use crate::future::ResponseFuture;
use crate::layer::MetricsLayer;
use crate::record::{Shared, Tracker};

/// Records requests, latency, tokens, cost and cache savings of the inner service.
///
/// Built by [`MetricsLayer`]; see the [crate docs](crate) for what is recorded and when.
#[derive(Clone)]
pub struct Metrics<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Metrics<S> {
    /// Wraps `inner` with the default configuration ([`MetricsLayer::new`]).
    pub fn new(inner: S) -> Self {
        tower_layer::Layer::layer(&MetricsLayer::new(), inner)
    }

    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// A [`MetricsLayer`] with the default configuration.
    pub fn layer() -> MetricsLayer {
        MetricsLayer::new()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for Metrics<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("inner", &self.inner)
            .field("config", &self.shared)
            .finish()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Metrics<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: 'static,
    ResBody: Body,
    ResBody::Error: 'static,
{
    type Response = Response<RecordingBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let tracker = Tracker::start(self.shared.clone(), &mut req);
        let inner = {
            let _enter = tracker.span.enter();
            self.inner.call(req)
        };
        ResponseFuture::new(inner, tracker)
    }
}
