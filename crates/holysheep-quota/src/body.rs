use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use holysheep_core::usage::UsageCapture;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::counters::TenantCounters;
use crate::in_flight::InFlightGuard;
use crate::limits::Limits;
use crate::service::Shared;

pin_project! {
    /// Response body of [`Quota`](crate::Quota): the upstream's body, passed through unchanged
    /// while its `usage` is read to reconcile the tenant's token reservation and charge its
    /// dollars when the body ends (or is dropped), or the JSON of a `429`.
    ///
    /// A request counted against [`max_concurrent`](crate::Limits::max_concurrent) stays in
    /// flight until this body ends or is dropped, so a long stream holds its place.
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Upstream {
            #[pin]
            body: B,
            settlement: Option<Settlement>,
        },
        Refused {
            body: Option<Bytes>,
        },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn upstream(body: B, settlement: Option<Settlement>) -> Self {
        Self {
            kind: Kind::Upstream { body, settlement },
        }
    }

    pub(crate) fn refused(body: Bytes) -> Self {
        Self {
            kind: Kind::Refused { body: Some(body) },
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Data: From<Bytes>,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Refused { body } => {
                Poll::Ready(body.take().map(|b| Ok(Frame::data(B::Data::from(b)))))
            }
            KindProj::Upstream {
                mut body,
                settlement,
            } => {
                let frame = ready!(body.as_mut().poll_frame(cx));
                match &frame {
                    Some(Ok(frame)) => {
                        if let (Some(data), Some(s)) = (frame.data_ref(), settlement.as_mut()) {
                            s.capture.push(data);
                        }
                        if body.is_end_stream() {
                            settlement.take();
                        }
                    }
                    // The drop settles: with what was read, or with the reservation.
                    Some(Err(_)) | None => drop(settlement.take()),
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream { body, .. } => body.is_end_stream(),
            Kind::Refused { body } => body.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream { body, .. } => body.size_hint(),
            Kind::Refused { body } => {
                SizeHint::with_exact(body.as_ref().map_or(0, |b| b.remaining() as u64))
            }
        }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Upstream { .. } => "upstream",
            Kind::Refused { .. } => "refused",
        };
        f.debug_struct("ResponseBody").field("kind", &kind).finish()
    }
}

/// What a passed request still owes: its token reservation reconciled with the answer's
/// `usage`, and the answer's cost. Settled once, when dropped.
pub(crate) struct Settlement {
    pub(crate) shared: Arc<Shared>,
    pub(crate) tenant: Arc<str>,
    pub(crate) counters: Arc<TenantCounters>,
    pub(crate) limits: Limits,
    /// The check was decided by this instance alone.
    pub(crate) local: bool,
    pub(crate) reserved: u64,
    pub(crate) model: Option<Arc<str>>,
    pub(crate) capture: UsageCapture,
    /// The answer cost no upstream call (a cache hit, a coalesced follower).
    pub(crate) free: bool,
    /// The upstream answered with success (an error answer bills no tokens).
    pub(crate) success: bool,
    pub(crate) _slot: Option<InFlightGuard>,
}

impl Drop for Settlement {
    fn drop(&mut self) {
        let found = self.capture.finish();
        let (tokens, usd) = match found.usage {
            _ if self.free => (0, 0.0),
            Some(usage) => {
                let model = self.model.as_deref().or(found.model.as_deref());
                let usd = model
                    .and_then(|m| self.shared.prices.cost_of(m, &usage))
                    .unwrap_or(0.0);
                (usage.prompt_tokens + usage.completion_tokens, usd)
            }
            None if !self.success => (0, 0.0),
            // An answer whose usage could not be read (cut off, compressed): the reservation
            // stands, the cost is unknown.
            None => (self.reserved, 0.0),
        };
        let delta = i64::try_from(tokens)
            .unwrap_or(i64::MAX)
            .saturating_sub(i64::try_from(self.reserved).unwrap_or(i64::MAX));
        let usd = if usd.is_finite() { usd.max(0.0) } else { 0.0 };
        if tokens > 0 {
            self.counters.tokens().increment(tokens);
        }
        if usd > 0.0 {
            self.counters.cost().increment((usd * 1e6) as u64);
        }
        if delta != 0 || usd > 0.0 {
            self.shared.backend.settle(
                &self.tenant,
                &self.limits,
                self.local,
                delta,
                usd,
                self.shared.clock.now_ms(),
            );
        }
    }
}
