//! A fast front store in front of a shared back store.

use std::time::Duration;

use bytes::Bytes;

use super::{BoxFuture, CacheStore, StoreError, ValueTtl};

/// Two stores in tiers, usually a [`MemoryStore`](super::MemoryStore) in front of a
/// `RedisStore` (cargo feature `redis`): hot answers come from process memory, every gateway
/// instance shares the back.
///
/// - `get` asks the front, then the back; a back hit is copied into the front.
/// - `put` writes both (concurrently).
///
/// A copy in the front never outlives its entry in the back: it is made with the time the back
/// entry has left ([`CacheStore::get_with_ttl`]; Redis reports it with `PTTL`), and never kept
/// longer than [`front_ttl`](Self::front_ttl) (default 10 s). That bound is also the **most an
/// instance's answers can lag behind a shared refresh**: when another instance writes a new
/// answer for a key (a `Cache-Control: no-cache` request), this instance keeps serving its
/// front copy of the old one for at most `front_ttl`, then reads the new one from the back.
/// With a back that cannot report TTLs, the front copy may outlive a back entry by at most
/// `front_ttl` as well. A zero `front_ttl` keeps nothing in the front: every lookup asks the
/// back.
#[derive(Debug, Clone)]
pub struct TieredStore<F, B> {
    front: F,
    back: B,
    front_ttl: Duration,
}

impl<F, B> TieredStore<F, B> {
    /// Default of [`front_ttl`](Self::front_ttl), the longest an entry is kept in the front
    /// store: 10 s.
    pub const DEFAULT_FRONT_TTL: Duration = Duration::from_secs(10);
}

impl<F: CacheStore, B: CacheStore> TieredStore<F, B> {
    /// `front` in front of `back`.
    pub fn new(front: F, back: B) -> Self {
        TieredStore {
            front,
            back,
            front_ttl: Self::DEFAULT_FRONT_TTL,
        }
    }

    /// Keeps entries in the front store for at most `ttl` (default 10 s): the bound on how
    /// stale this instance's answers can be after another instance refreshed an entry in the
    /// back (see the type's docs).
    pub fn front_ttl(mut self, ttl: Duration) -> Self {
        self.front_ttl = ttl;
        self
    }

    /// The front store.
    pub fn front(&self) -> &F {
        &self.front
    }

    /// The back store.
    pub fn back(&self) -> &B {
        &self.back
    }
}

impl<F: CacheStore, B: CacheStore> TieredStore<F, B> {
    /// A back lookup, copied into the front for no longer than the back entry has left.
    async fn get_back(&self, key: &str) -> Result<Option<ValueTtl>, StoreError> {
        let hit = self.back.get_with_ttl(key).await?;
        if let Some((value, left)) = &hit {
            let ttl = left.map_or(self.front_ttl, |left| left.min(self.front_ttl));
            if !ttl.is_zero()
                && let Err(error) = self.front.put(key, value.clone(), ttl).await
            {
                tracing::debug!(%error, store = self.front.kind(), "cache front fill failed");
            }
        }
        Ok(hit)
    }
}

