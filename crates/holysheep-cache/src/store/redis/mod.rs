//! Shared store: one Redis node or a Redis Cluster.

use std::fmt;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, FromRedisValue, IntoConnectionInfo, Pipeline, RedisError};

use self::health::{ClusterHealth, Gate, Node, Pass};
use super::{BoxFuture, CacheStore, StoreError, ValueTtl};

mod health;

/// Bound of one TCP connect (and handshake) attempt, in the background.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);

/// redis-rs' own response bound: lets it notice a silent (partitioned) connection and reconnect.
/// Operations are bounded by the store's much shorter timeout anyway.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How often redis-rs tries to reconnect to a lost Cluster node before it gives up on it
/// (until its next slot refresh, or the store's next operation on that node).
const RECONNECT_ATTEMPTS: NonZeroUsize = NonZeroUsize::new(3).expect("not zero");

/// Bound of one `CLUSTER SLOTS` query, in the background.
const SLOTS_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The health of what the store talks to.
enum Health {
    /// One node, one gate.
    Single(Gate),
    /// A gate per master, and the slot map to find a key's master.
    Cluster(ClusterHealth),
}

/// A command or a pipeline, as [`RedisStore::run`] sends it.
enum Query {
    Cmd(Cmd),
    Pipe(Pipeline),
}

/// A [`CacheStore`] on Redis: one node or a Redis Cluster, shared by every gateway instance.
///
/// Values are written with `SET key value EX ttl` (TTL in whole seconds, rounded up, at least one)
/// and read with `GET` (and `PTTL`, for [`get_with_ttl`](CacheStore::get_with_ttl)).
///
/// Redis is a soft dependency:
///
/// - [`connect`](Self::connect) and [`cluster`](Self::cluster) never wait for Redis: they only
///   check the URLs and connect in the background, so a gateway starts while Redis is down.
/// - Every operation is bounded by [`timeout`](Self::timeout) (default 50 ms); a slower answer is
///   `Err(StoreError)` with [`is_timeout`](StoreError::is_timeout).
/// - After a connection failure, operations on that node fail at once with
///   [`is_unavailable`](StoreError::is_unavailable) for [`retry_interval`](Self::retry_interval)
///   (default 250 ms); then one operation probes the node again while the others keep failing
///   at once. A dead Redis costs callers nothing and sees at most a few connection attempts per
///   second.
/// - **In a Redis Cluster the gate is per master**: the store reads the slot map
///   (`CLUSTER SLOTS`) in the background and finds each key's master, so a dead master turns
///   into misses only for the keys it holds; the other masters' keys are served as usual. A
///   dead master is probed with a plain TCP connect before any command is sent to it again, so
///   redis-rs does not try (and log) a connection per operation; its keys' new owner after a
///   failover is learnt from the slot map, which is read again (at most once per retry
///   interval) while operations meet a master that is down. Until the first slot map arrives,
///   the whole cluster shares one gate.
/// - Each node's failure is logged once at warn (at most once per node per 10 s), and its
///   recovery at info. redis-rs logs each of its own connection attempts at warn (target
///   `redis`); the gateway filters that target to errors, and an application can do the same.
/// - The connection is re-established by itself when Redis is back (redis-rs'
///   `ConnectionManager` for one node; the cluster connection refreshes its slots and nodes).
///
/// Cloning is cheap; clones share the connection and the health.
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
    /// How to reach the node (one node) or the seed (a Cluster): address, credentials and
    /// database, for the dedicated connections of fleet coalescing.
    info: Arc<redis::ConnectionInfo>,
    timeout: Duration,
    retry_interval: Duration,
    health: Arc<Health>,
}

impl RedisStore {
    /// Default of [`timeout`](Self::timeout), the bound of every operation: 50 ms.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
    /// Default of [`retry_interval`](Self::retry_interval), the pause after a connection
    /// failure during which operations on that node fail at once: 250 ms.
    pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_millis(250);

