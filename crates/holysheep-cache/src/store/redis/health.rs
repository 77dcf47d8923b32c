//! Which Redis nodes failed recently, and which Cluster node holds a key.
//!
//! A [`Gate`] per node makes operations fail at once for a while after a connection failure,
//! then lets one operation probe the node. For a Redis Cluster, [`ClusterHealth`] keeps one gate
//! per master and the owner of every slot (from `CLUSTER SLOTS`), so a dead master costs only
//! the keys it holds: the other masters' keys are served as usual.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use redis::Value;

use crate::shared::{WarnLimiter, lock};
use crate::store::StoreError;

/// Hash slots of a Redis Cluster.
const SLOTS: usize = 16384;

/// No known owner, in [`Owners::by_slot`].
const NO_NODE: u16 = u16::MAX;

/// Nanoseconds since the first call, on the monotonic clock; never 0.
fn now_ns() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Whether an operation may use a node now.
pub(super) enum Pass<'a> {
    /// The node is up.
    Up,
    /// The node failed recently: fail at once, for about this long still.
    Down(Duration),
    /// The node failed, and its pause is over: this operation probes it. The guard puts the
    /// gate back down unless [`Probe::passed`] is called.
    Probe(Probe<'a>),
}

/// The health of one Redis node (or of a whole store while nothing finer is known).
#[derive(Debug)]
pub(super) struct Gate {
    /// `host:port`, for messages; never a URL (which may hold a password).
    name: Box<str>,
    /// Nanoseconds ([`now_ns`]) until which operations fail at once; 0 when the node is up.
    down_until: AtomicU64,
    /// Whether one operation is probing the node now; the others keep failing at once.
    probing: AtomicBool,
    warn: WarnLimiter,
}

impl Gate {
    pub(super) fn new(name: impl Into<Box<str>>) -> Self {
        Self {
            name: name.into(),
            down_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            warn: WarnLimiter::default(),
        }
    }

    pub(super) fn name(&self) -> &str {
        &self.name
    }

    pub(super) fn is_down(&self) -> bool {
        self.down_until.load(Ordering::Relaxed) != 0
    }

    /// Whether an operation may go to the node now; a probe that fails puts the node down for
    /// `pause` again.
    pub(super) fn pass(&self, pause: Duration) -> Pass<'_> {
        let until = self.down_until.load(Ordering::Relaxed);
        if until == 0 {
            return Pass::Up;
        }
        let now = now_ns();
        if now < until {
            return Pass::Down(Duration::from_nanos(until - now));
        }
        if self.probing.swap(true, Ordering::AcqRel) {
            return Pass::Down(Duration::ZERO);
        }
        Pass::Probe(Probe {
            gate: self,
            pause,
            passed: false,
        })
    }

    /// A connection to the node failed: operations fail at once for `pause`. Logged at warn,
    /// at most once per node per [`WARN_EVERY`](crate::shared::WARN_EVERY).
    pub(super) fn failed(&self, pause: Duration, error: &StoreError) {
        let until = now_ns().saturating_add(nanos(pause)).max(1);
        self.down_until.store(until, Ordering::Relaxed);
        self.probing.store(false, Ordering::Release);
        if let Some(suppressed) = self.warn.admit() {
            tracing::warn!(
                node = %self.name,
                %error,
                suppressed,
                "redis node unreachable; its keys are served as misses until it answers again"
            );
        }
    }

    /// The node answered: it is up.
    fn answered(&self) {
        self.probing.store(false, Ordering::Release);
        if self.down_until.swap(0, Ordering::Relaxed) != 0 {
            tracing::info!(node = %self.name, "redis node answers again");
        }
    }
}

/// One operation's probe of a node that failed; puts the gate back down if dropped unpassed
/// (the probe failed, timed out or was cancelled).
pub(super) struct Probe<'a> {
    gate: &'a Gate,
    pause: Duration,
    passed: bool,
}

impl Probe<'_> {
    /// The node answered.
    pub(super) fn passed(mut self) {
        self.passed = true;
        self.gate.answered();
    }
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        if !self.passed {
            // Down again from now: the pause restarts, without a new log line.
            let until = now_ns().saturating_add(nanos(self.pause)).max(1);
            self.gate.down_until.store(until, Ordering::Relaxed);
            self.gate.probing.store(false, Ordering::Release);
        }
    }
}

/// A master of a Redis Cluster.
#[derive(Debug)]
pub(super) struct Node {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) gate: Gate,
}

/// Which node owns each slot.
struct Owners {
    /// Index into `nodes` per slot; [`NO_NODE`] when unknown.
    by_slot: Box<[u16]>,
    nodes: Vec<Arc<Node>>,
}

