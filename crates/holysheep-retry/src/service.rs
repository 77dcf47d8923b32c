use std::sync::Arc;
use std::task::{Context, Poll};

use holysheep_core::BoxError;
use http::{Request, Response};
use tokio::time::Instant;
use tower::Service;
use tower::retry::budget::Budget;
use tower::util::MapErr;

use crate::classify::{Classify, DefaultClassify};
use crate::future::ResponseFuture;
use crate::layer::RetryLayer;
use crate::policy::{Config, RetryPolicy, Shared};

/// The error conversion applied to the inner service, so the policy can classify any error as
/// a `dyn Error`.
pub(crate) type IntoBoxError<E> = fn(E) -> BoxError;

/// Retries transient failures of an HTTP service. See [`RetryLayer`] for the behaviour and
/// the defaults.
///
/// The request body must be `Clone` (LLM request bodies are small buffered JSON, e.g. `Bytes`),
/// because every attempt sends a fresh copy.
#[derive(Debug)]
pub struct Retry<S, C = DefaultClassify> {
    inner: S,
    shared: Arc<Shared<C>>,
}

impl<S: Clone, C> Clone for Retry<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> Retry<S> {
    /// Wraps `inner` with the default configuration (see [`RetryLayer`]) and a budget of its own.
    pub fn new(inner: S) -> Self {
        use tower_layer::Layer;
        RetryLayer::new().layer(inner)
    }

    /// A [`RetryLayer`] with the default configuration.
    pub fn layer() -> RetryLayer {
        RetryLayer::new()
    }
}

impl<S, C> Retry<S, C> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared<C>>) -> Self {
        Self { inner, shared }
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

    fn config(&self) -> &Config {
        &self.shared.config
    }
}

impl<S, C, B, ResB> Service<Request<B>> for Retry<S, C>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    C: Classify,
    B: Clone,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = ResponseFuture<S, C, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let deadline = Instant::now() + self.config().deadline;
        // Every call earns the budget its share of retries; only retries spend it.
        self.shared.budget.deposit();
        let policy = RetryPolicy::new(Arc::clone(&self.shared), deadline);
        // The ready service handles the first attempt; a clone stays behind for the next call.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        let mut retry = tower::retry::Retry::new(
            policy,
            MapErr::new(ready, Into::into as IntoBoxError<S::Error>),
        );
        ResponseFuture::new(retry.call(req), deadline, self.config().deadline)
    }
}
