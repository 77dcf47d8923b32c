//! [`IncludeUsageLayer`], [`IncludeUsage`], their future and body.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::Full;
use http_body_util::combinators::Collect;
use pin_project_lite::pin_project;
use tower::Service;
use tower_layer::Layer;

use crate::BoxError;
use crate::request::{Asked, ask_for_usage, has_stream_options};
use crate::strip::Stripper;

/// Applies [`IncludeUsage`]: every streamed completion request asks the upstream for its usage,
/// and a client that did not ask gets its stream without it. See the [crate docs](crate).
#[derive(Debug, Clone)]
pub struct IncludeUsageLayer {
    max_event_bytes: usize,
}

impl IncludeUsageLayer {
    /// Default bound on one stream event held back to take its usage out (1 MiB).
    pub const DEFAULT_MAX_EVENT_BYTES: usize = 1024 * 1024;

    /// A layer with the default bound.
    pub fn new() -> Self {
        Self {
            max_event_bytes: Self::DEFAULT_MAX_EVENT_BYTES,
        }
    }

    /// How long one event of a stream may grow while it is held back to be rewritten; a longer
    /// one (no usage chunk is that long) and the rest of its stream pass unchanged.
    pub fn max_event_bytes(mut self, bytes: usize) -> Self {
        self.max_event_bytes = bytes;
        self
    }
}

impl Default for IncludeUsageLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for IncludeUsageLayer {
    type Service = IncludeUsage<S>;

    fn layer(&self, inner: S) -> Self::Service {
        IncludeUsage {
            inner,
            max_event_bytes: self.max_event_bytes,
        }
    }
}

/// Asks the upstream for the usage of every streamed completion request, and takes it back out
/// of the answer for a client that did not ask. Built by [`IncludeUsageLayer`].
///
/// The request body is read whole (LLM requests are small JSON; put a body limit in front) and
/// handed on as [`Full<Bytes>`]. The inner service is cloned per request, as the body is read
/// before it is called.
#[derive(Debug, Clone)]
pub struct IncludeUsage<S> {
    inner: S,
    max_event_bytes: usize,
}

impl<S> IncludeUsage<S> {
    /// Wraps `inner` with the default settings.
    pub fn new(inner: S) -> Self {
        IncludeUsageLayer::new().layer(inner)
    }

    /// An [`IncludeUsageLayer`].
    pub fn layer() -> IncludeUsageLayer {
        IncludeUsageLayer::new()
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for IncludeUsage<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    ReqBody: Body,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        // The ready service goes into the future; a clone stays for the next call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = req.into_parts();
        ResponseFuture {
            state: State::Reading {
                body: body.collect(),
                parts: Some(parts),
                inner: Some(inner),
            },
            max_event_bytes: self.max_event_bytes,
        }
    }
}

pin_project! {
    /// Response future of [`IncludeUsage`].
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<Full<Bytes>>>,
        B: Body,
    {
        #[pin]
        state: State<S, B>,
        max_event_bytes: usize,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<Full<Bytes>>>,
        B: Body,
    {
        Reading {
            #[pin]
            body: Collect<B>,
            parts: Option<Parts>,
            inner: Option<S>,
        },
        Calling {
            #[pin]
            future: S::Future,
            asked: Asked,
        },
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
    ResBody: Body,
    ResBody::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Reading { body, parts, inner } => {
                    let bytes = ready!(body.poll(cx)).map_err(Into::into)?.to_bytes();
                    let (Some(mut parts), Some(mut inner)) = (parts.take(), inner.take()) else {
                        return Poll::Ready(Err("IncludeUsage polled after it answered".into()));
                    };
                    let (bytes, asked) =
                        if parts.method == Method::POST && has_stream_options(parts.uri.path()) {
                            ask_for_usage(&bytes)
                        } else {
                            (bytes, Asked::NotStreamed)
                        };
                    // The body grew: a length the caller declared would cut it short.
                    if asked == Asked::ByLayer && parts.headers.contains_key(CONTENT_LENGTH) {
                        parts
                            .headers
                            .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                    }
                    let future = inner.call(Request::from_parts(parts, Full::new(bytes)));
                    this.state.set(State::Calling { future, asked });
                }
                StateProj::Calling { future, asked } => {
                    let res = ready!(future.poll(cx)).map_err(Into::into)?;
                    let strip = *asked == Asked::ByLayer
                        && res.status() == StatusCode::OK
                        && is_event_stream(&res);
                    let limit = *this.max_event_bytes;
                    return Poll::Ready(Ok(res.map(|inner| ResponseBody {
                        inner,
                        stripper: strip.then(|| Box::new(Stripper::new(limit))),
                        held: None,
                    })));
                }
            }
        }
    }
}

impl<S, B> std::fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<Full<Bytes>>>,
    B: Body,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

fn is_event_stream<B>(res: &Response<B>) -> bool {
    res.headers().get(CONTENT_TYPE).is_some_and(|ct| {
        let ct = ct.as_bytes();
        let essence = ct.split(|&b| b == b';').next().unwrap_or(ct).trim_ascii();
        essence.eq_ignore_ascii_case(b"text/event-stream")
    })
}

pin_project! {
    /// Response body of [`IncludeUsage`]: the answer as it came, or, for a stream whose usage the
    /// client did not ask for, the stream without it.
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        stripper: Option<Box<Stripper>>,
        // A trailer or error frame waiting behind the last held-back bytes.
        held: Option<Result<Frame<Bytes>, BoxError>>,
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Some(frame) = this.held.take() {
            return Poll::Ready(Some(frame));
        }
        loop {
            let frame = ready!(this.inner.as_mut().poll_frame(cx));
            let Some(stripper) = this.stripper.as_mut() else {
                return Poll::Ready(frame.map(|f| {
                    f.map(|f| f.map_data(|mut d| d.copy_to_bytes(d.remaining())))
                        .map_err(Into::into)
                }));
            };
            let frame = match frame {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(mut data) => {
                        let data = data.copy_to_bytes(data.remaining());
                        let mut out = stripper.push(&data);
                        // A sized body may say it is over without a last `None`.
                        if this.inner.is_end_stream() {
                            let rest = stripper.finish();
                            if !rest.is_empty() {
                                out = [out, rest].concat().into();
                            }
                        }
                        if out.is_empty() {
                            continue;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                    Err(frame) => Ok(frame.map_data(|mut d| d.copy_to_bytes(d.remaining()))),
                },
                Some(Err(error)) => Err(error.into()),
                None => {
                    let rest = stripper.finish();
                    *this.stripper = None;
                    return Poll::Ready((!rest.is_empty()).then(|| Ok(Frame::data(rest))));
                }
            };
            // Bytes held back go first, then the trailers or the error.
            let rest = stripper.finish();
            if rest.is_empty() {
                return Poll::Ready(Some(frame));
            }
            *this.held = Some(frame);
            return Poll::Ready(Some(Ok(Frame::data(rest))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none()
            && self.inner.is_end_stream()
            && self.stripper.as_ref().is_none_or(|s| s.is_idle())
    }

    fn size_hint(&self) -> SizeHint {
        if self.stripper.is_some() {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("inner", &self.inner)
            .field("stripping", &self.stripper.is_some())
            .finish()
    }
}