/// The health of a Redis Cluster, per master.
pub(super) struct ClusterHealth {
    /// The seed nodes, asked for the slot map while no master is known.
    seeds: Vec<(String, u16)>,
    /// Used while the owner of a key's slot is unknown, and for operations without a key.
    whole: Gate,
    owners: RwLock<Arc<Owners>>,
    /// Every master seen, so a node keeps its health across slot map refreshes.
    known: std::sync::Mutex<HashMap<(String, u16), Arc<Node>>>,
    /// When the next slot map refresh may start ([`now_ns`]), and whether one runs.
    next_refresh: AtomicU64,
    refreshing: AtomicBool,
}

impl ClusterHealth {
    pub(super) fn new(seeds: Vec<(String, u16)>) -> Self {
        let name = seeds
            .iter()
            .map(|(host, port)| format!("{host}:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        Self {
            seeds,
            whole: Gate::new(format!("cluster {name}")),
            owners: RwLock::new(Arc::new(Owners {
                by_slot: vec![NO_NODE; SLOTS].into_boxed_slice(),
                nodes: Vec::new(),
            })),
            known: std::sync::Mutex::new(HashMap::new()),
            next_refresh: AtomicU64::new(0),
            refreshing: AtomicBool::new(false),
        }
    }

    /// The gate for operations without a key, or whose slot's owner is unknown.
    pub(super) fn whole(&self) -> &Gate {
        &self.whole
    }

    /// The master that owns `key`'s slot, when the slot map is known.
    pub(super) fn node_for(&self, key: &str) -> Option<Arc<Node>> {
        let owners = self
            .owners
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let index = *owners.by_slot.get(usize::from(slot(key.as_bytes())))?;
        owners.nodes.get(usize::from(index)).cloned()
    }

    /// Whether a slot map refresh may start now (at most one at a time, one per `pause`); the
    /// caller runs it and then calls [`refreshed`](Self::refreshed).
    pub(super) fn begin_refresh(&self, pause: Duration) -> bool {
        if now_ns() < self.next_refresh.load(Ordering::Relaxed) {
            return false;
        }
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.next_refresh
            .store(now_ns().saturating_add(nanos(pause)), Ordering::Relaxed);
        true
    }

    /// The refresh begun by [`begin_refresh`](Self::begin_refresh) is over.
    pub(super) fn refreshed(&self) {
        self.refreshing.store(false, Ordering::Release);
    }

    /// Nodes to ask for the slot map: the masters that are up, then the seeds not known to be
    /// down. A node that is down is never asked: asking would make redis-rs try (and log) a
    /// connection to it.
    pub(super) fn candidates(&self) -> Vec<(String, u16)> {
        let owners = Arc::clone(
            &self
                .owners
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let mut out: Vec<(String, u16)> = owners
            .nodes
            .iter()
            .filter(|node| !node.gate.is_down())
            .map(|node| (node.host.clone(), node.port))
            .collect();
        let known = lock(&self.known);
        for seed in &self.seeds {
            let down = known.get(seed).is_some_and(|node| node.gate.is_down());
            if !down && !out.contains(seed) {
                out.push(seed.clone());
            }
        }
        out
    }

    /// Installs a `CLUSTER SLOTS` answer got from `asked`; `false` if it could not be read.
    pub(super) fn install(&self, answer: &Value, asked: &(String, u16)) -> bool {
        let Some(ranges) = parse_slots(answer, asked) else {
            return false;
        };
        let mut known = lock(&self.known);
        let mut nodes: Vec<Arc<Node>> = Vec::new();
        let mut by_slot = vec![NO_NODE; SLOTS].into_boxed_slice();
        for (start, end, addr) in ranges {
            let node = Arc::clone(known.entry(addr.clone()).or_insert_with(|| {
                Arc::new(Node {
                    gate: Gate::new(format!("{}:{}", addr.0, addr.1)),
                    host: addr.0.clone(),
                    port: addr.1,
                })
            }));
            let index = match nodes.iter().position(|n| Arc::ptr_eq(n, &node)) {
                Some(index) => index,
                None => {
                    nodes.push(node);
                    nodes.len() - 1
                }
            };
            let Ok(index) = u16::try_from(index) else {
                return false;
            };
            for slot in start..=end {
                if let Some(owner) = by_slot.get_mut(usize::from(slot)) {
                    *owner = index;
                }
            }
        }
        // Nodes that own no slot any more (a master replaced by its replica) are forgotten.
        known.retain(|_, node| nodes.iter().any(|n| Arc::ptr_eq(n, node)));
        drop(known);
        *self
            .owners
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Arc::new(Owners { by_slot, nodes });
        true
    }
}

/// Slots `start..=end` and the `(host, port)` of their master.
type SlotRange = (u16, u16, (String, u16));

/// The slot ranges of a `CLUSTER SLOTS` answer: `(start, end, (host, port))` of each master.
/// A master with no address of its own (an empty host) is the node that was asked.
fn parse_slots(answer: &Value, asked: &(String, u16)) -> Option<Vec<SlotRange>> {
    let Value::Array(ranges) = answer else {
        return None;
    };
    let mut out = Vec::with_capacity(ranges.len());
    for range in ranges {
        let Value::Array(fields) = range else {
            return None;
        };
        let [Value::Int(start), Value::Int(end), Value::Array(master), ..] = fields.as_slice()
        else {
            return None;
        };
        let (start, end) = (u16::try_from(*start).ok()?, u16::try_from(*end).ok()?);
        if start > end || usize::from(end) >= SLOTS {
            return None;
        }
        let host = match master.first()? {
            Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok()?,
            Value::SimpleString(text) => text.clone(),
            _ => return None,
        };
        let Value::Int(port) = master.get(1)? else {
            return None;
        };
        let port = u16::try_from(*port).ok()?;
        let host = if host.is_empty() || host == "?" {
            asked.0.clone()
        } else {
            host
        };
        out.push((start, end, (host, port)));
    }
    Some(out)
}

/// The hash slot of `key`: CRC16 (XMODEM) of the key, or of its `{hash tag}`, modulo 16384, as
/// Redis Cluster computes it.
fn slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tagged) % SLOTS as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(n: i64) -> Value {
        Value::Int(n)
    }

