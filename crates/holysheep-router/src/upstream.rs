//! [`Upstream`]: one pooled client or a [`Router`], as one service type.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use holysheep_client::HolySheepClient;
use holysheep_core::BoxError;
use holysheep_pool_limit::PoolLimit;
use holysheep_pool_limit::future::ResponseFuture as PoolFuture;
use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tower::Service;

use crate::body::RouterBody;
use crate::router::{Router, RouterFuture};

/// The bottom of a stack that may route: one upstream behind its pool limit, as without a
/// router, or a [`Router`] over several deployments. Both answer with [`RouterBody`], so the
/// layers above have one type whichever it is (`holysheep::Stack` with the `router` feature
/// is built on it).
///
/// ```
/// use holysheep_client::HolySheepClient;
/// use holysheep_pool_limit::PoolLimitLayer;
/// use holysheep_router::Upstream;
/// use tower::Layer;
///
/// let client = HolySheepClient::builder().api_key("sk-test").build().unwrap();
/// let one = Upstream::from(PoolLimitLayer::default().layer(client));
/// assert!(one.router().is_none());
/// ```
#[derive(Debug, Clone)]
pub enum Upstream {
    /// One upstream behind its pool limit.
    One(PoolLimit<HolySheepClient>),
    /// Several deployments behind a router.
    Routed(Router),
}

impl Upstream {
    /// The router, when this routes.
    pub fn router(&self) -> Option<&Router> {
        match self {
            Self::One(_) => None,
            Self::Routed(router) => Some(router),
        }
    }
}

impl From<PoolLimit<HolySheepClient>> for Upstream {
    fn from(one: PoolLimit<HolySheepClient>) -> Self {
        Self::One(one)
    }
}

impl From<Router> for Upstream {
    fn from(router: Router) -> Self {
        Self::Routed(router)
    }
}

impl<B> Service<Request<B>> for Upstream
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<RouterBody>;
    type Error = BoxError;
    type Future = UpstreamFuture<B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self {
            Self::One(one) => Service::<Request<B>>::poll_ready(one, cx),
            Self::Routed(router) => Service::<Request<B>>::poll_ready(router, cx),
        }
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        UpstreamFuture {
            inner: match self {
                Self::One(one) => Either::One {
                    future: one.call(request),
                },
                Self::Routed(router) => Either::Routed {
                    future: router.call(request),
                },
            },
        }
    }
}

pin_project! {
    /// The future of an [`Upstream`] call.
    pub struct UpstreamFuture<B>
    where
        B: Body,
        B: Send,
        B: 'static,
        B::Error: Into<BoxError>,
    {
        #[pin]
        inner: Either<B>,
    }
}

pin_project! {
    #[project = EitherProj]
    enum Either<B>
    where
        B: Body,
        B: Send,
        B: 'static,
        B::Error: Into<BoxError>,
    {
        One { #[pin] future: PoolFuture<HolySheepClient, B> },
        Routed { future: RouterFuture },
    }
}

impl<B> Future for UpstreamFuture<B>
where
    B: Body + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<RouterBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().inner.project() {
            EitherProj::One { future } => future
                .poll(cx)
                .map(|result| result.map(|res| res.map(|body| RouterBody::upstream(body, None)))),
            EitherProj::Routed { future } => future.as_mut().poll(cx),
        }
    }
}

impl<B> std::fmt::Debug for UpstreamFuture<B>
where
    B: Body + Send + 'static,
    B::Error: Into<BoxError>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamFuture").finish_non_exhaustive()
    }
}
