//! Shared store: one Redis node or a Redis Cluster.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, RedisError};

use super::{BoxFuture, CacheStore, StoreError};

/// Bound of one TCP connect (and handshake) attempt, in the background.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);

/// redis-rs' own response bound: lets it notice a silent (partitioned) connection and reconnect.
/// Operations are bounded by the store's much shorter timeout anyway.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// A [`CacheStore`] on Redis: one node or a Redis Cluster, shared by every gateway instance.
///
/// Values are written with `SET key value EX ttl` (TTL in whole seconds, rounded up, at least one)
/// and read with `GET`.
///
/// Redis is a soft dependency:
///
/// - [`connect`](Self::connect) and [`cluster`](Self::cluster) never wait for Redis: they only
///   check the URLs and connect in the background, so a gateway starts while Redis is down.
/// - Every operation is bounded by [`timeout`](Self::timeout) (default 50 ms); a slower answer is
///   `Err(StoreError)` with [`is_timeout`](StoreError::is_timeout).
/// - After a connection failure, operations fail at once with
///   [`is_unavailable`](StoreError::is_unavailable) for [`retry_interval`](Self::retry_interval)
///   (default 250 ms); the next operation after it probes again. A dead Redis costs callers
///   nothing and sees at most a few connection attempts per second.
/// - The connection is re-established by itself when Redis is back (redis-rs'
///   `ConnectionManager` for one node; the cluster connection refreshes its slots and nodes).
///
/// Cloning is cheap; clones share the connection.
///
/// ```no_run
/// use std::time::Duration;
/// use holysheep_cache::{CacheStore, RedisStore};
///
/// # async fn run() -> Result<(), holysheep_cache::StoreError> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379").await?
///     .timeout(Duration::from_millis(20));
/// store.put("k", "answer".into(), Duration::from_secs(3600)).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    timeout: Duration,
    health: Arc<Health>,
}

impl RedisStore {
    /// Default of [`timeout`](Self::timeout), the bound of every operation: 50 ms.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
    /// Default of [`retry_interval`](Self::retry_interval), the pause after a connection
    /// failure during which operations fail at once: 250 ms.
    pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_millis(250);

    /// A store on the single Redis node at `url` (`redis://[user:pass@]host:port[/db]`).
    ///
    /// Succeeds while Redis is down; fails only on a malformed URL.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        require_tokio()?;
        let client = redis::Client::open(url).map_err(StoreError::config)?;
        // No retries inside redis-rs: a failed attempt surfaces at once, and the store's retry
        // interval paces the next one.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let manager =
            ConnectionManager::new_lazy_with_config(client, config).map_err(StoreError::config)?;
        Ok(RedisStore::from_conn(Conn::Single(manager)))
    }

    /// A store on the Redis Cluster reachable through any of `urls` (seed nodes; the rest of the
    /// cluster is discovered).
    ///
    /// Succeeds while the cluster is down; fails only on malformed or missing URLs.
    pub async fn cluster(urls: &[&str]) -> Result<Self, StoreError> {
        require_tokio()?;
        if urls.is_empty() {
            return Err(StoreError::config(
                "a Redis Cluster needs at least one node URL",
            ));
        }
        let client = ClusterClient::builder(urls.iter().copied())
            .retries(1)
            .connection_timeout(CONNECTION_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .build()
            .map_err(StoreError::config)?;
        let config = ClusterConfig::new()
            .set_connection_timeout(CONNECTION_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT);
        let conn = client.get_pending_async_connection_with_config(config);
        Ok(RedisStore::from_conn(Conn::Cluster(conn)))
    }

    fn from_conn(conn: Conn) -> Self {
        let store = RedisStore {
            conn,
            timeout: Self::DEFAULT_TIMEOUT,
            health: Arc::new(Health::new(Self::DEFAULT_RETRY_INTERVAL)),
        };
        store.warm_up();
        store
    }

    /// Starts connecting in the background so the first operation does not pay for it.
    fn warm_up(&self) {
        let mut conn = self.conn.clone();
        tokio::spawn(async move {
            let ping = redis::cmd("PING");
            let result: Result<(), RedisError> = match &mut conn {
                Conn::Single(c) => ping.query_async(c).await,
                Conn::Cluster(c) => ping.query_async(c).await,
            };
            if let Err(error) = result {
                tracing::debug!(%error, "redis cache store not reachable yet");
            }
        });
    }

    /// Bounds every operation by `timeout` (default 50 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// After a connection failure, fail at once for `interval` before probing again
    /// (default 250 ms; zero probes on every operation).
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.health = Arc::new(Health::new(interval));
        self
    }

    /// Runs `cmd` within the time bound, mapping every failure to a [`StoreError`].
    async fn run<T: FromRedisValue>(&self, cmd: Cmd) -> Result<T, StoreError> {
        if let Some(wait) = self.health.down_for() {
            return Err(StoreError::unavailable(format!(
                "redis connection failed recently; next attempt in {wait:?}"
            )));
        }
        let mut conn = self.conn.clone();
        let query = async {
            match &mut conn {
                Conn::Single(c) => cmd.query_async(c).await,
                Conn::Cluster(c) => cmd.query_async(c).await,
            }
        };
        match tokio::time::timeout(self.timeout, query).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => {
                let error = map_error(error);
                if error.is_unavailable() {
                    self.health.mark_down();
                }
                Err(error)
            }
            Err(_elapsed) => Err(StoreError::timeout(self.timeout)),
        }
    }
}

