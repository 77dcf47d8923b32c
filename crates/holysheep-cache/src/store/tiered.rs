//! A fast front store in front of a shared back store.

use std::time::Duration;

use bytes::Bytes;

use super::{BoxFuture, CacheStore, StoreError};

/// Default longest time an entry lives in the front store.
const DEFAULT_FRONT_TTL: Duration = Duration::from_secs(60);

/// Two stores in tiers, usually a [`MemoryStore`](super::MemoryStore) in front of a
/// `RedisStore` (cargo feature `redis`): hot answers come from process memory, every gateway
/// instance shares the back.
///
/// - `get` asks the front, then the back; a back hit is copied into the front.
/// - `put` writes both (concurrently).
///
/// The trait does not report an entry's remaining TTL, so the front keeps an entry for at most
/// [`front_ttl`](Self::front_ttl) (default 60 s): a copy made from a back hit can outlive the back
/// entry by at most that bound.
#[derive(Debug, Clone)]
pub struct TieredStore<F, B> {
    front: F,
    back: B,
    front_ttl: Duration,
}

impl<F: CacheStore, B: CacheStore> TieredStore<F, B> {
    /// `front` in front of `back`.
    pub fn new(front: F, back: B) -> Self {
        TieredStore {
            front,
            back,
            front_ttl: DEFAULT_FRONT_TTL,
        }
    }

    /// Keeps entries in the front store for at most `ttl` (default 60 s).
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

impl<F: CacheStore, B: CacheStore> CacheStore for TieredStore<F, B> {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        Box::pin(async move {
            // A failing front is only a slower path, never a failed lookup.
            if let Ok(Some(hit)) = self.front.get(key).await {
                return Ok(Some(hit));
            }
            let hit = self.back.get(key).await?;
            if let Some(value) = &hit
                && let Err(error) = self.front.put(key, value.clone(), self.front_ttl).await
            {
                tracing::debug!(%error, store = self.front.kind(), "cache front fill failed");
            }
            Ok(hit)
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