    fn master(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    #[test]
    fn slots_are_those_redis_computes() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(slot(b"123456789"), 12739);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"), "an empty tag is no tag");
    }

    #[test]
    fn a_failed_gate_fails_fast_then_lets_one_probe_through() {
        let minute = Duration::from_secs(60);
        let gate = Gate::new("n:1");
        assert!(matches!(gate.pass(minute), Pass::Up));
        gate.failed(minute, &StoreError::unavailable("refused"));
        assert!(matches!(gate.pass(minute), Pass::Down(left) if left > Duration::from_secs(50)));

        let eager = Gate::new("n:2");
        eager.failed(Duration::ZERO, &StoreError::unavailable("refused"));
        let Pass::Probe(probe) = eager.pass(Duration::ZERO) else {
            panic!("the pause is over: probe")
        };
        assert!(
            matches!(eager.pass(Duration::ZERO), Pass::Down(_)),
            "one probe at a time"
        );
        drop(probe);
        assert!(eager.is_down(), "an unpassed probe leaves the node down");
        let Pass::Probe(probe) = eager.pass(minute) else {
            panic!("probe again")
        };
        drop(probe);
        assert!(
            matches!(eager.pass(minute), Pass::Down(left) if left > Duration::from_secs(50)),
            "a failed probe restarts the whole pause"
        );
        eager.failed(Duration::ZERO, &StoreError::unavailable("refused"));
        let Pass::Probe(probe) = eager.pass(minute) else {
            panic!("probe again")
        };
        probe.passed();
        assert!(matches!(eager.pass(minute), Pass::Up));
    }

    #[test]
    fn the_slot_map_names_each_keys_master() {
        let health = ClusterHealth::new(vec![("127.0.0.1".into(), 7000)]);
        assert!(
            health.node_for("k").is_none(),
            "unknown before the first map"
        );
        let answer = Value::Array(vec![
            Value::Array(vec![int(0), int(8191), master("127.0.0.1", 7000)]),
            Value::Array(vec![int(8192), int(16383), master("", 7001)]),
        ]);
        assert!(health.install(&answer, &("10.0.0.9".into(), 7001)));
        let low = health.node_for("123456789").unwrap(); // slot 12739
        assert_eq!((low.host.as_str(), low.port), ("10.0.0.9", 7001));
        let high = health.node_for("foo{a}").unwrap();
        assert_eq!(high.port, if slot(b"a") < 8192 { 7000 } else { 7001 });
        low.gate
            .failed(Duration::from_secs(60), &StoreError::unavailable("down"));
        assert_eq!(health.candidates(), vec![("127.0.0.1".to_owned(), 7000)]);
        // The failed node keeps its health across a refresh.
        assert!(health.install(&answer, &("10.0.0.9".into(), 7001)));
        assert!(health.node_for("123456789").unwrap().gate.is_down());
        assert!(!health.install(&Value::Int(1), &("x".into(), 1)));
        assert!(!health.install(
            &Value::Array(vec![Value::Array(vec![int(5), int(99999), master("h", 1)])]),
            &("x".into(), 1)
        ));
    }

    #[test]
    fn refreshes_are_one_at_a_time_and_paced() {
        let health = ClusterHealth::new(Vec::new());
        assert!(health.begin_refresh(Duration::ZERO));
        assert!(!health.begin_refresh(Duration::ZERO), "one at a time");
        health.refreshed();
        assert!(health.begin_refresh(Duration::from_secs(60)));
        health.refreshed();
        assert!(!health.begin_refresh(Duration::from_secs(60)), "paced");
    }
}
