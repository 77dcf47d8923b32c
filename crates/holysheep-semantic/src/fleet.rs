//! [`RedisFleet`]: semantic vectors shared by every instance through one Redis Stream.
//!
//! Each instance appends the vectors it records (`XADD`, trimmed to a length with `MAXLEN ~`
//! and to the entry lifetime with `XTRIM MINID ~`) and tails the stream into its own index
//! (`XREAD BLOCK` on a connection of its own), starting from the beginning, so a new instance
//! bootstraps from whatever the stream still holds. Answers themselves are not in the stream:
//! they are the exact cache's entries, in the store the instances share.
//!
//! Redis is a soft dependency: a failed append is dropped (counted, logged at most once every
//! 10 s at warn), the tail reconnects by itself after a pause, and meanwhile every instance
//! serves from its own index.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use metrics::counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::streams::StreamReadReply;
use redis::{Cmd, FromRedisValue, RedisError, Value};

use crate::index::{BucketId, Quantized, SemanticIndex, now_millis};
use crate::names;

/// How long the tail waits in one `XREAD BLOCK`.
const BLOCK: Duration = Duration::from_millis(1000);
/// Bound of a connect attempt, and of every reply beyond the block time.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The pause after a failed read before the tail tries again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Entries read per `XREAD`.
const BATCH: usize = 512;
/// Every how many appends the stream is also trimmed by age.
const TRIM_EVERY: u64 = 64;
/// How often, at most, a failing Redis is logged at warn.
const WARN_EVERY: Duration = Duration::from_secs(10);

#[derive(Clone)]
enum Target {
    Node(redis::Client),
    // Boxed: a cluster client is large next to a node's.
    Cluster(Box<ClusterClient>),
}

#[derive(Clone)]
enum Conn {
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn query<T: FromRedisValue>(&mut self, cmd: &Cmd) -> Result<T, RedisError> {
        match self {
            Conn::Node(c) => cmd.query_async(c).await,
            Conn::Cluster(c) => cmd.query_async(c).await,
        }
    }
}

impl Target {
    /// A connection whose replies may take `reply` (longer than a block).
    async fn connect(&self, reply: Duration) -> Result<Conn, RedisError> {
        match self {
            Target::Node(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_number_of_retries(0)
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(reply));
                Ok(Conn::Node(ConnectionManager::new_lazy_with_config(
                    client.clone(),
                    config,
                )?))
            }
            Target::Cluster(client) => {
                let config = redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(reply);
                Ok(Conn::Cluster(
                    client.get_async_connection_with_config(config).await?,
                ))
            }
        }
    }
}

/// Shares semantic vectors between the instances of a fleet through a Redis Stream, on one node
/// or a Redis Cluster: each instance appends the vectors it records (`XADD`, trimmed by length
/// and by the entry lifetime) and tails the stream into its own index (`XREAD BLOCK`), from the
/// beginning, so a new instance bootstraps from what the stream holds. Give it to
/// [`SemanticCacheLayer::fleet`](crate::SemanticCacheLayer::fleet).
///
/// The stream's key is one key with a hash tag, `{holysheep:semantic}:vectors` by default, so it
/// is valid on a Redis Cluster (one slot) and any key added beside it later lands on the same
/// node.
#[derive(Clone)]
pub struct RedisFleet {
    target: Target,
    stream: Arc<str>,
    max_len: usize,
}

impl RedisFleet {
    /// The default stream key.
    pub const DEFAULT_STREAM: &'static str = "{holysheep:semantic}:vectors";
    /// The default bound of the stream's length: 100,000 vectors.
    pub const DEFAULT_MAX_LEN: usize = 100_000;

    /// A fleet sharing through the Redis node at `url`. Never waits for Redis; fails only on a
    /// malformed URL.
    pub fn connect(url: &str) -> Result<Self, RedisError> {
        Ok(Self::new(Target::Node(redis::Client::open(url)?)))
    }

    /// A fleet sharing through the Redis Cluster reachable through any of `urls`.
    pub fn cluster(urls: &[&str]) -> Result<Self, RedisError> {
        let client = ClusterClient::builder(urls.iter().copied())
            .retries(1)
            .connection_timeout(CONNECT_TIMEOUT)
            .build()?;
        Ok(Self::new(Target::Cluster(Box::new(client))))
    }

    fn new(target: Target) -> Self {
        Self {
            target,
            stream: Arc::from(Self::DEFAULT_STREAM),
            max_len: Self::DEFAULT_MAX_LEN,
        }
    }

    /// Uses another stream key (a Cluster needs one key; keep a hash tag in it).
    pub fn stream(mut self, key: impl Into<Arc<str>>) -> Self {
        self.stream = key.into();
        self
    }

    /// Bounds the stream's length (approximately, `MAXLEN ~`).
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len.max(1);
        self
    }

    /// Starts tailing the stream into `index` (in a task on the current tokio runtime, ending
    /// when the index is dropped), and returns the handle that appends to it. `None` without a
    /// tokio runtime: the instance then keeps to its own index.
    pub(crate) fn start(
        &self,
        index: &Arc<SemanticIndex>,
        ttl: Option<Duration>,
    ) -> Option<FleetHandle> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let me = rand::random::<u64>();
        let log = Arc::new(WarnLimiter::default());
        handle.spawn(tail(
            self.target.clone(),
            Arc::clone(&self.stream),
            Arc::downgrade(index),
            me,
            Arc::clone(&log),
        ));
        let target = self.target.clone();
        let appender = Arc::new(tokio::sync::OnceCell::new());
        Some(FleetHandle {
            target,
            appender,
            stream: Arc::clone(&self.stream),
            max_len: self.max_len,
            ttl,
            me,
            appended: Arc::new(AtomicU64::new(0)),
            log,
        })
    }
}

