//! The in-process backend: one [`TenantState`] per tenant behind its own mutex.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::decision::{Check, Verdict};
use crate::gcra::TenantState;
use crate::limits::Limits;
use crate::usage::TenantUsage;

/// Tenants' counters in this process. A read lock finds a tenant's state (a write lock only
/// the first time a tenant is seen), and a mutex per tenant keeps each check atomic without
/// making tenants wait for each other.
#[derive(Debug, Default)]
pub(crate) struct MemoryBackend {
    tenants: RwLock<HashMap<Arc<str>, Arc<Mutex<TenantState>>>>,
}

impl MemoryBackend {
    /// Runs `f` on the tenant's state, locked. A known tenant's state is used under the map's
    /// read lock (no handle cloned); the write lock is taken only to add a tenant.
    fn with_state<R>(&self, tenant: &Arc<str>, f: impl FnOnce(&mut TenantState) -> R) -> R {
        {
            let map = self.tenants.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(state) = map.get(tenant) {
                return f(&mut state.lock().unwrap_or_else(PoisonError::into_inner));
            }
        }
        let state = {
            let mut map = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(map.entry(Arc::clone(tenant)).or_default())
        };
        f(&mut state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn check(&self, tenant: &Arc<str>, limits: &Limits, check: &Check) -> Verdict {
        self.with_state(tenant, |state| state.check(limits, check))
    }

    pub(crate) fn settle(
        &self,
        tenant: &Arc<str>,
        limits: &Limits,
        token_delta: i64,
        usd: f64,
        now_ms: f64,
    ) {
        self.with_state(tenant, |state| {
            state.settle(limits, token_delta, usd, now_ms);
        });
    }

    pub(crate) fn usage(&self, tenant: &Arc<str>, limits: &Limits, now_ms: f64) -> TenantUsage {
        let state = self.with_state(tenant, |state| *state);
        TenantUsage::from_state(&state, limits, now_ms)
    }
}
