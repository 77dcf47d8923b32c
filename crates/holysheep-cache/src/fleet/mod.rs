//! Fleet coalescing: one upstream call per key across every instance that shares a Redis.
//!
//! In-process coalescing makes one upstream call per key per
//! instance. With [`FleetCoalescing`], the instance whose local leader misses first also takes
//! a short **lease** on the key in Redis; the others' local leaders find it taken and become
//! **remote followers**: they make no upstream call and replay the fleet leader's answer.
//!
//! # In Redis
//!
//! For a cache key `K` (names hash-tagged with `K`, so in a Cluster they live in `K`'s slot):
//!
//! - `{K}:lease` holds the leader's token, set if absent with a short expiry (`SET … NX PX`,
//!   in a script that returns the holder's token otherwise, so losing the race costs no second
//!   round trip), renewed while the answer is produced, and deleted by its holder when the
//!   answer is stored or the call failed. A leader that dies stops renewing: the lease expires
//!   within [`FleetCoalescing::lease`] (default 3 s), not the entry TTL.
//! - `{K}:live:<token>` is a Redis Stream the leader appends its answer to as it arrives: its
//!   response head, each body chunk, how it ended, and a last record when the entry is stored
//!   and the lease released. It expires soon after ([`FleetCoalescing::linger`]). A stream per
//!   token, so a takeover never mixes two answers.
//!
//! A remote follower reads the leader's stream from its start with `XREAD BLOCK` on a
//! connection of its own (a blocking read would hold up the shared one), so it gets the head
//! and then every chunk live, before the leader's answer has ended. The stream is also its
//! notification: a follower that needs the answer in another shape (a stream from a JSON
//! answer, or the reverse) waits for the record saying the entry is stored, then reads the
//! entry. When a read brings nothing, it looks at the lease (polling is the fallback): a lease
//! gone or held by another token with no end in the stream means the leader died.
//!
//! # Failures
//!
//! - The leader's upstream call fails (no response) or its instance dies before a response
//!   head: followers try the lease again; one takes it over and calls upstream itself, the
//!   others follow it — at most one more call per failure. Error *answers* (429, 5xx) are
//!   replayed to followers like any answer, as the local coalescer shares them.
//! - The leader dies mid-answer: a follower that already passed part of it on ends its body
//!   with an error (an answer cannot be stitched from two upstream calls); one that did not,
//!   takes over.
//! - A follower waits for the leader's head at most [`FleetCoalescing::max_wait`] (default
//!   60 s, the gateway sets its upstream timeout): past it, it calls upstream itself.
//! - **Redis down or slow**: every fleet operation is bounded by the store's timeout and gated
//!   by its health; when the lease cannot be read, the instance coalesces locally only. No
//!   request fails or waits longer because of Redis.
//! - Each remote follower reads on a connection of its own (pooled per node, up to
//!   [`FleetCoalescing::max_readers`] at once, 256 by default); past that bound, or while a
//!   Cluster's slot map is not known yet, a miss is coalesced locally only.
//!
//! # Metrics
//!
//! Through the `metrics` facade (see [`names`]): `holysheep_fleet_followers_total` (requests
//! answered from another instance's call), `holysheep_fleet_takeovers_total` (leases taken over
//! from a leader that failed or died), `holysheep_fleet_wait_seconds` (how long remote followers
//! waited for the answer's head or entry) and `holysheep_fleet_local_only_total{reason}` (misses
//! coalesced locally only: `lease`, `mirror`, `follow`, `reader`, `max_wait`, `invalid`).

mod follow;
mod lead;
mod record;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::key::CacheKey;
use crate::shared::WarnLimiter;
use crate::store::RedisStore;

pub(crate) use self::follow::{Followed, Remote};
pub(crate) use self::lead::{Lease, Mirror};
pub(crate) use self::record::Ending;

/// Metric names of fleet coalescing.
pub mod names {
    /// Counter: requests that became remote followers (made no upstream call; another instance
    /// did).
    pub const FOLLOWERS: &str = "holysheep_fleet_followers_total";
    /// Counter: leases taken over from a leader that failed or went away.
    pub const TAKEOVERS: &str = "holysheep_fleet_takeovers_total";
    /// Histogram (seconds): how long remote followers waited for the leader's response head (or
    /// its stored entry).
    pub const WAIT_SECONDS: &str = "holysheep_fleet_wait_seconds";
    /// Counter: misses coalesced only locally because Redis could not be asked, labelled
    /// `reason`.
    pub const LOCAL_ONLY: &str = "holysheep_fleet_local_only_total";
}

