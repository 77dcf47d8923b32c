//! Extensions the layers leave on requests and responses for each other.
//!
//! The layers do not depend on one another; they meet here. The gateway (or your app) puts
//! [`RequestModel`] and [`Namespace`] on requests; `CacheLayer` puts [`CacheOutcome`] (and a copy
//! of [`RequestModel`]) on responses; `SemanticCacheLayer` puts [`SemanticHit`] beside
//! `CacheOutcome::Hit` on its hits; `RetryLayer` puts [`Attempts`] on responses; `MetricsLayer`
//! reads them all.

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
