//! In-process store: moka, bounded by total bytes, with a TTL per entry.

use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::Expiry;
use moka::future::Cache;

use super::{BoxFuture, CacheStore, StoreError, ValueTtl};

/// Default bound of a [`MemoryStore`]: 256 MiB.
const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// Bookkeeping bytes counted per entry on top of key and value: what moka and this store keep
/// per entry besides them (its node, the access and write order lists, the expiry timer, the
/// key's second copy as its hash key; about 365 bytes measured by `tests/memory_bound.rs`), so
/// the bound is the heap the cache really holds and a flood of tiny entries is bounded too.
const ENTRY_OVERHEAD: usize = 400;

/// Longest TTL kept; moka computes deadlines as `Instant + ttl`, which must not overflow.
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

#[derive(Clone)]
struct Entry {
    value: Bytes,
    ttl: Duration,
    /// When it was put: with `ttl`, the time it has left.
    at: Instant,
}

/// Each entry lives for the TTL it was put with; a later put of the same key restarts the clock.
struct PerEntryTtl;

impl Expiry<String, Entry> for PerEntryTtl {
    fn expire_after_create(&self, _key: &String, entry: &Entry, _at: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        entry: &Entry,
        _at: Instant,
        _remaining: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// An in-process [`CacheStore`] on a [`moka`] cache, bounded by the heap its entries hold (keys,
/// values and a measured allowance for the bookkeeping of each), with a TTL per entry.
///
/// Eviction is TinyLFU (frequently asked answers survive a scan of one-off requests). Cloning is
/// cheap and clones share the entries.
///
/// ```
/// use std::time::Duration;
/// use holysheep_cache::{CacheStore, MemoryStore};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let store = MemoryStore::new(64 * 1024 * 1024);
/// store.put("k", "answer".into(), Duration::from_secs(60)).await.unwrap();
/// assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"answer"[..]));
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<String, Entry>,
    max_bytes: u64,
}

impl MemoryStore {
    /// A store holding at most about `max_bytes` of heap: keys, values and 400 bytes of
    /// bookkeeping per entry.
    pub fn new(max_bytes: u64) -> Self {
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, entry: &Entry| {
                let weight = key.len() + entry.value.len() + ENTRY_OVERHEAD;
                u32::try_from(weight).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .build();
        MemoryStore { cache, max_bytes }
    }

    /// The configured bound in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The bytes currently held, as weighed (approximate until pending maintenance has run).
    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }

    /// The number of entries currently held (approximate until pending maintenance has run).
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Runs moka's pending maintenance (evictions, expirations) now instead of lazily; for
    /// metrics and tests that read [`weighted_size`](Self::weighted_size).
    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }
}

impl Default for MemoryStore {
    /// A store bounded by 256 MiB.
    fn default() -> Self {
        MemoryStore::new(DEFAULT_MAX_BYTES)
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_bytes", &self.max_bytes)
            .field("weighted_size", &self.cache.weighted_size())
            .field("entry_count", &self.cache.entry_count())
            .finish()
    }
}