impl std::fmt::Debug for RedisFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.target {
            Target::Node(_) => "node",
            Target::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisFleet")
            .field("redis", &kind)
            .field("stream", &self.stream)
            .field("max_len", &self.max_len)
            .finish()
    }
}

/// Appends this instance's vectors to the stream.
#[derive(Clone)]
pub(crate) struct FleetHandle {
    target: Target,
    appender: Arc<tokio::sync::OnceCell<Conn>>,
    stream: Arc<str>,
    max_len: usize,
    /// Entries older than this are trimmed by age; without it, by length only.
    ttl: Option<Duration>,
    me: u64,
    appended: Arc<AtomicU64>,
    log: Arc<WarnLimiter>,
}

impl FleetHandle {
    /// Appends a vector, in a spawned task: the answer never waits for Redis.
    pub(crate) fn publish(&self, bucket: BucketId, key: &str, vector: &Quantized, expires_at: u64) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&*self.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.max_len)
            .arg("*")
            .arg("b")
            .arg(format!("{bucket:032x}"))
            .arg("k")
            .arg(key)
            .arg("e")
            .arg(expires_at)
            .arg("i")
            .arg(self.me)
            .arg("v")
            .arg(
                vector
                    .values()
                    .iter()
                    .map(|&v| v as u8)
                    .collect::<Vec<u8>>(),
            );
        let this = self.clone();
        runtime.spawn(async move {
            let result = this.append(cmd).await;
            let outcome = if result.is_ok() { "ok" } else { "error" };
            counter!(names::FLEET, "direction" => "sent", "outcome" => outcome).increment(1);
            if let Err(error) = result {
                this.log.warn(&error, "semantic vector not shared");
            }
        });
    }

    async fn append(&self, cmd: Cmd) -> Result<(), RedisError> {
        // Replies are short: the store's own bound, not the tail's block time.
        let conn = self
            .appender
            .get_or_try_init(|| self.target.connect(CONNECT_TIMEOUT))
            .await?;
        let mut conn = conn.clone();
        let _: Value = conn.query(&cmd).await?;
        if let Some(ttl) = self.ttl
            && self
                .appended
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(TRIM_EVERY)
        {
            // Stream ids are append times in ms: an entry older than the TTL has expired.
            let oldest = now_millis().saturating_sub(ttl.as_millis() as u64);
            let mut trim = redis::cmd("XTRIM");
            trim.arg(&*self.stream).arg("MINID").arg("~").arg(oldest);
            let _: Value = conn.query(&trim).await?;
        }
        Ok(())
    }
}

/// Reads the stream from its start into the index, for as long as the index lives.
async fn tail(
    target: Target,
    stream: Arc<str>,
    index: Weak<SemanticIndex>,
    me: u64,
    log: Arc<WarnLimiter>,
) {
    let mut last = String::from("0-0");
    let mut conn: Option<Conn> = None;
    loop {
        if index.strong_count() == 0 {
            return;
        }
        let c = match &mut conn {
            Some(c) => c,
            None => match target.connect(BLOCK + CONNECT_TIMEOUT).await {
                Ok(c) => conn.insert(c),
                Err(error) => {
                    log.warn(&error, "semantic fleet stream unreachable");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            },
        };
        let mut read = redis::cmd("XREAD");
        read.arg("COUNT")
            .arg(BATCH)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(&*stream)
            .arg(&last);
        match c.query::<Option<StreamReadReply>>(&read).await {
            Ok(reply) => {
                let Some(index) = index.upgrade() else {
                    return;
                };
                for id in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                    let ok = apply(&index, &id.map, me);
                    if let Some(ok) = ok {
                        let outcome = if ok { "ok" } else { "error" };
                        counter!(names::FLEET, "direction" => "received", "outcome" => outcome)
                            .increment(1);
                    }
                    last = id.id;
                }
            }
            Err(error) => {
                log.warn(&error, "semantic fleet stream unreadable");
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }
}

/// Puts one stream entry into the index. `None` for this instance's own entries, else whether
/// the entry was well formed (an expired one is well formed and simply not kept).
fn apply(
    index: &SemanticIndex,
    fields: &std::collections::HashMap<String, Value>,
    me: u64,
) -> Option<bool> {
    let text =
        |name: &str| -> Option<String> { String::from_redis_value(fields.get(name)?.clone()).ok() };
    if text("i").and_then(|i| i.parse::<u64>().ok()) == Some(me) {
        return None;
    }
    let parsed = (|| {
        let bucket = BucketId::from_str_radix(&text("b")?, 16).ok()?;
        let key = text("k")?;
        let expires_at = text("e")?.parse::<u64>().ok()?;
        let bytes = Vec::<u8>::from_redis_value(fields.get("v")?.clone()).ok()?;
        let vector = Quantized::from_values(bytes.into_iter().map(|b| b as i8).collect())?;
        Some((bucket, key, expires_at, vector))
    })();
    let Some((bucket, key, expires_at, vector)) = parsed else {
        return Some(false);
    };
    if expires_at > now_millis() {
        index.insert(bucket, Arc::from(key), vector, expires_at);
    }
    Some(true)
}

/// Logs a Redis failure at warn at most once per [`WARN_EVERY`], the rest at debug: an outage
/// must not write one line per request.
#[derive(Default)]
struct WarnLimiter {
    last: Mutex<Option<Instant>>,
}

impl WarnLimiter {
    fn warn(&self, error: &RedisError, what: &str) {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < WARN_EVERY) {
            tracing::debug!(%error, "{what}");
        } else {
            *last = Some(now);
            tracing::warn!(%error, "{what}; serving from this instance's index meanwhile");
        }
    }
}
