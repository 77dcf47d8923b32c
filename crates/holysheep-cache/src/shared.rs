//! State one `Cache` shares with its clones, its response bodies and its spawned tasks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::flight::Flight;
use crate::key::{CacheKey, KeyPolicy};
use crate::store::{CacheStore, StoreError};

/// How often, at most, a failing store (or one Redis node) is logged at warn.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(10);

/// What a [`CacheLayer`](crate::CacheLayer) is configured with (its docs say what each is).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) ttl: Duration,
    pub(crate) max_entry_bytes: usize,
    pub(crate) max_body_bytes: usize,
    pub(crate) upstream: Arc<str>,
    pub(crate) coalesce: bool,
    pub(crate) cache_streams: bool,
    pub(crate) read_ahead: usize,
    pub(crate) finish_timeout: Duration,
    pub(crate) finish_max_bytes: usize,
}

pub(crate) struct Shared {
    pub(crate) store: Arc<dyn CacheStore>,
    pub(crate) policy: Arc<dyn KeyPolicy>,
    pub(crate) settings: Settings,
    pub(crate) flights: Mutex<HashMap<CacheKey, Arc<Flight>>>,
    /// Whether values read from the store are checked before they are served
    /// ([`CacheStore::is_shared`]).
    pub(crate) check_reads: bool,
    /// Fleet coalescing, when configured.
    #[cfg(feature = "redis")]
    pub(crate) fleet: Option<Arc<crate::fleet::Fleet>>,
    invalid: AtomicU64,
    warn: WarnLimiter,
    invalid_warn: WarnLimiter,
}

impl Shared {
    pub(crate) fn new(
        store: Arc<dyn CacheStore>,
        policy: Arc<dyn KeyPolicy>,
        settings: Settings,
    ) -> Self {
        Self {
            check_reads: store.is_shared(),
            store,
            policy,
            settings,
            flights: Mutex::new(HashMap::new()),
            #[cfg(feature = "redis")]
            fleet: None,
            invalid: AtomicU64::new(0),
            warn: WarnLimiter::default(),
            invalid_warn: WarnLimiter::default(),
        }
    }

    pub(crate) fn flights(&self) -> MutexGuard<'_, HashMap<CacheKey, Arc<Flight>>> {
        lock(&self.flights)
    }

    /// Logs a store failure at warn, at most once per [`WARN_EVERY`], counting the ones it skips:
    /// a Redis outage must not flood the log with one line per request.
    pub(crate) fn store_failed(&self, op: &'static str, error: &StoreError) {
        if let Some(suppressed) = self.warn.admit() {
            tracing::warn!(
                store = self.store.kind(),
                op,
                error = %error,
                suppressed,
                "cache store failed; the request is served as a miss"
            );
        } else {
            tracing::debug!(store = self.store.kind(), op, error = %error, "cache store failed");
        }
    }
}

impl Shared {
    /// Counts a value read from the store that is not served, and logs it at warn (at most
    /// once per [`WARN_EVERY`]): a store that holds such values is written by someone else.
    pub(crate) fn invalid_entry(&self, key: &str, why: &'static str) {
        self.invalid.fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = self.invalid_warn.admit() {
            tracing::warn!(
                store = self.store.kind(),
                %key,
                why,
                suppressed,
                "cache entry refused; the request is served as a miss and its answer replaces it"
            );
        }
    }

    pub(crate) fn invalid_entries(&self) -> u64 {
        self.invalid.load(Ordering::Relaxed)
    }
}

/// Admits one log line per [`WARN_EVERY`], counting the ones it holds back.
#[derive(Debug, Default)]
pub(crate) struct WarnLimiter {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl WarnLimiter {
    /// `Some(skipped since the last log)` when this one may be logged.
    pub(crate) fn admit(&self) -> Option<u64> {
        let mut last = lock(&self.last);
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < WARN_EVERY) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

/// Locks a mutex, ignoring poisoning: every critical section here leaves the data consistent,
/// and a panic elsewhere must not wedge the cache.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warn_limiter_admits_once_per_window() {
        let w = WarnLimiter::default();
        assert_eq!(w.admit(), Some(0));
        assert_eq!(w.admit(), None);
        assert_eq!(w.admit(), None);
        *lock(&w.last) = Some(Instant::now() - WARN_EVERY);
        assert_eq!(w.admit(), Some(2));
    }
}
