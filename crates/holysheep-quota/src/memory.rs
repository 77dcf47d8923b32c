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
    fn state(&self, tenant: &Arc<str>) -> Arc<Mutex<TenantState>> {
        if let Some(state) = self
            .tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tenant)
        {
            return Arc::clone(state);
        }
        let mut map = self.tenants.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(map.entry(Arc::clone(tenant)).or_default())
    }

    pub(crate) fn check(&self, tenant: &Arc<str>, limits: &Limits, check: &Check) -> Verdict {
        let state = self.state(tenant);
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        state.check(limits, check)
    }

    pub(crate) fn settle(
        &self,
        tenant: &Arc<str>,
        limits: &Limits,
        token_delta: i64,
        usd: f64,
        now_ms: f64,
    ) {
        let state = self.state(tenant);
        let mut state = state.lock().unwrap_or_else(PoisonError::into_inner);
        state.settle(limits, token_delta, usd, now_ms);
    }

    pub(crate) fn usage(&self, tenant: &Arc<str>, limits: &Limits, now_ms: f64) -> TenantUsage {
        let state = self.state(tenant);
        let state = *state.lock().unwrap_or_else(PoisonError::into_inner);
        TenantUsage::from_state(&state, limits, now_ms)
    }
}
