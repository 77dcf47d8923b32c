use std::sync::{Arc, PoisonError, RwLock};

use holysheep_core::price::PriceTable;
use holysheep_core::signal::Namespace;
use tower_layer::Layer;

use crate::backend::Backend;
use crate::clock::Clock;
use crate::in_flight::InFlight;
use crate::limits::QuotaPolicy;
use crate::service::{Quota, Shared};
use crate::usage::TenantUsage;

/// Applies [`Quota`] to a service: each tenant's requests, tokens, dollars and requests in
/// flight are held to its [`Limits`](crate::Limits).
///
/// The counters and the policy are created with the layer and shared by its clones and every
/// service built from them; the setters change configuration only (prices, clock, reservation),
/// which services built afterwards use.
#[derive(Debug, Clone)]
pub struct QuotaLayer {
    policy: Arc<RwLock<Arc<QuotaPolicy>>>,
    backend: Backend,
    in_flight: Arc<InFlight>,
    prices: Arc<PriceTable>,
    clock: Clock,
    completion_reserve: u64,
    max_capture: usize,
}

impl QuotaLayer {
    /// Default of [`completion_reserve`](Self::completion_reserve): 1024 tokens.
    pub const DEFAULT_COMPLETION_RESERVE: u64 = 1024;
    /// Default of [`max_body_capture`](Self::max_body_capture): 1 MiB.
    pub const DEFAULT_MAX_BODY_CAPTURE: usize = 1 << 20;

    /// The tenants of `policy`, counted in this process; prices are HolySheep's
    /// ([`PriceTable::holysheep`]).
    pub fn new(policy: QuotaPolicy) -> Self {
        Self::with_backend(policy, Backend::memory())
    }

    /// The tenants of `policy`, counted fleet-wide in Redis (see [`RedisQuota`] for what
    /// happens when Redis cannot be reached).
    ///
    /// [`RedisQuota`]: crate::RedisQuota
    #[cfg(feature = "redis")]
    pub fn with_redis(policy: QuotaPolicy, redis: crate::RedisQuota) -> Self {
        Self::with_backend(
            policy,
            Backend::Redis(Arc::new(crate::redis::RedisBackend::new(redis))),
        )
    }

    pub(crate) fn with_backend(policy: QuotaPolicy, backend: Backend) -> Self {
        Self {
            policy: Arc::new(RwLock::new(Arc::new(policy))),
            backend,
            in_flight: Arc::default(),
            prices: Arc::new(PriceTable::holysheep()),
            clock: Clock::system(),
            completion_reserve: Self::DEFAULT_COMPLETION_RESERVE,
            max_capture: Self::DEFAULT_MAX_BODY_CAPTURE,
        }
    }

    /// The prices dollars are counted with.
    pub fn prices(mut self, prices: PriceTable) -> Self {
        self.prices = Arc::new(prices);
        self
    }

    /// The completion tokens reserved for a request that sets neither `max_completion_tokens`
    /// nor `max_tokens`.
    pub fn completion_reserve(mut self, tokens: u64) -> Self {
        self.completion_reserve = tokens;
        self
    }

    /// How much of a JSON answer is kept to read its `usage` (past it, only the last bytes,
    /// where `usage` is); SSE lines longer than this stop the reading.
    pub fn max_body_capture(mut self, bytes: usize) -> Self {
        self.max_capture = bytes;
        self
    }

    /// The clock of the windows (for tests: [`Clock::starting_at`] a known date).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// A handle on the layer's policy and counters: reload the policy, read a tenant's usage.
    pub fn handle(&self) -> QuotaHandle {
        QuotaHandle {
            policy: Arc::clone(&self.policy),
            backend: self.backend.clone(),
            clock: self.clock.clone(),
        }
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        Arc::new(Shared {
            policy: Arc::clone(&self.policy),
            backend: self.backend.clone(),
            in_flight: Arc::clone(&self.in_flight),
            prices: Arc::clone(&self.prices),
            clock: self.clock.clone(),
            completion_reserve: self.completion_reserve,
            max_capture: self.max_capture,
        })
    }
}

impl<S> Layer<S> for QuotaLayer {
    type Service = Quota<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Quota::from_shared(inner, self.shared())
    }
}

/// The policy and counters of a [`QuotaLayer`], shared with every service built from it.
#[derive(Debug, Clone)]
pub struct QuotaHandle {
    policy: Arc<RwLock<Arc<QuotaPolicy>>>,
    backend: Backend,
    clock: Clock,
}

impl QuotaHandle {
    /// Replaces the policy: requests decided from now on use the new limits, requests in flight
    /// finish under the old, and the counters carry over (a tenant keeps what it used).
    pub fn set_policy(&self, policy: QuotaPolicy) {
        *self.policy.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(policy);
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<QuotaPolicy> {
        Arc::clone(&self.policy.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// A tenant's limits and what is left of them now (`None`: requests without a namespace).
    pub async fn usage(&self, tenant: Option<&Namespace>) -> TenantUsage {
        let policy = self.policy();
        let name = tenant.map(Namespace::as_str);
        let limits = policy.limits_of(name);
        let tenant: Arc<str> = match tenant {
            Some(ns) => Arc::clone(&ns.0),
            None => Arc::from(QuotaPolicy::ANONYMOUS),
        };
        self.backend
            .usage(&tenant, &limits, self.clock.now_ms())
            .await
    }
}
