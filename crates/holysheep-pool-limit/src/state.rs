//! The permits, queue and counters shared by every service a [`PoolLimitLayer`] builds.
//!
//! [`PoolLimitLayer`]: crate::PoolLimitLayer

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::request::Parts;
use http::{Request, header::HOST};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use holysheep_core::signal::{PoolSlot, SlotPool};

use crate::adaptive::{Adaptive, Aimd, Outcome};
use crate::error::Overloaded;

/// Gauge (`metrics` facade): pool slots held by response bodies read for no caller (a caller
/// went away and a layer above reads the answer on to store it); [`PoolLimitHandle::detached`]
/// counts the same for one pool. Each pool moves the gauge up and down by one, so several pools
/// in a process (a router's deployments) add up.
pub const DETACHED_SLOTS: &str = "holysheep_pool_detached_slots";

/// A function that names the per-host bucket of a request; `None` selects the default bucket.
pub(crate) type KeyFn = Arc<dyn Fn(&Parts) -> Option<String> + Send + Sync>;

#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) total: usize,
    pub(crate) per_host: usize,
    pub(crate) queue_timeout: Duration,
    pub(crate) max_queue: usize,
    pub(crate) shed_retry_after: Duration,
    pub(crate) key: Option<KeyFn>,
    pub(crate) adaptive: Option<Aimd>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("total", &self.total)
            .field("per_host", &self.per_host)
            .field("queue_timeout", &self.queue_timeout)
            .field("max_queue", &self.max_queue)
            .field("shed_retry_after", &self.shed_retry_after)
            .field("key", &self.key.as_ref().map(|_| "fn"))
            .field("adaptive", &self.adaptive)
            .finish()
    }
}

impl Config {
    pub(crate) fn new(total: usize, per_host: usize) -> Self {
        use crate::PoolLimitLayer as L;
        Self {
            total,
            per_host,
            queue_timeout: L::DEFAULT_QUEUE_TIMEOUT,
            max_queue: L::DEFAULT_MAX_QUEUE,
            shed_retry_after: L::DEFAULT_SHED_RETRY_AFTER,
            key: None,
            adaptive: None,
        }
    }
}

/// Per-host semaphores, made on first use and swept when idle so that many distinct hosts
/// cannot grow the map without bound.
#[derive(Debug)]
struct Hosts {
    limit: usize,
    default: Arc<Semaphore>,
    map: Mutex<HostMap>,
}

#[derive(Debug)]
struct HostMap {
    buckets: HashMap<Box<str>, Arc<Semaphore>>,
    sweep_at: usize,
}

const MIN_SWEEP: usize = 64;

impl Hosts {
    fn bucket(&self, key: Option<&str>) -> Arc<Semaphore> {
        let Some(key) = key else {
            return Arc::clone(&self.default);
        };
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sem) = map.buckets.get(key) {
            return Arc::clone(sem);
        }
        if map.buckets.len() >= map.sweep_at {
            // Only the map holds an idle bucket: no permit and no waiter refers to it.
            map.buckets.retain(|_, sem| Arc::strong_count(sem) > 1);
            map.sweep_at = (map.buckets.len() * 2).max(MIN_SWEEP);
        }
        let sem = Arc::new(Semaphore::new(self.limit));
        map.buckets.insert(key.into(), Arc::clone(&sem));
        sem
    }
}

/// State shared by every service one layer builds.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) total: Arc<Semaphore>,
    hosts: Option<Hosts>,
    pub(crate) adaptive: Option<Adaptive>,
    in_flight: AtomicUsize,
    queued: AtomicUsize,
    shed: AtomicU64,
    detached: AtomicUsize,
}

/// What `CacheLayer` asks of the pool when a caller went away mid-answer (see
/// [`PoolSlot`](holysheep_core::signal::PoolSlot)).
impl SlotPool for Shared {
    fn is_contended(&self) -> bool {
        self.queued.load(Ordering::Relaxed) > 0
    }