/// Fleet coalescing over a [`RedisStore`]: identical misses on every instance sharing it make
/// one upstream call between them. Give it to [`CacheLayer::fleet`](crate::CacheLayer::fleet).
///
/// See the [module docs](self) for how it works and fails.
///
/// ```no_run
/// use std::time::Duration;
/// use holysheep_cache::{CacheLayer, FleetCoalescing, RedisStore};
///
/// # async fn run() -> Result<(), holysheep_cache::StoreError> {
/// let redis = RedisStore::connect("redis://127.0.0.1:6379").await?;
/// let layer = CacheLayer::new(redis.clone())
///     .fleet(FleetCoalescing::new(redis).max_wait(Duration::from_secs(120)));
/// # let _ = layer;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct FleetCoalescing {
    store: RedisStore,
    lease: Duration,
    max_wait: Duration,
    linger: Duration,
    max_readers: usize,
}

impl FleetCoalescing {
    /// Default of [`lease`](Self::lease): 3 s.
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(3);
    /// Default of [`max_wait`](Self::max_wait): 60 s.
    pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(60);
    /// Default of [`linger`](Self::linger): 10 s.
    pub const DEFAULT_LINGER: Duration = Duration::from_secs(10);
    /// Default of [`max_readers`](Self::max_readers): 256.
    pub const DEFAULT_MAX_READERS: usize = 256;

    /// Fleet coalescing through `store` (one Redis node or a Cluster), with the defaults.
    pub fn new(store: RedisStore) -> Self {
        Self {
            store,
            lease: Self::DEFAULT_LEASE,
            max_wait: Self::DEFAULT_MAX_WAIT,
            linger: Self::DEFAULT_LINGER,
            max_readers: Self::DEFAULT_MAX_READERS,
        }
    }

    /// How long a lease lives without renewal (it is renewed every third of it while the answer
    /// is produced): how soon followers notice a leader that died. At least 100 ms.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(100));
        self
    }

    /// How long a remote follower waits for the leader's response before it calls upstream
    /// itself. Set it to the upstream timeout.
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// How long a leader's live stream stays in Redis after its answer ended, for followers
    /// still reading it.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger.max(Duration::from_secs(1));
        self
    }

    /// How many remote followers of this instance may read at once, each on a connection of its
    /// own. Past it, a miss coalesces locally only (and calls upstream). At least 1.
    pub fn max_readers(mut self, readers: usize) -> Self {
        self.max_readers = readers.max(1);
        self
    }

    pub(crate) fn build(&self) -> Arc<Fleet> {
        Arc::new(Fleet {
            store: self.store.clone(),
            lease: self.lease,
            max_wait: self.max_wait,
            linger: self.linger,
            readers: Arc::new(Semaphore::new(self.max_readers)),
            pool: follow::Pool::default(),
            instance: instance_id(),
            next_token: AtomicU64::new(0),
            warn: WarnLimiter::default(),
        })
    }
}

impl fmt::Debug for FleetCoalescing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetCoalescing")
            .field("store", &self.store)
            .field("lease", &self.lease)
            .field("max_wait", &self.max_wait)
            .field("linger", &self.linger)
            .field("max_readers", &self.max_readers)
            .finish()
    }
}

/// The fleet state one cache shares with its clones.
pub(crate) struct Fleet {
    store: RedisStore,
    lease: Duration,
    pub(crate) max_wait: Duration,
    linger: Duration,
    readers: Arc<Semaphore>,
    pool: follow::Pool,
    instance: u64,
    next_token: AtomicU64,
    warn: WarnLimiter,
}

/// What the lease says this instance is for a key.
pub(crate) enum Role {
    /// This instance leads: mirror the answer into Redis; release the lease when it is stored.
    Leader(Mirror, Lease),
    /// Another instance leads: follow it.
    Follower(Remote),
    /// The entry was stored since this instance looked: serve it.
    Stored,
    /// Redis could not say: coalesce locally only.
    Local,
}

/// Takes the lease if free, or returns its holder's token: one round trip either way. With the
/// entry's key as a second key (same slot), an entry stored meanwhile — between the caller's
/// lookup and this claim, by a leader that has let its lease go since — returns `''`.
const CLAIM: &str = "local held = redis.call('GET', KEYS[1]) \
if held then return held end \
if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 then return '' end \
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) \
return false";

impl Fleet {
    /// Asks the lease for `key` (a local leader's miss); a leader mirrors up to `max_bytes` of
    /// its answer.
    pub(crate) async fn claim(self: &Arc<Self>, key: &CacheKey, max_bytes: usize) -> Role {
        let role = self.claim_again(key, max_bytes).await;
        if let Role::Follower(_) = role {
            metrics::counter!(names::FOLLOWERS).increment(1);
        }
        role
    }

