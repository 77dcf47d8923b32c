use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use holysheep_core::BoxError;
use holysheep_core::price::PriceTable;
use holysheep_core::signal::{CacheOutcome, Namespace, RequestModel};
use holysheep_core::usage::UsageCapture;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use metrics::{SharedString, counter};
use tower::Service;

use crate::backend::Backend;
use crate::body::{ResponseBody, Settlement};
use crate::clock::Clock;
use crate::decision::{Check, Reason, Verdict};
use crate::future::ResponseFuture;
use crate::in_flight::InFlight;
use crate::layer::QuotaLayer;
use crate::limits::QuotaPolicy;
use crate::response::{insert_headers, rejection};
use crate::{estimate, names};

/// Configuration and state shared by every service of one [`QuotaLayer`].
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) policy: Arc<RwLock<Arc<QuotaPolicy>>>,
    pub(crate) backend: Backend,
    pub(crate) in_flight: Arc<InFlight>,
    pub(crate) prices: Arc<PriceTable>,
    pub(crate) clock: Clock,
    pub(crate) completion_reserve: u64,
    pub(crate) max_capture: usize,
}

impl Shared {
    pub(crate) fn policy(&self) -> Arc<QuotaPolicy> {
        Arc::clone(&self.policy.read().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Enforces each tenant's [`Limits`](crate::Limits); see the [crate docs](crate).
///
/// Build it with [`QuotaLayer`]. The inner service gets the request with its body read into a
/// [`Full<Bytes>`] (the token reservation is estimated from it).
#[derive(Debug, Clone)]
pub struct Quota<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Quota<S> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// Wraps `inner` in the limits of `layer`.
    pub fn new(inner: S, layer: &QuotaLayer) -> Self {
        tower_layer::Layer::layer(layer, inner)
    }

    /// A [`QuotaLayer`] with the in-memory backend and these tenants.
    pub fn layer(policy: QuotaPolicy) -> QuotaLayer {
        QuotaLayer::new(policy)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, ResBody> Service<Request<B>> for Quota<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    ResBody: Body + Send + 'static,
    ResBody::Data: From<Bytes>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The service that was polled ready serves this call; its clone waits for the next.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::new(Box::pin(serve(Arc::clone(&self.shared), inner, req)))
    }
}

async fn serve<S, B, ResBody>(
    shared: Arc<Shared>,
    mut inner: S,
    req: Request<B>,
) -> Result<Response<ResponseBody<ResBody>>, BoxError>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
    ResBody: Body,
{
    let (parts, body) = req.into_parts();
    let policy = shared.policy();
    let namespace = parts.extensions.get::<Namespace>().map(|n| &n.0);
    let lookup = policy.lookup(namespace.map(|n| &**n));
    let limits = lookup.limits;
    let bytes = read_body(body).await.map_err(Into::into)?;
    if limits.is_unlimited() {
        let req = Request::from_parts(parts, Full::new(bytes));
        let res = inner.call(req).await.map_err(Into::into)?;
        return Ok(res.map(|body| ResponseBody::upstream(body, None)));
    }

    let tenant = namespace.map_or_else(|| Arc::from(QuotaPolicy::ANONYMOUS), Arc::clone);
    let counters = Arc::clone(lookup.counters);
    let reserved = match limits.tokens_per_minute {
        Some(_) => estimate::reserve(&bytes, shared.completion_reserve),
        None => 0,
    };
    let check = Check {
        tokens: reserved,
        now_ms: shared.clock.now_ms(),
        may_cost: !bytes.is_empty(),
    };
    let mut verdict = shared.backend.check(&tenant, &limits, check).await;
    let slot = match (verdict.reason, limits.max_concurrent) {
        (None, Some(max)) => {
            let slot = shared.in_flight.try_acquire(&tenant, max);
            if slot.is_none() {
                // The request counts; its token reservation is given back.
                if reserved > 0 {
                    let now = shared.clock.now_ms();
                    shared.backend.settle(
                        &tenant,
                        &limits,
                        verdict.local,
                        -(reserved as i64),
                        0.0,
                        now,
                    );
                }
                verdict.reject(Reason::Concurrency, 1000.0);
            }
            slot
        }
        _ => None,
    };
    if let Some(reason) = verdict.reason {
        return Ok(refuse(&tenant, counters.label(), reason, &verdict));
    }
    counters.allowed().increment(1);

    let model = parts.extensions.get::<RequestModel>().map(|m| m.0.clone());
    let req = Request::from_parts(parts, Full::new(bytes));
    let mut settlement = Settlement {
        shared: Arc::clone(&shared),
        tenant,
        counters,
        limits,
        local: verdict.local,
        reserved,
        model,
        capture: UsageCapture::off(),
        free: false,
        success: false,
        _slot: slot,
    };
    // An error without an answer: the drop of the settlement gives the reservation back.
    let res = inner.call(req).await.map_err(Into::into)?;
    let (mut head, body) = res.into_parts();
    settlement.free = head
        .extensions
        .get::<CacheOutcome>()
        .is_some_and(|o| o.is_saved());
    settlement.success = head.status.is_success();
    if settlement.model.is_none() {
        settlement.model = head.extensions.get::<RequestModel>().map(|m| m.0.clone());
    }
    if !settlement.free {
        settlement.capture =
            UsageCapture::for_response(&head.headers, body.size_hint().lower(), shared.max_capture);
    }
    insert_headers(&mut head.headers, &verdict);
    let body = if body.is_end_stream() {
        // Over before it starts: hyper may never poll it, so settle now.
        drop(settlement);
        ResponseBody::upstream(body, None)
    } else {
        ResponseBody::upstream(body, Some(settlement))
    };
    Ok(Response::from_parts(head, body))
}

fn refuse<B>(
    tenant: &str,
    label: &SharedString,
    reason: Reason,
    verdict: &Verdict,
) -> Response<ResponseBody<B>> {
    counter!(names::REQUESTS, "tenant" => label.clone(), "result" => "rejected").increment(1);
    counter!(names::REJECTIONS, "tenant" => label.clone(), "reason" => reason.as_str())
        .increment(1);
    tracing::debug!(tenant, reason = reason.as_str(), "quota: request refused");
    rejection(tenant, reason, verdict).map(ResponseBody::refused)
}

/// The request body in one piece. A body of one data frame (a `Full`, most requests) is taken
/// as it is, without a copy or a list of buffers; more frames are joined. Trailers are dropped.
async fn read_body<B: Body>(body: B) -> Result<Bytes, B::Error> {
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(mut data) = frame?.into_data() else {
            continue;
        };
        let chunk = data.copy_to_bytes(data.remaining());
        match first.take() {
            None if joined.is_empty() => first = Some(chunk),
            earlier => {
                if let Some(earlier) = earlier {
                    joined.extend_from_slice(&earlier);
                }
                joined.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| joined.freeze()))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::pin::Pin;

    use http_body::Frame;
    use http_body_util::Empty;

    use super::*;

    /// A body of the frames given.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    #[tokio::test]
    async fn a_body_of_several_frames_is_joined_and_trailers_dropped() {
        let body = Frames(VecDeque::from([
            Frame::data(Bytes::from_static(b"{\"a\":")),
            Frame::data(Bytes::new()),
            Frame::data(Bytes::from_static(b"1}")),
            Frame::trailers(http::HeaderMap::new()),
        ]));
        assert_eq!(read_body(body).await.unwrap(), &b"{\"a\":1}"[..]);

        let one = Bytes::from_static(b"{}");
        let read = read_body(Full::new(one.clone())).await.unwrap();
        assert_eq!(read, one);
        // The frame itself, not a copy.
        assert_eq!(read.as_ptr(), one.as_ptr());
        assert!(read_body(Empty::<Bytes>::new()).await.unwrap().is_empty());
    }
}