    fn set_detached(&self, detached: bool) {
        // Moved by one, not set: several pools (one per deployment behind a router) add up in
        // the one gauge.
        if detached {
            self.detached.fetch_add(1, Ordering::Relaxed);
            metrics::gauge!(DETACHED_SLOTS).increment(1.0);
        } else {
            self.detached.fetch_sub(1, Ordering::Relaxed);
            metrics::gauge!(DETACHED_SLOTS).decrement(1.0);
        }
    }
}

impl Shared {
    pub(crate) fn new(mut config: Config) -> Self {
        // A zero limit would wait forever; the smallest useful pool has one slot.
        config.total = config.total.clamp(1, Semaphore::MAX_PERMITS);
        config.per_host = config.per_host.clamp(1, Semaphore::MAX_PERMITS);
        // A per-host cap at or above the total can never bind: skip its bookkeeping.
        let hosts = (config.per_host < config.total).then(|| Hosts {
            limit: config.per_host,
            default: Arc::new(Semaphore::new(config.per_host)),
            map: Mutex::new(HostMap {
                buckets: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
        });
        let adaptive = config
            .adaptive
            .map(|aimd| Adaptive::new(aimd, config.total));
        Self {
            total: Arc::new(Semaphore::new(config.total)),
            hosts,
            adaptive,
            config,
            in_flight: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            shed: AtomicU64::new(0),
            detached: AtomicUsize::new(0),
        }
    }

    /// The host bucket of `req`, or `None` when per-host limits are off.
    ///
    /// The default key is the URI authority, else the `Host` header, else a single default
    /// bucket.
    pub(crate) fn host_bucket<B>(&self, req: Request<B>) -> (Request<B>, Option<Arc<Semaphore>>) {
        let Some(hosts) = &self.hosts else {
            return (req, None);
        };
        if let Some(key_fn) = &self.config.key {
            let (parts, body) = req.into_parts();
            let key = key_fn(&parts);
            let sem = hosts.bucket(key.as_deref());
            return (Request::from_parts(parts, body), Some(sem));
        }
        let key = match req.uri().authority() {
            Some(authority) => Some(authority.as_str()),
            None => req.headers().get(HOST).and_then(|h| h.to_str().ok()),
        };
        let sem = hosts.bucket(key);
        (req, Some(sem))
    }

    /// Takes a free total slot, if any, paying an adaptive shrink's debt first.
    pub(crate) fn try_acquire_total(&self) -> Option<OwnedSemaphorePermit> {
        // Bounded: each round forgets a slot and lowers the debt by one.
        loop {
            let permit = Arc::clone(&self.total).try_acquire_owned().ok()?;
            if let Some(permit) = self.admit(permit) {
                return Some(permit);
            }
        }
    }

    /// A total slot taken while an adaptive shrink is still owed is forgotten instead of
    /// used, so slots that came back outside a request (a reservation dropped unused) cannot
    /// keep the pool above its lowered limit.
    pub(crate) fn admit(&self, permit: OwnedSemaphorePermit) -> Option<OwnedSemaphorePermit> {
        if let Some(adaptive) = &self.adaptive
            && adaptive.take_debt()
        {
            permit.forget();
            return None;
        }
        Some(permit)
    }

    /// Takes a place in the queue, or `None` when the queue is at its bound.
    pub(crate) fn enter_queue(self: &Arc<Self>) -> Option<QueueSlot> {
        if self.config.queue_timeout.is_zero() {
            return None;
        }
        let max = self.config.max_queue;
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| QueueSlot(Arc::clone(self)))
    }

    /// Counts a shed and builds its error.
    pub(crate) fn shed(&self, queue_full: bool) -> Overloaded {
        self.shed.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(queue_full, "pool limit shed a request");
        Overloaded::new(self.config.shed_retry_after).with_queue_full(queue_full)
    }
}

/// A place in the queue; leaving it (by acquiring, timing out or being dropped) frees it.
#[derive(Debug)]
pub(crate) struct QueueSlot(Arc<Shared>);

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The slots one upstream request holds: the total one, and its host's when per-host limits
/// are on. Dropping them frees the slots.
///
/// With an adaptive limit they also carry the call's start, until its answer is recorded.
#[derive(Debug)]
pub(crate) struct Permits {
    total: Option<OwnedSemaphorePermit>,
    _host: Option<OwnedSemaphorePermit>,
    started: Option<Instant>,
    shared: Arc<Shared>,
}

impl Permits {
    pub(crate) fn new(
        shared: &Arc<Shared>,
        total: OwnedSemaphorePermit,
        host: Option<OwnedSemaphorePermit>,
    ) -> Self {
        shared.in_flight.fetch_add(1, Ordering::Relaxed);
        Self {
            total: Some(total),
            _host: host,
            started: shared.adaptive.as_ref().map(|_| Instant::now()),
            shared: Arc::clone(shared),
        }
    }

