//! Where the counters live: this process, or (with the `redis` feature) Redis.

use std::sync::Arc;

use crate::decision::{Check, Verdict};
use crate::limits::Limits;
use crate::memory::MemoryBackend;
use crate::usage::TenantUsage;

/// The counters of one layer (and its clones).
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    Memory(Arc<MemoryBackend>),
    #[cfg(feature = "redis")]
    Redis(Arc<crate::redis::RedisBackend>),
}

impl Backend {
    pub(crate) fn memory() -> Self {
        Self::Memory(Arc::default())
    }

    /// Decides on a request and charges it when it passes.
    pub(crate) async fn check(&self, tenant: &Arc<str>, limits: &Limits, check: Check) -> Verdict {
        match self {
            Self::Memory(m) => m.check(tenant, limits, &check),
            #[cfg(feature = "redis")]
            Self::Redis(r) => r.check(tenant, limits, check).await,
        }
    }

    /// Reconciles a passed request (never waits: a remote backend does it in the background).
    pub(crate) fn settle(
        &self,
        tenant: &Arc<str>,
        limits: &Limits,
        local: bool,
        token_delta: i64,
        usd: f64,
        now_ms: f64,
    ) {
        match self {
            Self::Memory(m) => {
                let _ = local;
                m.settle(tenant, limits, token_delta, usd, now_ms)
            }
            #[cfg(feature = "redis")]
            Self::Redis(r) => r.settle(tenant, limits, local, token_delta, usd, now_ms),
        }
    }

    /// The tenant's figures now.
    pub(crate) async fn usage(
        &self,
        tenant: &Arc<str>,
        limits: &Limits,
        now_ms: f64,
    ) -> TenantUsage {
        match self {
            Self::Memory(m) => m.usage(tenant, limits, now_ms),
            #[cfg(feature = "redis")]
            Self::Redis(r) => r.usage(tenant, limits, now_ms).await,
        }
    }
}
