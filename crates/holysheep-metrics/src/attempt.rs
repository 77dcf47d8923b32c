//! [`AttemptTraceLayer`]: a child span per upstream attempt.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::Service;
use tower_layer::Layer;
use tracing::Span;
use tracing::field::Empty;

use crate::classify::{ClassifyError, DefaultClassifyError};
use crate::span::{ATTEMPT_TARGET, AttemptCounter};

/// Applies [`AttemptTrace`]: one `tracing` span per call of the inner service, to place
/// **below** a retry layer (and above a pool limit, so the span shows the wait for a slot).
///
/// Each span is a child of the request span [`MetricsLayer`](crate::MetricsLayer) opened, and
/// is numbered by it: `holysheep.attempt` is 1 for the first call of a request, 2 for the first
/// retry, and so on (`http.request.resend_count` is that minus one, from the second on). It
/// carries `http.request.method`, `url.path`, `server.address` / `server.port` (when set with
/// [`server`](Self::server)), `http.response.status_code`, and `error.type` when the call
/// failed, and ends when the answer's body ends. Its target is
/// [`span::ATTEMPT_TARGET`](crate::span::ATTEMPT_TARGET).
///
/// ```
/// use holysheep_metrics::{AttemptTraceLayer, MetricsLayer};
/// use tower::ServiceBuilder;
/// # use tower::service_fn;
/// # let client = service_fn(|_req: http::Request<String>| async {
/// #     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
/// # });
///
/// let svc = ServiceBuilder::new()
///     .layer(MetricsLayer::new())
///     // .layer(RetryLayer::new())
///     .layer(AttemptTraceLayer::new().server("api.holysheep.ai", Some(443)))
///     .service(client);
/// # let _ = svc;
/// ```
#[derive(Debug, Clone, Default)]
pub struct AttemptTraceLayer {
    server: Option<(Arc<str>, Option<u16>)>,
}

impl AttemptTraceLayer {
    /// A layer whose spans name no server.
    pub fn new() -> Self {
        Self::default()
    }

    /// The upstream's host and port, recorded as `server.address` and `server.port`.
    pub fn server(mut self, address: impl Into<Arc<str>>, port: Option<u16>) -> Self {
        self.server = Some((address.into(), port));
        self
    }
}

impl<S> Layer<S> for AttemptTraceLayer {
    type Service = AttemptTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AttemptTrace {
            inner,
            server: self.server.clone(),
        }
    }
}

/// Opens a span per call of the inner service. See [`AttemptTraceLayer`].
#[derive(Debug, Clone)]
pub struct AttemptTrace<S> {
    inner: S,
    server: Option<(Arc<str>, Option<u16>)>,
}

impl<S> AttemptTrace<S> {
    /// Wraps `inner`, naming no server.
    pub fn new(inner: S) -> Self {
        AttemptTraceLayer::new().layer(inner)
    }

    /// An [`AttemptTraceLayer`].
    pub fn layer() -> AttemptTraceLayer {
        AttemptTraceLayer::new()
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AttemptTrace<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
    S::Error: 'static,
{
    type Response = Response<AttemptBody<ResBody>>;
    type Error = S::Error;
    type Future = AttemptFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let span = tracing::debug_span!(
            target: ATTEMPT_TARGET,
            "upstream",
            otel.name = req.method().as_str(),
            otel.kind = "client",
            otel.status_code = Empty,
            http.request.method = req.method().as_str(),
            url.path = req.uri().path(),
            server.address = Empty,
            server.port = Empty,
            http.response.status_code = Empty,
            http.request.resend_count = Empty,
            holysheep.attempt = Empty,
            error.type = Empty,
        );
        if !span.is_disabled() {
            if let Some(counter) = req.extensions().get::<AttemptCounter>() {
                let attempt = counter.next();
                span.record("holysheep.attempt", attempt);
                if attempt > 1 {
                    span.record("http.request.resend_count", attempt - 1);
                }
            }
            if let Some((address, port)) = &self.server {
                span.record("server.address", &**address);
                if let Some(port) = port {
                    span.record("server.port", port);
                }
            }
        }
        let inner = {
            let _enter = span.enter();
            self.inner.call(req)
        };
        AttemptFuture {
            inner,
            span: Some(span),
        }
    }
}

pin_project! {
    /// Response future of [`AttemptTrace`].
    pub struct AttemptFuture<F> {
        #[pin]
        inner: F,
        span: Option<Span>,
    }
}

impl<F, B, E> Future for AttemptFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
    E: 'static,
{
    type Output = Result<Response<AttemptBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _enter = this.span.as_ref().map(Span::enter);
            ready!(this.inner.poll(cx))
        };
        let span = this.span.take().unwrap_or_else(Span::none);
        Poll::Ready(match result {
            Ok(res) => {
                if !span.is_disabled() {
                    let status = res.status();
                    span.record("http.response.status_code", status.as_u16());
                    if status.is_server_error() {
                        span.record("error.type", status.as_str());
                        span.record("otel.status_code", "ERROR");
                    }
                }
                let end = res.body().is_end_stream();
                Ok(res.map(|inner| AttemptBody {
                    inner,
                    // A body over before it starts ends the span now.
                    span: (!end).then_some(span),
                }))
            }
            Err(error) => {
                if !span.is_disabled() {
                    // The error's kind, not its text: a message may quote a request.
                    span.record(
                        "error.type",
                        DefaultClassifyError::new().classify(&error).as_str(),
                    );
                    span.record("otel.status_code", "ERROR");
                }
                Err(error)
            }
        })
    }
}

impl<F> std::fmt::Debug for AttemptFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptFuture").finish_non_exhaustive()
    }
}

pin_project! {
    /// Response body of [`AttemptTrace`]: holds the attempt's span until the body ends, so the
    /// span's length is the attempt's, streams included.
    pub struct AttemptBody<B> {
        #[pin]
        inner: B,
        span: Option<Span>,
    }
}

impl<B: Body> Body for AttemptBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(_)) if !this.inner.is_end_stream() => {}
            Some(Err(_)) => {
                if let Some(span) = this.span.take()
                    && !span.is_disabled()
                {
                    span.record("error.type", "body");
                    span.record("otel.status_code", "ERROR");
                }
            }
            _ => *this.span = None,
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

impl<B: std::fmt::Debug> std::fmt::Debug for AttemptBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptBody")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}
