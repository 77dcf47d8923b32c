use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::ReusableBoxFuture;
use tower::{BoxError, Service};

use crate::body::PermitBody;
use crate::future::{Acquire, ResponseFuture, Waiting};
use crate::layer::PoolLimitLayer;
use crate::state::{Permits, PoolLimitHandle, QueueSlot, Shared};

/// Caps in-flight requests to the inner service in total and per host. See [`PoolLimitLayer`].
///
/// # Readiness
///
/// `poll_ready` is honest: it takes a total slot, as tower's `ConcurrencyLimit` does, and is
/// `Pending` while none is free. That wait is bounded like any other: it counts against the
/// queue depth and ends after the queue timeout, after which the service reports ready and
/// the next `call` is shed at once with [`Overloaded`](crate::Overloaded) (an error from
/// `poll_ready` would mean, in tower, that the service is broken for good). The host slot is
/// taken in the call, as the host is only known then; a call that waits for it after waiting
/// in `poll_ready` waits only what is left of the same queue timeout.
///
/// A `call` without a slot from `poll_ready` (as frameworks that skip readiness make) takes
/// free slots at once or queues inside the response future under the same bounds, then polls
/// a clone of the inner service ready before calling it.
#[derive(Debug)]
pub struct PoolLimit<S> {
    inner: S,
    shared: Arc<Shared>,
    ready: Ready,
}

#[derive(Debug, Default)]
enum Ready {
    #[default]
    Idle,
    Waiting(Box<ReadyWait>),
    /// A total slot; with the deadline of the queue wait that got it, when it had to wait.
    Permit(OwnedSemaphorePermit, Option<Instant>),
    Shed {
        queue_full: bool,
    },
}

struct ReadyWait {
    acquire: Acquire,
    /// When the wait ends; a host wait in the call that follows ends then too.
    deadline: Instant,
    timer: Pin<Box<Sleep>>,
    _slot: QueueSlot,
}

impl std::fmt::Debug for ReadyWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadyWait").finish_non_exhaustive()
    }
}

impl<S: Clone> Clone for PoolLimit<S> {
    fn clone(&self) -> Self {
        // A clone shares the pool but not this handle's reserved slot.
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            ready: Ready::Idle,
        }
    }
}

impl<S> PoolLimit<S> {
    /// Wraps `inner` in a pool of its own: `total` in flight, `per_host` to any one host, and
    /// the other settings at their defaults (see [`PoolLimitLayer`]).
    pub fn new(inner: S, total: usize, per_host: usize) -> Self {
        use tower_layer::Layer;
        PoolLimitLayer::new(total, per_host).layer(inner)
    }

    /// A [`PoolLimitLayer`] with `total` and `per_host` caps.
    pub fn layer(total: usize, per_host: usize) -> PoolLimitLayer {
        PoolLimitLayer::new(total, per_host)
    }

    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self {
            inner,
            shared,
            ready: Ready::Idle,
        }
    }

    /// A handle to the pool's counters.
    pub fn handle(&self) -> PoolLimitHandle {
        PoolLimitHandle::new(Arc::clone(&self.shared))
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

impl<S, B, ResB> Service<Request<B>> for PoolLimit<S>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone,
    S::Error: Into<BoxError>,
    ResB: Body,
{
    type Response = Response<PermitBody<ResB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        loop {
            match &mut self.ready {
                Ready::Permit(..) => return self.inner.poll_ready(cx).map_err(Into::into),
                Ready::Shed { .. } => return Poll::Ready(Ok(())),
                Ready::Idle => match self.shared.try_acquire_total() {
                    Some(permit) => self.ready = Ready::Permit(permit, None),
                    None => {
                        self.ready = match self.shared.enter_queue() {
                            Some(slot) => {
                                let deadline = Instant::now() + self.shared.config.queue_timeout;
                                Ready::Waiting(Box::new(ReadyWait {
                                    acquire: ReusableBoxFuture::new(
                                        Arc::clone(&self.shared.total).acquire_owned(),
                                    ),
                                    deadline,
                                    timer: Box::pin(tokio::time::sleep_until(deadline)),
                                    _slot: slot,
                                }))
                            }
                            None => Ready::Shed { queue_full: true },
                        }
                    }
                },
                Ready::Waiting(wait) => {
                    if let Poll::Ready(acquired) = wait.acquire.poll(cx) {
                        match acquired {
                            Ok(permit) => match self.shared.admit(permit) {
                                Some(permit) => {
                                    self.ready = Ready::Permit(permit, Some(wait.deadline));
                                }
                                // It paid a shrink's debt instead: wait on.
                                None => wait
                                    .acquire
                                    .set(Arc::clone(&self.shared.total).acquire_owned()),
                            },
                            Err(_) => self.ready = Ready::Shed { queue_full: false },
                        }
                        continue;
                    }
                    if wait.timer.as_mut().poll(cx).is_ready() {
                        self.ready = Ready::Shed { queue_full: false };
                        continue;
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (req, host_sem) = self.shared.host_bucket(req);
        let (total, deadline) = match std::mem::take(&mut self.ready) {
            Ready::Shed { queue_full } => {
                return ResponseFuture::shed(self.shared.shed(queue_full));
            }
            Ready::Permit(total, deadline) => (Some(total), deadline),
            // Called without readiness: take free slots now, or queue in the future below.
            Ready::Idle | Ready::Waiting(_) => (None, None),
        };
        let host = match &host_sem {
            Some(sem) => match Arc::clone(sem).try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => return self.wait(req, host_sem, None, total, deadline),
            },
            None => None,
        };
        let total = match total {
            Some(total) => total,
            None => match self.shared.try_acquire_total() {
                Some(permit) => permit,
                None => return self.wait(req, host_sem, host, None, None),
            },
        };
        let permits = Permits::new(&self.shared, total, host);
        ResponseFuture::called(self.inner.call(req), permits)
    }
}

impl<S> PoolLimit<S> {
    fn wait<B>(
        &mut self,
        req: Request<B>,
        host_sem: Option<Arc<tokio::sync::Semaphore>>,
        host: Option<OwnedSemaphorePermit>,
        total: Option<OwnedSemaphorePermit>,
        deadline: Option<Instant>,
    ) -> ResponseFuture<S, B>
    where
        S: Service<Request<B>> + Clone,
    {
        // The waiting call gets the (possibly ready) service; a clone stays for the next call.
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::waiting(Waiting::new(
            Arc::clone(&self.shared),
            service,
            req,
            host_sem,
            host,
            total,
            deadline,
        ))
    }
}
