//! Extensions the layers leave on requests and responses for each other.
//!
//! The layers do not depend on one another; they meet here. The gateway (or your app) puts
//! [`RequestModel`] and [`Namespace`] on requests; `CacheLayer` puts [`CacheOutcome`] (and a copy
//! of [`RequestModel`]) on responses; `SemanticCacheLayer` puts [`SemanticHit`] beside
//! `CacheOutcome::Hit` on its hits; `RetryLayer` puts [`Attempts`] on responses; `MetricsLayer`
//! reads them all. `PoolLimitLayer` puts [`PoolSlot`] on responses, which `CacheLayer` reads.
//! `holysheep-router` puts [`Fallback`] on answers a fallback model served, which `CacheLayer`
//! reads.

use std::sync::Arc;

/// How the cache served a response. A response extension set by `CacheLayer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheOutcome {
    /// Answered from the cache; nothing went upstream.
    Hit,
    /// Not in the cache; the answer came from upstream (and may have been stored).
    Miss,
    /// The cache was not consulted (`Cache-Control: no-store`, an uncacheable request, …).
    Bypass,
    /// An identical request was already in flight; this answer shares its upstream call.
    Coalesced,
}

impl CacheOutcome {
    /// A short lower-case name, fit for a metric label: `hit`, `miss`, `bypass`, `coalesced`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
            Self::Coalesced => "coalesced",
        }
    }

    /// Whether the answer cost no upstream call of its own (a hit or a coalesced follower).
    pub fn is_saved(self) -> bool {
        matches!(self, Self::Hit | Self::Coalesced)
    }
}

impl std::fmt::Display for CacheOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cache hit found by meaning rather than by exact key: a response extension a semantic cache
/// sets **together with** [`CacheOutcome::Hit`], with how similar the stored question was.
///
/// `CacheOutcome` stays the coarse answer every layer already matches on (a semantic hit is a
/// hit: nothing went upstream); this extension says which kind of hit, so `MetricsLayer` counts
/// its saving as `via="semantic"` instead of `via="exact"` and records the similarity on the
/// request's span.
///
/// ```
/// use holysheep_core::signal::{CacheOutcome, SemanticHit};
///
/// let mut response = http::Response::new(());
/// response.extensions_mut().insert(CacheOutcome::Hit);
/// response.extensions_mut().insert(SemanticHit { similarity: 0.97 });
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SemanticHit {
    /// Cosine similarity of the request to the stored question it was answered for (0 to 1).
    pub similarity: f32,
}

/// How many upstream attempts a response took (1 = the first try answered). A response extension
/// set by `RetryLayer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Attempts(pub u32);

impl Attempts {
    /// The number of retries: attempts beyond the first.
    pub fn retries(self) -> u32 {
        self.0.saturating_sub(1)
    }
}

/// The model a request asked for. A request extension set by whoever parsed the body (the
/// gateway), and a response extension set by `CacheLayer`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestModel(pub Arc<str>);

impl RequestModel {
    /// The model's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A request answered by another model than the one it asked for: a response extension set by
/// `holysheep-router` when a model's fallback served it (the answer's own `model` field says
/// what the upstream gave). `CacheLayer` does not store such an answer under the asked model's
/// key unless told to (`CacheLayer::cache_fallbacks`); `MetricsLayer` may label by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fallback {
    /// The model the client asked for.
    pub from: Arc<str>,
    /// The model that served it.
    pub to: Arc<str>,
}

/// The tenant a request belongs to. A request extension set by the gateway (one per client key);
/// `CacheLayer` hashes it into every key, so one tenant never reads another's answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace(pub Arc<str>);

impl Namespace {
    /// The namespace's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The upstream pool slot a response's body holds until it ends. A response extension set by
/// `PoolLimitLayer`, read by `CacheLayer`.
///
/// When a caller goes away mid-answer, the cache may read the rest of the answer to store it.
/// It does so only within a budget, and only while no other request waits for a slot of the
/// pool ([`is_contended`](Self::is_contended)); meanwhile it holds a [`DetachedSlot`], which the
/// pool counts, so that a slot held for no caller shows in metrics instead of hiding behind an
/// in-flight gauge that already went down.
#[derive(Clone)]
pub struct PoolSlot {
    pool: Arc<dyn SlotPool>,
}

/// The pool behind a [`PoolSlot`]; implemented by pool limits.
pub trait SlotPool: Send + Sync + 'static {
    /// Whether a request is waiting for a slot of this pool now.
    fn is_contended(&self) -> bool;

    /// A body holding a slot is now read for no caller (`true`), or no longer is (`false`).
    fn set_detached(&self, detached: bool);
}

impl PoolSlot {
    /// The slot of a body that holds one of `pool`'s slots.
    pub fn new(pool: Arc<dyn SlotPool>) -> Self {
        Self { pool }
    }

    /// Whether a request is waiting for a slot of the pool now.
    pub fn is_contended(&self) -> bool {
        self.pool.is_contended()
    }

    /// Counts the slot as held for no caller until the guard is dropped.
    pub fn detach(&self) -> DetachedSlot {
        self.pool.set_detached(true);
        DetachedSlot {
            pool: Arc::clone(&self.pool),
        }
    }
}

impl std::fmt::Debug for PoolSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolSlot")
            .field("contended", &self.is_contended())
            .finish()
    }
}

/// A slot counted as held for no caller, from [`PoolSlot::detach`] until dropped.
#[must_use = "the slot counts as detached only while the guard lives"]
pub struct DetachedSlot {
    pool: Arc<dyn SlotPool>,
}

impl Drop for DetachedSlot {
    fn drop(&mut self) {
        self.pool.set_detached(false);
    }
}

impl std::fmt::Debug for DetachedSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetachedSlot").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    #[derive(Default)]
    struct Pool {
        waiting: AtomicBool,
        detached: AtomicUsize,
    }

    impl SlotPool for Pool {
        fn is_contended(&self) -> bool {
            self.waiting.load(Ordering::Relaxed)
        }

        fn set_detached(&self, detached: bool) {
            if detached {
                self.detached.fetch_add(1, Ordering::Relaxed);
            } else {
                self.detached.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    #[test]
    fn a_detached_slot_is_counted_while_its_guard_lives() {
        let pool = Arc::new(Pool::default());
        let slot = PoolSlot::new(pool.clone());
        assert!(!slot.is_contended());
        pool.waiting.store(true, Ordering::Relaxed);
        assert!(slot.clone().is_contended());
        let guard = slot.detach();
        assert_eq!(pool.detached.load(Ordering::Relaxed), 1);
        drop(guard);
        assert_eq!(pool.detached.load(Ordering::Relaxed), 0);
    }
}
