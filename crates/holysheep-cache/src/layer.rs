//! The [`CacheLayer`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use crate::key::{DefaultKeyPolicy, KeyPolicy};
use crate::service::Cache;
use crate::shared::Shared;
use crate::store::CacheStore;

/// Builds [`Cache`] services. Holds configuration only; each service it builds gets its own
/// table of in-flight requests.
///
/// ```
/// use std::time::Duration;
/// use holysheep_cache::{CacheLayer, DefaultKeyPolicy, MemoryStore};
///
/// let layer = CacheLayer::new(MemoryStore::new(64 << 20))
///     .ttl(Duration::from_secs(7200))
///     .upstream("https://api.holysheep.ai/v1")
///     .key_policy(DefaultKeyPolicy::python_compat())
///     .max_entry_bytes(512 << 10)
///     .coalesce(true)
///     .cache_streams(true);
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct CacheLayer {
    store: Arc<dyn CacheStore>,
    policy: Arc<dyn KeyPolicy>,
    ttl: Duration,
    max_entry_bytes: usize,
    max_body_bytes: usize,
    upstream: Arc<str>,
    coalesce: bool,
    cache_streams: bool,
}

impl CacheLayer {
    /// The default entry TTL: 3600 s, the reference Python client's.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
    /// The default bound of one entry's body: 1 MiB.
    pub const DEFAULT_MAX_ENTRY_BYTES: usize = 1 << 20;
    /// The default bound of a request body the cache parses: 4 MiB.
    pub const DEFAULT_MAX_BODY_BYTES: usize = 4 << 20;
    /// The default upstream base URL hashed into keys.
    pub const DEFAULT_UPSTREAM: &'static str = holysheep_core::DEFAULT_BASE_URL;

    /// A layer over `store` with the defaults: TTL 3600 s, entries up to 1 MiB, request bodies
    /// parsed up to 4 MiB, [`DefaultKeyPolicy`], coalescing on, streams cached.
    pub fn new(store: impl CacheStore) -> Self {
        Self::with_store(Arc::new(store))
    }

    /// A layer over a store already shared as `Arc<dyn CacheStore>` (no second indirection).
    pub fn with_store(store: Arc<dyn CacheStore>) -> Self {
        Self {
            store,
            policy: Arc::new(DefaultKeyPolicy::new()),
            ttl: Self::DEFAULT_TTL,
            max_entry_bytes: Self::DEFAULT_MAX_ENTRY_BYTES,
            max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
            upstream: Arc::from(Self::DEFAULT_UPSTREAM),
            coalesce: true,
            cache_streams: true,
        }
    }

    /// How long an entry lives. A request's `Cache-Control: max-age=N` lowers it for the entry
    /// that request writes. A zero TTL stores nothing.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The largest answer body that is stored; larger answers pass through uncached.
    pub fn max_entry_bytes(mut self, bytes: usize) -> Self {
        self.max_entry_bytes = bytes;
        self
    }

    /// The largest request body that is parsed for a key; larger requests pass through uncached.
    /// (The body is buffered either way: the inner service takes a `Full<Bytes>`; bound request
    /// sizes in front of the cache.)
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// How keys are derived. Default: [`DefaultKeyPolicy::new`] (canonical scheme).
    pub fn key_policy(mut self, policy: impl KeyPolicy) -> Self {
        self.policy = Arc::new(policy);
        self
    }

    /// The upstream base URL, hashed into canonical keys so two upstreams never share answers.
    pub fn upstream(mut self, base_url: impl AsRef<str>) -> Self {
        self.upstream = Arc::from(base_url.as_ref());
        self
    }

    /// Whether identical misses in flight share one upstream call. Default: on.
    pub fn coalesce(mut self, on: bool) -> Self {
        self.coalesce = on;
        self
    }

    /// Whether streamed (SSE) answers are stored. Default: on. Off, streams still coalesce.
    pub fn cache_streams(mut self, on: bool) -> Self {
        self.cache_streams = on;
        self
    }
}

impl fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheLayer")
            .field("store", &self.store.kind())
            .field("ttl", &self.ttl)
            .field("max_entry_bytes", &self.max_entry_bytes)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("upstream", &self.upstream)
            .field("coalesce", &self.coalesce)
            .field("cache_streams", &self.cache_streams)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = Cache<S>;

    fn layer(&self, inner: S) -> Cache<S> {
        let shared = Shared::new(
            Arc::clone(&self.store),
            Arc::clone(&self.policy),
            self.ttl,
            self.max_entry_bytes,
            self.max_body_bytes,
            Arc::clone(&self.upstream),
            self.coalesce,
            self.cache_streams,
        );
        Cache::from_parts(inner, Arc::new(shared))
    }
}