/// redis-rs spawns its connection tasks on Tokio; outside a runtime that would panic.
fn require_tokio() -> Result<(), StoreError> {
    tokio::runtime::Handle::try_current()
        .map(|_| ())
        .map_err(|_| StoreError::config("RedisStore must be created inside a Tokio runtime"))
}

/// Sorts redis-rs errors into the store's kinds.
fn map_error(error: RedisError) -> StoreError {
    use redis::{ErrorKind, ServerErrorKind};
    if error.is_timeout() {
        return StoreError::new(super::StoreErrorKind::Timeout, error);
    }
    let unavailable = error.is_io_error()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || matches!(
            error.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                )
        );
    if unavailable {
        StoreError::unavailable(error)
    } else {
        StoreError::backend(error)
    }
}

/// Whole seconds for `EX`, rounded up so an entry never expires early; at least one.
fn ttl_secs(ttl: Duration) -> u64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    secs.max(1)
}

impl CacheStore for RedisStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("GET");
            cmd.arg(key);
            let value: Option<Vec<u8>> = self.run(cmd).await?;
            Ok(value.map(Bytes::from))
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            if ttl.is_zero() {
                return Ok(());
            }
            let mut cmd = redis::cmd("SET");
            cmd.arg(key).arg(&value[..]).arg("EX").arg(ttl_secs(ttl));
            self.run::<()>(cmd).await
        })
    }

    fn kind(&self) -> &'static str {
        match self.conn {
            Conn::Single(_) => "redis",
            Conn::Cluster(_) => "redis-cluster",
        }
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.run::<()>(redis::cmd("PING")).await })
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("kind", &self.kind())
            .field("timeout", &self.timeout)
            .field("retry_interval", &self.health.retry_interval)
            .finish()
    }
}

/// Remembers a recent connection failure so operations can fail at once instead of each paying
/// for a connection attempt.
struct Health {
    epoch: Instant,
    retry_interval: Duration,
    /// Nanoseconds since `epoch` until which operations fail at once; 0 = healthy.
    down_until: AtomicU64,
}

impl Health {
    fn new(retry_interval: Duration) -> Self {
        Health {
            epoch: Instant::now(),
            retry_interval,
            down_until: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// How long operations still fail at once, if they do.
    fn down_for(&self) -> Option<Duration> {
        let until = self.down_until.load(Ordering::Relaxed);
        if until == 0 {
            return None;
        }
        let now = self.now();
        (now < until).then(|| Duration::from_nanos(until - now))
    }

    fn mark_down(&self) {
        let interval = u64::try_from(self.retry_interval.as_nanos()).unwrap_or(u64::MAX);
        let until = self.now().saturating_add(interval);
        self.down_until.store(until, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_rounds_up_to_whole_seconds() {
        assert_eq!(ttl_secs(Duration::from_millis(1)), 1);
        assert_eq!(ttl_secs(Duration::from_secs(1)), 1);
        assert_eq!(ttl_secs(Duration::from_millis(1001)), 2);
        assert_eq!(ttl_secs(Duration::from_secs(3600)), 3600);
    }

    #[tokio::test]
    async fn malformed_urls_are_config_errors() {
        let err = RedisStore::connect("not a url").await.unwrap_err();
        assert!(err.is_config(), "{err}");
        let err = RedisStore::cluster(&[]).await.unwrap_err();
        assert!(err.is_config(), "{err}");
        let err = RedisStore::cluster(&["nope://x"]).await.unwrap_err();
        assert!(err.is_config(), "{err}");
    }

    #[tokio::test]
    async fn connect_succeeds_and_fails_fast_while_redis_is_down() {
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let store = RedisStore::connect("redis://127.0.0.1:1").await.unwrap();
        assert_eq!(store.kind(), "redis");
        let first = store.get("k").await.unwrap_err();
        assert!(first.is_unavailable() || first.is_timeout(), "{first}");
        let second = store
            .put("k", Bytes::from_static(b"v"), Duration::from_secs(1))
            .await;
        assert!(second.is_err());
        assert!(store.ping().await.is_err());
    }

    #[test]
    fn outside_a_runtime_is_an_error_not_a_panic() {
        let err = futures_util::FutureExt::now_or_never(RedisStore::connect("redis://127.0.0.1:1"))
            .expect("ready at once")
            .unwrap_err();
        assert!(err.is_config(), "{err}");
    }

    #[test]
    fn health_gate_fails_fast_only_within_the_interval() {
        let health = Health::new(Duration::from_secs(60));
        assert!(health.down_for().is_none());
        health.mark_down();
        assert!(health.down_for().is_some());

        let eager = Health::new(Duration::ZERO);
        eager.mark_down();
        assert!(eager.down_for().is_none());
    }
}
