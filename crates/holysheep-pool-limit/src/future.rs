//! The response future of [`PoolLimit`](crate::PoolLimit).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::ReusableBoxFuture;
use tower::{BoxError, Service};

use crate::adaptive::Outcome;
use crate::body::PermitBody;
use crate::error::Overloaded;
use crate::state::{Permits, QueueSlot, Shared};

pub(crate) type Acquire = ReusableBoxFuture<'static, Result<OwnedSemaphorePermit, AcquireError>>;

pin_project! {
    /// The response future of [`PoolLimit`](crate::PoolLimit): waits (boundedly) for a slot if
    /// the call did not have one, then calls the inner service and wraps its body in a
    /// [`PermitBody`].
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B, S::Future>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B, F> {
        // Boxed: only the slow path pays for the waiting machinery.
        Waiting { waiting: Box<Waiting<S, B>> },
        Called {
            #[pin]
            future: F,
            permits: Option<Permits>,
        },
        Shed { error: Option<Overloaded> },
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn called(future: S::Future, permits: Permits) -> Self {
        Self {
            state: State::Called {
                future,
                permits: Some(permits),
            },
        }
    }

    pub(crate) fn shed(error: Overloaded) -> Self {
        Self {
            state: State::Shed { error: Some(error) },
        }
    }

    pub(crate) fn waiting(waiting: Waiting<S, B>) -> Self {
        Self {
            state: State::Waiting {
                waiting: Box::new(waiting),
            },
        }
    }
}

impl<S, B, ResB> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    ResB: Body,
{
    type Output = Result<Response<PermitBody<ResB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Shed { error } => {
                    let error = error.take().expect("polled after completion");
                    return Poll::Ready(Err(error.into()));
                }
                StateProj::Waiting { waiting } => {
                    let (future, permits) = match ready!(waiting.poll_call(cx)) {
                        Ok(Ok(called)) => called,
                        Ok(Err(error)) => return Poll::Ready(Err(error.into())),
                        Err(shed) => {
                            state.set(State::Shed { error: None });
                            return Poll::Ready(Err(shed.into()));
                        }
                    };
                    state.set(State::Called {
                        future,
                        permits: Some(permits),
                    });
                }
                StateProj::Called { future, permits } => {
                    let result = ready!(future.poll(cx));
                    let mut permits = permits.take().expect("polled after completion");
                    permits.record(&result, Outcome::of_response);
                    return Poll::Ready(match result {
                        Ok(mut res) => {
                            res.extensions_mut().insert(permits.slot());
                            Ok(res.map(|body| PermitBody::new(body, permits)))
                        }
                        // The slots are freed as `permits` drops here.
                        Err(err) => Err(err.into()),
                    });
                }
            }
        }
    }
}

impl<S, B> std::fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// A call that did not get its slots at once: it waits in the queue, bounded in depth and
/// time, then polls its own clone of the inner service ready and calls it.
///
/// The time bound is one queue timeout for the whole wait: the host slot and the total slot
/// here, and the readiness wait that came before, when there was one (its `deadline`).
pub(crate) struct Waiting<S, B> {
    shared: Arc<Shared>,
    deadline: Option<Instant>,
    service: S,
    request: Option<Request<B>>,
    host_sem: Option<Arc<Semaphore>>,
    host: Option<OwnedSemaphorePermit>,
    total: Option<OwnedSemaphorePermit>,
    permits: Option<Permits>,
    acquire: Option<Acquire>,
    queue: Option<(QueueSlot, Pin<Box<Sleep>>)>,
}

enum Need {
    Host(Arc<Semaphore>),
    Total,
}

/// The inner service's future and the slots it runs under, or the inner service's readiness
/// error.
type Called<S, B> =
    Result<(<S as Service<Request<B>>>::Future, Permits), <S as Service<Request<B>>>::Error>;

impl<S, B> Waiting<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn new(
        shared: Arc<Shared>,
        service: S,
        request: Request<B>,
        host_sem: Option<Arc<Semaphore>>,
        host: Option<OwnedSemaphorePermit>,
        total: Option<OwnedSemaphorePermit>,
        deadline: Option<Instant>,
    ) -> Self {
        Self {
            shared,
            deadline,
            service,
            request: Some(request),
            host_sem,
            host,
            total,
            permits: None,
            acquire: None,
            queue: None,
        }
    }

    fn poll_call(&mut self, cx: &mut Context<'_>) -> Poll<Result<Called<S, B>, Overloaded>> {
        if self.permits.is_none() {
            let permits = ready!(self.poll_permits(cx))?;
            self.permits = Some(permits);
        }
        if let Err(err) = ready!(self.service.poll_ready(cx)) {
            return Poll::Ready(Ok(Err(err)));
        }
        let request = self.request.take().expect("polled after completion");
        let permits = self.permits.take().expect("permits were just taken");
        Poll::Ready(Ok(Ok((self.service.call(request), permits))))
    }

    /// Takes the host slot (when per-host limits are on) and then the total slot, waiting in
    /// the queue for whichever is not free.
    fn poll_permits(&mut self, cx: &mut Context<'_>) -> Poll<Result<Permits, Overloaded>> {
        loop {
            let need = match (&self.host_sem, &self.host, &self.total) {
                (Some(sem), None, _) => Need::Host(Arc::clone(sem)),
                (_, _, None) => Need::Total,
                (_, _, Some(_)) => break,
            };
            if let Some(acquire) = &mut self.acquire {
                match acquire.poll(cx) {
                    Poll::Ready(Ok(permit)) => {
                        self.acquire = None;
                        let permit = match need {
                            Need::Total => self.shared.admit(permit),
                            Need::Host(_) => Some(permit),
                        };
                        // `None`: it paid a shrink's debt; the loop waits again.
                        if let Some(permit) = permit {
                            self.store(need, permit);
                        }
                        continue;
                    }
                    // The semaphores are never closed; treat it as a full pool all the same.
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(self.shared.shed(false))),
                    Poll::Pending => {}
                }
                if let Some((_, timer)) = &mut self.queue {
                    ready!(timer.as_mut().poll(cx));
                    self.queue = None;
                    return Poll::Ready(Err(self.shared.shed(false)));
                }
                return Poll::Pending;
            }
            let sem = match &need {
                Need::Host(sem) => Arc::clone(sem),
                Need::Total => Arc::clone(&self.shared.total),
            };
            let free = match need {
                Need::Total => self.shared.try_acquire_total(),
                Need::Host(_) => Arc::clone(&sem).try_acquire_owned().ok(),
            };
            if let Some(permit) = free {
                self.store(need, permit);
                continue;
            }
            if self.queue.is_none() {
                let Some(slot) = self.shared.enter_queue() else {
                    return Poll::Ready(Err(self.shared.shed(true)));
                };
                let deadline = self
                    .deadline
                    .unwrap_or_else(|| Instant::now() + self.shared.config.queue_timeout);
                let timer = Box::pin(tokio::time::sleep_until(deadline));
                self.queue = Some((slot, timer));
            }
            self.acquire = Some(ReusableBoxFuture::new(sem.acquire_owned()));
        }
        let total = self.total.take().expect("loop exits with the total slot");
        self.queue = None;
        Poll::Ready(Ok(Permits::new(&self.shared, total, self.host.take())))
    }

    fn store(&mut self, need: Need, permit: OwnedSemaphorePermit) {
        match need {
            Need::Host(_) => self.host = Some(permit),
            Need::Total => self.total = Some(permit),
        }
    }
}