    /// A store on the single Redis node at `url` (`redis://[user:pass@]host:port[/db]`).
    ///
    /// Succeeds while Redis is down; fails only on a malformed URL.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        require_tokio()?;
        let client = redis::Client::open(url).map_err(StoreError::config)?;
        let info = client.get_connection_info().clone();
        let name = info.addr().to_string();
        // No retries inside redis-rs: a failed attempt surfaces at once, and the store's retry
        // interval paces the next one.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let manager =
            ConnectionManager::new_lazy_with_config(client, config).map_err(StoreError::config)?;
        Ok(RedisStore::from_conn(
            Conn::Single(manager),
            info,
            Health::Single(Gate::new(name)),
        ))
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
            // redis-rs reconnects to a lost node in the background, logging each attempt at
            // warn, for ever unless bounded: the store probes dead masters itself.
            .max_connection_attempts(RECONNECT_ATTEMPTS)
            .connection_timeout(CONNECTION_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .build()
            .map_err(StoreError::config)?;
        let mut seeds = Vec::with_capacity(urls.len());
        let mut first = None;
        for url in urls {
            let info = url.into_connection_info().map_err(StoreError::config)?;
            first.get_or_insert_with(|| info.clone());
            match info.addr() {
                redis::ConnectionAddr::Tcp(host, port)
                | redis::ConnectionAddr::TcpTls { host, port, .. } => {
                    seeds.push((host.clone(), *port));
                }
                _ => {}
            }
        }
        let config = ClusterConfig::new()
            .set_connection_timeout(CONNECTION_TIMEOUT)
            .set_response_timeout(RESPONSE_TIMEOUT);
        let conn = client.get_pending_async_connection_with_config(config);
        let info = first.ok_or_else(|| StoreError::config("no Redis Cluster node URL"))?;
        Ok(RedisStore::from_conn(
            Conn::Cluster(conn),
            info,
            Health::Cluster(ClusterHealth::new(seeds)),
        ))
    }

    fn from_conn(conn: Conn, info: redis::ConnectionInfo, health: Health) -> Self {
        let store = RedisStore {
            conn,
            info: Arc::new(info),
            timeout: Self::DEFAULT_TIMEOUT,
            retry_interval: Self::DEFAULT_RETRY_INTERVAL,
            health: Arc::new(health),
        };
        store.warm_up();
        store
    }