    /// [`claim`](Self::claim), by a follower whose leader went away.
    async fn claim_again(self: &Arc<Self>, key: &CacheKey, max_bytes: usize) -> Role {
        let names = Names::new(key.as_str());
        let token = self.token();
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(CLAIM);
        if names.entry_in_slot {
            cmd.arg(2).arg(&names.lease).arg(key.as_str());
        } else {
            cmd.arg(1).arg(&names.lease);
        }
        cmd.arg(&token).arg(millis(self.lease));
        match self
            .store
            .run_cmd::<Option<String>>(&names.lease, cmd)
            .await
        {
            Ok(Some(holder)) if holder.is_empty() => Role::Stored,
            Ok(None) => {
                let (mirror, lease) = lead::start(Arc::clone(self), names, token, max_bytes);
                Role::Leader(mirror, lease)
            }
            Ok(Some(holder)) => {
                Role::Follower(Remote::new(Arc::clone(self), key.clone(), names, holder))
            }
            Err(error) => {
                self.local_only("lease", &error);
                Role::Local
            }
        }
    }

    fn token(&self) -> String {
        let n = self.next_token.fetch_add(1, Ordering::Relaxed);
        format!("{:016x}-{n:x}", self.instance)
    }

    /// Logs (at most once per 10 s at warn) and counts a miss coalesced locally only.
    pub(crate) fn local_only(&self, reason: &'static str, error: &dyn fmt::Display) {
        metrics::counter!(names::LOCAL_ONLY, "reason" => reason).increment(1);
        if let Some(suppressed) = self.warn.admit() {
            tracing::warn!(
                reason,
                %error,
                suppressed,
                "fleet coalescing unavailable; this miss is coalesced on this instance only"
            );
        } else {
            tracing::debug!(reason, %error, "fleet coalescing unavailable");
        }
    }
}

/// The Redis names of one key's fleet state.
#[derive(Clone, Debug)]
pub(crate) struct Names {
    lease: String,
    /// Whether the entry's own key is in the lease's slot (tagged with the whole key).
    entry_in_slot: bool,
    /// The live stream's name without the token.
    live: String,
}

impl Names {
    fn new(key: &str) -> Self {
        // The hash tag must be the whole key; a key that holds a brace (from a model name) is
        // tagged by its digest instead, so the tag cannot end early.
        let braces = key.contains(['{', '}']);
        let tag = if braces {
            use sha2::Digest;
            hex::encode(&sha2::Sha256::digest(key.as_bytes())[..16])
        } else {
            key.to_owned()
        };
        Self {
            entry_in_slot: !braces,
            lease: format!("{{{tag}}}:lease"),
            live: format!("{{{tag}}}:live:"),
        }
    }

    fn stream(&self, token: &str) -> String {
        format!("{}{token}", self.live)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// An id for this process's tokens: unique enough across a fleet (time, process id, address).
fn instance_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.write_u32(std::process::id());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_tagged_with_the_whole_key() {
        let names = Names::new("holysheep:cache:v2:abc");
        assert_eq!(names.lease, "{holysheep:cache:v2:abc}:lease");
        assert_eq!(names.stream("t1"), "{holysheep:cache:v2:abc}:live:t1");
        let braces = Names::new("holysheep:cache:m{x}:abc");
        assert!(!braces.lease.contains("m{x}"), "{}", braces.lease);
        assert!(braces.lease.starts_with('{') && braces.lease.ends_with("}:lease"));
    }

    /// A miss's lookup and its claim are two round trips: an entry stored (and its lease let
    /// go) between them is found by the claim, which then neither leads nor follows.
    #[tokio::test]
    async fn a_claim_finds_an_entry_stored_since_the_lookup() {
        use crate::key::{DefaultKeyPolicy, KeyPolicy, KeyRequest, ParsedBody};
        use crate::store::CacheStore;

        let redis = holysheep_testkit::redis::RedisServer::from_env_or_start()
            .expect("a Redis for the test");
        let store = RedisStore::connect(redis.url())
            .await
            .expect("a valid URL")
            .timeout(Duration::from_millis(500));
        let prompt = format!(
            r#"{{"model": "m", "messages": [{{"role": "user", "content": "claim {}"}}]}}"#,
            std::process::id()
        );
        let body = ParsedBody::parse(prompt.as_bytes()).unwrap();
        let key = DefaultKeyPolicy::new()
            .key(&KeyRequest {
                path: "/chat/completions",
                upstream: "http://up",
                namespace: None,
                body: &body,
            })
            .unwrap();
        let fleet = FleetCoalescing::new(store.clone()).build();
        let mut stored = false;
        for _ in 0..100 {
            if store
                .put(key.as_str(), "entry".into(), Duration::from_secs(60))
                .await
                .is_ok()
            {
                stored = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(stored, "redis reachable");
        assert!(matches!(fleet.claim(&key, 1 << 20).await, Role::Stored));
    }

    #[test]
    fn tokens_differ() {
        let a = instance_id();
        assert_ne!(format!("{a:016x}-0"), format!("{a:016x}-1"));
    }
}