impl<F: CacheStore, B: CacheStore> CacheStore for TieredStore<F, B> {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        Box::pin(async move {
            // A failing front is only a slower path, never a failed lookup.
            if let Ok(Some(hit)) = self.front.get(key).await {
                return Ok(Some(hit));
            }
            Ok(self.get_back(key).await?.map(|(value, _)| value))
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let front_ttl = ttl.min(self.front_ttl);
            let (front, back) = futures_util::future::join(
                self.front.put(key, value.clone(), front_ttl),
                self.back.put(key, value, ttl),
            )
            .await;
            back.and(front)
        })
    }

    fn kind(&self) -> &'static str {
        "tiered"
    }

    fn get_with_ttl<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<ValueTtl>, StoreError>> {
        Box::pin(async move {
            if let Ok(Some(hit)) = self.front.get_with_ttl(key).await {
                return Ok(Some(hit));
            }
            self.get_back(key).await
        })
    }

    fn is_shared(&self) -> bool {
        // A front copy of a back entry holds what the back held.
        self.front.is_shared() || self.back.is_shared()
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.front.ping().await?;
            self.back.ping().await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DownStore, MemoryStore, StoreErrorKind};

    fn tiered() -> TieredStore<MemoryStore, MemoryStore> {
        TieredStore::new(MemoryStore::default(), MemoryStore::default())
    }

    const V: Bytes = Bytes::from_static(b"answer");

    #[tokio::test]
    async fn put_writes_both_tiers() {
        let store = tiered();
        assert_eq!(store.kind(), "tiered");
        store.put("k", V, Duration::from_secs(60)).await.unwrap();
        assert_eq!(store.front().get("k").await.unwrap(), Some(V));
        assert_eq!(store.back().get("k").await.unwrap(), Some(V));
        assert_eq!(store.get("k").await.unwrap(), Some(V));
        assert!(store.ping().await.is_ok());
    }

    #[tokio::test]
    async fn a_back_hit_fills_the_front() {
        let store = tiered();
        store
            .back()
            .put("k", V, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(store.front().get("k").await.unwrap(), None);
        assert_eq!(store.get("k").await.unwrap(), Some(V));
        assert_eq!(store.front().get("k").await.unwrap(), Some(V));
        assert_eq!(store.get("missing").await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_front_keeps_entries_at_most_front_ttl() {
        let store = tiered().front_ttl(Duration::from_millis(200));
        store.put("k", V, Duration::from_secs(60)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(store.front().get("k").await.unwrap(), None);
        assert_eq!(store.back().get("k").await.unwrap(), Some(V));
        // Served from the back and copied to the front again.
        assert_eq!(store.get("k").await.unwrap(), Some(V));
        assert_eq!(store.front().get("k").await.unwrap(), Some(V));
    }

    /// Issue 18, item 2: a copy made from a back hit lives no longer than the back entry.
    #[tokio::test]
    async fn a_front_copy_never_outlives_the_back_entry() {
        let back = MemoryStore::default();
        let store = TieredStore::new(MemoryStore::default(), back.clone())
            .front_ttl(Duration::from_secs(60));
        back.put("k", V, Duration::from_millis(300)).await.unwrap();
        assert_eq!(store.get("k").await.unwrap(), Some(V));
        assert_eq!(store.front().get("k").await.unwrap(), Some(V), "copied");
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(back.get("k").await.unwrap(), None);
        assert_eq!(
            store.get("k").await.unwrap(),
            None,
            "the copy expired with it"
        );
    }

    /// Another instance's refresh is seen after at most `front_ttl`.
    #[tokio::test]
    async fn a_refresh_elsewhere_is_seen_within_front_ttl() {
        let back = MemoryStore::default();
        let here = TieredStore::new(MemoryStore::default(), back.clone())
            .front_ttl(Duration::from_millis(200));
        let elsewhere = TieredStore::new(MemoryStore::default(), back);
        elsewhere
            .put("k", V, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(here.get("k").await.unwrap(), Some(V));
        elsewhere
            .put("k", Bytes::from_static(b"new"), Duration::from_secs(60))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(here.get("k").await.unwrap().as_deref(), Some(&b"new"[..]));
    }

    #[tokio::test]
    async fn a_zero_front_ttl_keeps_nothing_in_front() {
        let store = tiered().front_ttl(Duration::ZERO);
        store.put("k", V, Duration::from_secs(60)).await.unwrap();
        assert_eq!(store.get("k").await.unwrap(), Some(V));
        assert_eq!(store.front().get("k").await.unwrap(), None);
        assert!(!store.is_shared(), "two memory tiers");
    }

    #[tokio::test]
    async fn entries_expire_in_both_tiers() {
        let store = tiered();
        store.put("k", V, Duration::from_millis(200)).await.unwrap();
        assert_eq!(store.get("k").await.unwrap(), Some(V));
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(store.get("k").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_down_back_is_an_error_unless_the_front_answers() {
        let store = TieredStore::new(MemoryStore::default(), DownStore);
        let err = store.get("k").await.unwrap_err();
        assert_eq!(err.kind(), StoreErrorKind::Unavailable);
        // The put reports the back's failure, but the front still keeps the answer.
        assert!(store.put("k", V, Duration::from_secs(60)).await.is_err());
        assert_eq!(store.get("k").await.unwrap(), Some(V));
        assert!(store.ping().await.is_err());
    }
}
