//! Requests of each tenant in flight on this instance, for [`Limits::max_concurrent`].
//!
//! [`Limits::max_concurrent`]: crate::Limits::max_concurrent

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Debug, Default)]
pub(crate) struct InFlight {
    tenants: Mutex<HashMap<Arc<str>, Arc<AtomicU32>>>,
}

/// One request in flight; dropping it (when the response body ends) frees its place.
#[derive(Debug)]
pub(crate) struct InFlightGuard {
    count: Arc<AtomicU32>,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl InFlight {
    /// A place among the tenant's `max` requests in flight, if one is free.
    pub(crate) fn try_acquire(&self, tenant: &Arc<str>, max: u32) -> Option<InFlightGuard> {
        let count = {
            let mut map = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(map.entry(Arc::clone(tenant)).or_default())
        };
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| InFlightGuard { count })
    }
}
