//! Where cached answers live: the [`CacheStore`] trait and the stores that ship with the crate
//! (listed in the crate docs, under "Stores").
//!
//! A store is a soft dependency: a failing or slow backend answers `Err(StoreError)` promptly and the
//! cache counts it as a miss; it never blocks or panics.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

mod memory;
#[cfg(feature = "redis")]
mod redis;
mod tiered;

pub use self::memory::MemoryStore;
#[cfg(feature = "redis")]
pub use self::redis::RedisStore;
pub use self::tiered::TieredStore;

/// A boxed, `Send` future borrowing from the store (re-exported from `futures_util`).
pub type BoxFuture<'a, T> = futures_util::future::BoxFuture<'a, T>;

/// A stored value and the time it has left to live, where the store knows it
/// ([`CacheStore::get_with_ttl`]).
pub type ValueTtl = (Bytes, Option<Duration>);

/// Async byte store with a per-entry time to live.
///
/// Object-safe: the gateway picks a store at run time and holds it as `Arc<dyn CacheStore>`.
pub trait CacheStore: Send + Sync + 'static {
    /// Looks up `key`; `Ok(None)` is a miss (absent or expired).
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>>;

    /// Stores `value` under `key` for `ttl`, replacing any previous value.
    ///
    /// A zero `ttl` stores nothing. Backends with a coarser clock round the TTL up
    /// (Redis: whole seconds, at least one).
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// A short name for logs and metrics: `"memory"`, `"redis"`, `"redis-cluster"`, `"tiered"`.
    fn kind(&self) -> &'static str;

    /// A cheap health probe for readiness checks (memory: always `Ok`).
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Looks up `key` together with the time the value has left to live, where the store
    /// knows it (`None`: unknown, or no expiry).
    ///
    /// [`TieredStore`] reads its back store with it, so that a copy in the front never outlives
    /// the entry it copies. The default asks [`get`](Self::get) and knows no TTL.
    fn get_with_ttl<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<ValueTtl>, StoreError>> {
        Box::pin(async move { Ok(self.get(key).await?.map(|value| (value, None))) })
    }

    /// Whether values read from this store may have been written by someone else than the
    /// caches of this process: another gateway instance, another program sharing a Redis.
    ///
    /// The cache checks every value read from a shared store as it checks an answer before
    /// storing it, and serves only good answers (see the crate docs, "Stored values"); values of
    /// a store that is not shared were checked before they were put. Default: `true`, the safe
    /// answer for a store the cache cannot see into.
    fn is_shared(&self) -> bool {
        true
    }
}

impl<T: CacheStore + ?Sized> CacheStore for Arc<T> {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        (**self).get(key)
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).put(key, value, ttl)
    }

    fn kind(&self) -> &'static str {
        (**self).kind()
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        (**self).ping()
    }

    fn get_with_ttl<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<ValueTtl>, StoreError>> {
        (**self).get_with_ttl(key)
    }

    fn is_shared(&self) -> bool {
        (**self).is_shared()
    }
}

impl<T: CacheStore + ?Sized> CacheStore for Box<T> {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        (**self).get(key)
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        (**self).put(key, value, ttl)
    }

    fn kind(&self) -> &'static str {
        (**self).kind()
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        (**self).ping()
    }

    fn get_with_ttl<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<ValueTtl>, StoreError>> {
        (**self).get_with_ttl(key)
    }

    fn is_shared(&self) -> bool {
        (**self).is_shared()
    }
}

/// What went wrong in a [`CacheStore`] operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The backend did not answer within the store's time bound.
    Timeout,
    /// The backend cannot be reached right now (down, connecting, connection lost).
    Unavailable,
    /// The backend answered with an error (e.g. a Redis error reply, cluster misconfiguration).
    Backend,
    /// The store was configured wrongly (e.g. a malformed Redis URL).
    Config,
}

impl StoreErrorKind {
    fn as_str(self) -> &'static str {
        match self {
            StoreErrorKind::Timeout => "cache store timed out",
            StoreErrorKind::Unavailable => "cache store unavailable",
            StoreErrorKind::Backend => "cache store error",
            StoreErrorKind::Config => "cache store misconfigured",
        }
    }
}

/// The error of a [`CacheStore`] operation: a kind plus, where known, the underlying cause.
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl StoreError {
    /// An error of `kind` caused by `source`.
    pub fn new(kind: StoreErrorKind, source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        StoreError {
            kind,
            source: Some(source.into()),
        }
    }

    /// The backend did not answer within `bound`.
    pub fn timeout(bound: Duration) -> Self {
        StoreError::new(
            StoreErrorKind::Timeout,
            format!("no answer within {bound:?}"),
        )
    }

    /// The backend cannot be reached, because of `source`.
    pub fn unavailable(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        StoreError::new(StoreErrorKind::Unavailable, source)
    }

    /// The backend answered with an error.
    pub fn backend(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        StoreError::new(StoreErrorKind::Backend, source)
    }

    /// The store was configured wrongly.
    pub fn config(source: impl Into<Box<dyn StdError + Send + Sync>>) -> Self {
        StoreError::new(StoreErrorKind::Config, source)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// `true` if the backend did not answer in time.
    pub fn is_timeout(&self) -> bool {
        self.kind == StoreErrorKind::Timeout
    }

    /// `true` if the backend could not be reached (down, connecting, connection lost).
    pub fn is_unavailable(&self) -> bool {
        self.kind == StoreErrorKind::Unavailable
    }

    /// `true` if the backend answered with an error.
    pub fn is_backend(&self) -> bool {
        self.kind == StoreErrorKind::Backend
    }

    /// `true` if the store was configured wrongly.
    pub fn is_config(&self) -> bool {
        self.kind == StoreErrorKind::Config
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {}", self.kind.as_str(), source),
            None => f.write_str(self.kind.as_str()),
        }
    }
}

impl StdError for StoreError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn StdError + 'static))
    }
}

/// A store whose every operation fails, as a Redis that is down does: for tests of the paths
/// that must treat a failing store as a miss.
#[cfg(test)]
pub(crate) struct DownStore;

#[cfg(test)]
impl CacheStore for DownStore {
    fn get<'a>(&'a self, _key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        Box::pin(async { Err(StoreError::unavailable("down")) })
    }

    fn put<'a>(
        &'a self,
        _key: &'a str,
        _value: Bytes,
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Err(StoreError::unavailable("down")) })
    }

    fn kind(&self) -> &'static str {
        "down"
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Err(StoreError::unavailable("down")) })
    }
}