impl CacheStore for MemoryStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        Box::pin(async move { Ok(self.cache.get(key).await.map(|entry| entry.value)) })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if ttl.is_zero() {
                // Nothing to keep; also drop an older value so a zero TTL never serves stale data.
                self.cache.invalidate(key).await;
                return Ok(());
            }
            let entry = Entry {
                value,
                ttl: ttl.min(MAX_TTL),
                at: Instant::now(),
            };
            self.cache.insert(key.to_owned(), entry).await;
            Ok(())
        })
    }

    fn kind(&self) -> &'static str {
        "memory"
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }

    fn get_with_ttl<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<ValueTtl>, StoreError>> {
        Box::pin(async move {
            Ok(self.cache.get(key).await.map(|entry| {
                let left = entry.ttl.saturating_sub(entry.at.elapsed());
                (entry.value, Some(left))
            }))
        })
    }

    /// Only this process writes to it, and the cache checks answers before it puts them.
    fn is_shared(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn bytes(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[tokio::test]
    async fn hit_after_put_and_miss_otherwise() {
        let store = MemoryStore::default();
        assert_eq!(store.kind(), "memory");
        assert!(store.ping().await.is_ok());
        assert_eq!(store.get("k").await.unwrap(), None);
        store
            .put("k", Bytes::from_static(b"v1"), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"v1"[..]));
        store
            .put("k", Bytes::from_static(b"v2"), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"v2"[..]));
        assert_eq!(store.get("other").await.unwrap(), None);
    }

    #[tokio::test]
    async fn works_behind_a_dyn_arc() {
        let store: Arc<dyn CacheStore> = Arc::new(MemoryStore::default());
        store
            .put("k", Bytes::from_static(b"v"), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
        assert_eq!(store.kind(), "memory");
    }

    #[tokio::test]
    async fn entries_expire_after_their_own_ttl() {
        let store = MemoryStore::default();
        store
            .put(
                "short",
                Bytes::from_static(b"s"),
                Duration::from_millis(200),
            )
            .await
            .unwrap();
        store
            .put("long", Bytes::from_static(b"l"), Duration::from_secs(60))
            .await
            .unwrap();
        assert!(store.get("short").await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(store.get("short").await.unwrap(), None);
        assert!(store.get("long").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn reports_the_time_an_entry_has_left() {
        let store = MemoryStore::default();
        assert!(!store.is_shared());
        store
            .put("k", Bytes::from_static(b"v"), Duration::from_secs(60))
            .await
            .unwrap();
        let (value, left) = store.get_with_ttl("k").await.unwrap().unwrap();
        assert_eq!(value, "v");
        let left = left.expect("a memory entry knows its TTL");
        assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(50));
        assert_eq!(store.get_with_ttl("missing").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_new_put_restarts_the_ttl() {
        let store = MemoryStore::default();
        store
            .put("k", Bytes::from_static(b"old"), Duration::from_millis(200))
            .await
            .unwrap();
        store
            .put("k", Bytes::from_static(b"new"), Duration::from_secs(60))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(store.get("k").await.unwrap().as_deref(), Some(&b"new"[..]));
    }

    #[tokio::test]
    async fn zero_ttl_stores_nothing_and_drops_the_old_value() {
        let store = MemoryStore::default();
        store
            .put("k", Bytes::from_static(b"v"), Duration::from_secs(60))
            .await
            .unwrap();
        store
            .put("k", Bytes::from_static(b"w"), Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(store.get("k").await.unwrap(), None);
    }

    #[tokio::test]
    async fn huge_ttl_is_clamped_not_a_panic() {
        let store = MemoryStore::default();
        store
            .put("k", Bytes::from_static(b"v"), Duration::MAX)
            .await
            .unwrap();
        assert!(store.get("k").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn total_bytes_stay_within_the_bound() {
        let max = 20_000;
        let store = MemoryStore::new(max);
        assert_eq!(store.max_bytes(), max);
        for i in 0..200 {
            store
                .put(&format!("key-{i}"), bytes(1_000), Duration::from_secs(60))
                .await
                .unwrap();
        }
        store.run_pending_tasks().await;
        assert!(store.weighted_size() <= max, "{store:?}");
        assert!(store.entry_count() <= max / 1_000, "{store:?}");
        assert!(store.entry_count() > 0, "{store:?}");
    }

    #[tokio::test]
    async fn a_value_larger_than_the_bound_is_not_kept() {
        let store = MemoryStore::new(1_000);
        store
            .put("big", bytes(10_000), Duration::from_secs(60))
            .await
            .unwrap();
        store.run_pending_tasks().await;
        assert_eq!(store.get("big").await.unwrap(), None);
        assert!(store.weighted_size() <= 1_000);
    }
}