    /// The slot as a response extension, for a layer above that may read the body on after its
    /// caller went away.
    pub(crate) fn slot(&self) -> PoolSlot {
        PoolSlot::new(Arc::clone(&self.shared) as Arc<dyn SlotPool>)
    }

    /// Feeds the inner service's answer into the adaptive limit, if there is one.
    pub(crate) fn record<R, E>(
        &mut self,
        result: &Result<R, E>,
        outcome: impl FnOnce(&R) -> Outcome,
    ) {
        if let (Some(started), Some(adaptive)) = (self.started.take(), &self.shared.adaptive) {
            let outcome = match result {
                Ok(res) => outcome(res),
                Err(_) => Outcome::Overloaded,
            };
            adaptive.record(started, outcome, &self.shared.total);
        }
    }
}

impl Drop for Permits {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(adaptive) = &self.shared.adaptive {
            if let Some(started) = self.started.take() {
                adaptive.record(started, Outcome::Cancelled, &self.shared.total);
            }
            // A shrink that found too few free slots is paid by not returning this one.
            if adaptive.take_debt()
                && let Some(total) = self.total.take()
            {
                total.forget();
            }
        }
    }
}

/// A cheap, cloneable view of a pool limit's counters, for a `/metrics` endpoint.
///
/// Taken from [`PoolLimitLayer::handle`](crate::PoolLimitLayer::handle); it observes every
/// service that layer builds.
#[derive(Debug, Clone)]
pub struct PoolLimitHandle {
    shared: Arc<Shared>,
}

impl PoolLimitHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Requests on the upstream now, from the call until their response body ends.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// Requests waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// Slots held by response bodies that are read for no caller: a layer above (`CacheLayer`)
    /// reads an answer on after its caller went away, to store it (see
    /// [`PoolSlot`](holysheep_core::signal::PoolSlot)). Also the gauge
    /// [`DETACHED_SLOTS`](crate::DETACHED_SLOTS). Counted in [`in_flight`](Self::in_flight) too.
    pub fn detached(&self) -> usize {
        self.shared.detached.load(Ordering::Relaxed)
    }

    /// Requests shed since the layer was built.
    pub fn shed_total(&self) -> u64 {
        self.shared.shed.load(Ordering::Relaxed)
    }

    /// The cap on in-flight requests in total: the configured one, or with
    /// [`adaptive`](crate::PoolLimitLayer::adaptive) the limit the controller applies now.
    pub fn limit(&self) -> usize {
        match &self.shared.adaptive {
            Some(adaptive) => adaptive.limit(),
            None => self.shared.config.total,
        }
    }

    /// The configured cap on in-flight requests in total; the most an adaptive limit grows to.
    pub fn max_limit(&self) -> usize {
        self.shared.config.total
    }

    /// The cap on in-flight requests per host, when it can bind (`None` when it is at or above
    /// the total cap).
    pub fn per_host_limit(&self) -> Option<usize> {
        self.shared.hosts.as_ref().map(|h| h.limit)
    }
}