    /// Starts connecting (and reading a cluster's slot map) in the background so the first
    /// operation does not pay for it.
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
        self.refresh_slots();
    }

    /// Bounds every operation by `timeout` (default 50 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// After a connection failure, operations on that node fail at once for `interval` before
    /// one probes it again (default 250 ms; zero probes on the next operation).
    pub fn retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
    }

    /// Reads a cluster's slot map again in the background, if no read runs and none ran
    /// within the retry interval.
    fn refresh_slots(&self) {
        let (Health::Cluster(cluster), Conn::Cluster(conn)) = (&*self.health, &self.conn) else {
            return;
        };
        if !cluster.begin_refresh(self.retry_interval) {
            return;
        }
        let health = Arc::clone(&self.health);
        let mut conn = conn.clone();
        tokio::spawn(async move {
            let Health::Cluster(cluster) = &*health else {
                return;
            };
            for node in cluster.candidates() {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: node.0.clone(),
                    port: node.1,
                });
                let mut slots = redis::cmd("CLUSTER");
                slots.arg("SLOTS");
                match tokio::time::timeout(SLOTS_TIMEOUT, conn.route_command(slots, routing)).await
                {
                    Ok(Ok(answer)) if cluster.install(&answer, &node) => break,
                    Ok(Ok(_)) => {
                        tracing::debug!(node = %format!("{}:{}", node.0, node.1), "unreadable CLUSTER SLOTS answer")
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(node = %format!("{}:{}", node.0, node.1), %error, "CLUSTER SLOTS failed")
                    }
                    Err(_) => {
                        tracing::debug!(node = %format!("{}:{}", node.0, node.1), "CLUSTER SLOTS timed out")
                    }
                }
            }
            cluster.refreshed();
        });
    }

    /// Runs `cmd` on the node that holds `key`, bounded and gated like every store operation.
    pub(crate) async fn run_cmd<T: FromRedisValue>(
        &self,
        key: &str,
        cmd: Cmd,
    ) -> Result<T, StoreError> {
        self.run(Some(key), Query::Cmd(cmd)).await
    }

    /// Runs `pipe` on the node that holds `key`, bounded and gated like every store operation.
    pub(crate) async fn run_pipe<T: FromRedisValue>(
        &self,
        key: &str,
        pipe: Pipeline,
    ) -> Result<T, StoreError> {
        self.run(Some(key), Query::Pipe(pipe)).await
    }

    /// How to open a connection of one's own to the node that holds `key` (for a blocking
    /// read, which must not hold up the shared connection): `None` while a Cluster's slot map
    /// is not known yet, or while that node is down.
    pub(crate) fn node_info(&self, key: &str) -> Option<redis::ConnectionInfo> {
        match &*self.health {
            Health::Single(gate) => (!gate.is_down()).then(|| (*self.info).clone()),
            Health::Cluster(cluster) => {
                let node = cluster.node_for(key)?;
                (!node.gate.is_down()).then(|| {
                    (*self.info)
                        .clone()
                        .set_addr(redis::ConnectionAddr::Tcp(node.host.clone(), node.port))
                })
            }
        }
    }

    /// The bound of every operation.
    pub(crate) fn op_timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `query` on the node that holds `key` (any node without a key) within the time
    /// bound, mapping every failure to a [`StoreError`] and keeping that node's health.
    async fn run<T: FromRedisValue>(
        &self,
        key: Option<&str>,
        query: Query,
    ) -> Result<T, StoreError> {
        let node: Option<Arc<Node>> = match (&*self.health, key) {
            (Health::Cluster(cluster), Some(key)) => cluster.node_for(key),
            _ => None,
        };
        let gate = match (&node, &*self.health) {
            (Some(node), _) => &node.gate,
            (None, Health::Single(gate)) => gate,
            (None, Health::Cluster(cluster)) => cluster.whole(),
        };
        let probe = match gate.pass(self.retry_interval) {
            Pass::Up => None,
            Pass::Down(left) => {
                // The key's slot may have moved to a live master (a failover): look again.
                self.refresh_slots();
                return Err(StoreError::unavailable(format!(
                    "redis {} failed recently; next attempt in {left:?}",
                    gate.name()
                )));
            }
            Pass::Probe(probe) => Some(probe),
        };
        if let (Some(_), Some(node)) = (&probe, &node) {
            // Before redis-rs is asked to use a master that failed (and tries, and logs, a
            // connection), a plain TCP connect says whether anything listens there again.
            let connect = tokio::net::TcpStream::connect((node.host.as_str(), node.port));
            if !matches!(tokio::time::timeout(self.timeout, connect).await, Ok(Ok(_))) {
                self.refresh_slots();
                return Err(StoreError::unavailable(format!(
                    "redis {} does not accept connections",
                    gate.name()
                )));
            }
        }
        let mut conn = self.conn.clone();
        let request = async {
            match (&mut conn, query) {
                (Conn::Single(c), Query::Cmd(cmd)) => cmd.query_async(c).await,
                (Conn::Single(c), Query::Pipe(pipe)) => pipe.query_async(c).await,
                (Conn::Cluster(c), Query::Cmd(cmd)) => cmd.query_async(c).await,
                (Conn::Cluster(c), Query::Pipe(pipe)) => pipe.query_async(c).await,
            }
        };
        match tokio::time::timeout(self.timeout, request).await {
            Ok(Ok(value)) => {
                if let Some(probe) = probe {
                    probe.passed();
                }
                Ok(value)
            }
            Ok(Err(error)) => {
                let error = map_error(error);
                if error.is_unavailable() {
                    gate.failed(self.retry_interval, &error);
                    self.refresh_slots();
                } else if let Some(probe) = probe {
                    // The node answered, if with an error: it is up.
                    probe.passed();
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

/// The time a key has left, from `PTTL`: `None` without an expiry (`-1`), zero for a key gone
/// meanwhile (`-2`).
fn ttl_left(pttl: i64) -> Option<Duration> {
    match pttl {
        -1 => None,
        ms => Some(Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
    }
}

impl CacheStore for RedisStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("GET");
            cmd.arg(key);
            let value: Option<Vec<u8>> = self.run(Some(key), Query::Cmd(cmd)).await?;
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
            self.run::<()>(Some(key), Query::Cmd(cmd)).await
        })
    }

    fn kind(&self) -> &'static str {
        match self.conn {
            Conn::Single(_) => "redis",
            Conn::Cluster(_) => "redis-cluster",
        }
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.run::<()>(None, Query::Cmd(redis::cmd("PING"))).await })
    }

    fn get_with_ttl<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<ValueTtl>, StoreError>> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            pipe.cmd("GET").arg(key).cmd("PTTL").arg(key);
            let (value, pttl): (Option<Vec<u8>>, i64) =
                self.run(Some(key), Query::Pipe(pipe)).await?;
            Ok(value.map(|value| (Bytes::from(value), ttl_left(pttl))))
        })
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("kind", &self.kind())
            .field("timeout", &self.timeout)
            .field("retry_interval", &self.retry_interval)
            .finish()
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
    fn pttl_says_how_long_a_value_has_left() {
        assert_eq!(ttl_left(-1), None);
        assert_eq!(ttl_left(-2), Some(Duration::ZERO));
        assert_eq!(ttl_left(1500), Some(Duration::from_millis(1500)));
    }
}
