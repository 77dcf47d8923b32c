//! The [`CacheLayer`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use crate::key::{DefaultKeyPolicy, KeyPolicy};
use crate::service::Cache;
use crate::shared::{Settings, Shared};
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
    settings: Settings,
    #[cfg(feature = "redis")]
    fleet: Option<crate::fleet::FleetCoalescing>,
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
    /// The default of [`read_ahead`](Self::read_ahead): 256 KiB.
    pub const DEFAULT_READ_AHEAD_BYTES: usize = 256 << 10;
    /// The default time bound of [`finish_budget`](Self::finish_budget): 15 s.
    pub const DEFAULT_FINISH_TIMEOUT: Duration = Duration::from_secs(15);
    /// The default bytes bound of [`finish_budget`](Self::finish_budget): 256 KiB.
    pub const DEFAULT_FINISH_MAX_BYTES: usize = 256 << 10;

    /// A layer over `store` with the defaults: TTL 3600 s, entries up to 1 MiB, request bodies
    /// parsed up to 4 MiB, [`DefaultKeyPolicy`], coalescing on, streams cached, reads 256 KiB
    /// ahead of the slowest reader at most, and an answer whose caller went away finished for
    /// the cache within 15 s and 256 KiB.
    pub fn new(store: impl CacheStore) -> Self {
        Self::with_store(Arc::new(store))
    }

    /// A layer over a store already shared as `Arc<dyn CacheStore>` (no second indirection).
    pub fn with_store(store: Arc<dyn CacheStore>) -> Self {
        Self {
            store,
            policy: Arc::new(DefaultKeyPolicy::new()),
            settings: Settings {
                ttl: Self::DEFAULT_TTL,
                max_entry_bytes: Self::DEFAULT_MAX_ENTRY_BYTES,
                max_body_bytes: Self::DEFAULT_MAX_BODY_BYTES,
                upstream: Arc::from(Self::DEFAULT_UPSTREAM),
                coalesce: true,
                cache_streams: true,
                read_ahead: Self::DEFAULT_READ_AHEAD_BYTES,
                finish_timeout: Self::DEFAULT_FINISH_TIMEOUT,
                finish_max_bytes: Self::DEFAULT_FINISH_MAX_BYTES,
            },
            #[cfg(feature = "redis")]
            fleet: None,
        }
    }

    /// Coalesces identical misses across every instance sharing a Redis, not only within this
    /// one: see [`FleetCoalescing`](crate::FleetCoalescing). Needs coalescing on
    /// ([`coalesce`](Self::coalesce)). Default: off.
    #[cfg(feature = "redis")]
    pub fn fleet(mut self, fleet: crate::fleet::FleetCoalescing) -> Self {
        self.fleet = Some(fleet);
        self
    }

    /// How long an entry lives. A request's `Cache-Control: max-age=N` lowers it for the entry
    /// that request writes. A zero TTL stores nothing.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.settings.ttl = ttl;
        self
    }

    /// The largest answer body that is stored; larger answers pass through uncached.
    pub fn max_entry_bytes(mut self, bytes: usize) -> Self {
        self.settings.max_entry_bytes = bytes;
        self
    }

    /// The largest request body that is parsed for a key; larger requests pass through uncached.
    /// (The body is buffered either way: the inner service takes a `Full<Bytes>`; bound request
    /// sizes in front of the cache.)
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.settings.max_body_bytes = bytes;
        self
    }

    /// How keys are derived. Default: [`DefaultKeyPolicy::new`] (canonical scheme).
    pub fn key_policy(mut self, policy: impl KeyPolicy) -> Self {
        self.policy = Arc::new(policy);
        self
    }

    /// The upstream base URL, hashed into canonical keys so two upstreams never share answers.
    pub fn upstream(mut self, base_url: impl AsRef<str>) -> Self {
        self.settings.upstream = Arc::from(base_url.as_ref());
        self
    }

    /// Whether identical misses in flight share one upstream call. Default: on.
    pub fn coalesce(mut self, on: bool) -> Self {
        self.settings.coalesce = on;
        self
    }

    /// Whether streamed (SSE) answers are stored. Default: on. Off, streams still coalesce.
    pub fn cache_streams(mut self, on: bool) -> Self {
        self.settings.cache_streams = on;
        self
    }

    /// How far, in bytes, the upstream read may run ahead of the slowest reader of an answer:
    /// the caller, and each coalesced follower replaying it live. Default: 256 KiB.
    ///
    /// This bounds what one answer buffers, whatever its readers do: when a reader stops
    /// reading, the upstream read waits (backpressure) instead of buffering the rest of the
    /// answer, so a shared answer moves at the pace of its slowest reader. (An answer is also
    /// kept whole, up to [`max_entry_bytes`](Self::max_entry_bytes), while it may still be
    /// stored.) One upstream chunk larger than the bound is let through whole.
    pub fn read_ahead(mut self, bytes: usize) -> Self {
        self.settings.read_ahead = bytes.max(1);
        self
    }

    /// How long, and how many more bytes, an answer is read after its caller (and every
    /// follower) went away, to finish and store it. Default: 15 s and 256 KiB.
    ///
    /// The tokens are paid for either way, so a streamed answer whose caller hung up is still
    /// read to its end and stored, but only within this budget, and only while no other
    /// request waits for an upstream slot: the body holds one of the pool limit's slots while it
    /// is read (`PoolLimitLayer` says whether others wait, and counts the slot as detached
    /// meanwhile). Past the budget, or as soon as a request waits, the upstream body is dropped
    /// and its slot freed; nothing is stored. A zero budget never reads on.
    pub fn finish_budget(mut self, time: Duration, bytes: usize) -> Self {
        self.settings.finish_timeout = time;
        self.settings.finish_max_bytes = bytes;
        self
    }
}

#[cfg(test)]
impl CacheLayer {
    /// The state a service built from this layer shares.
    pub(crate) fn shared_for_tests(&self) -> Arc<Shared> {
        Arc::new(self.shared())
    }
}

impl fmt::Debug for CacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("CacheLayer");
        d.field("store", &self.store.kind())
            .field("settings", &self.settings);
        #[cfg(feature = "redis")]
        d.field("fleet", &self.fleet);
        d.finish_non_exhaustive()
    }
}

impl<S> Layer<S> for CacheLayer {
    type Service = Cache<S>;

    fn layer(&self, inner: S) -> Cache<S> {
        Cache::from_parts(inner, Arc::new(self.shared()))
    }
}

impl CacheLayer {
    fn shared(&self) -> Shared {
        #[allow(unused_mut)]
        let mut shared = Shared::new(
            Arc::clone(&self.store),
            Arc::clone(&self.policy),
            self.settings.clone(),
        );
        #[cfg(feature = "redis")]
        {
            shared.fleet = self
                .fleet
                .as_ref()
                .map(crate::fleet::FleetCoalescing::build);
        }
        shared
    }
}
