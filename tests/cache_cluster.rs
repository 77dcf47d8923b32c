//! `RedisStore` on the testkit's three-node Redis Cluster with one master killed (issue 18,
//! items 1 and 6): only the dead master's keys miss, and the log says so once per node instead
//! of once per connection attempt.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use holysheep_cache::{CacheStore, RedisStore};
use holysheep_testkit::redis::RedisCluster;

/// Everything logged in this test binary (redis-rs' `log` records too, through tracing-log).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        let bytes = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn captured() -> &'static Captured {
    static LOG: OnceLock<Captured> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Captured::default();
        let writer = log.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init()
            .expect("the only subscriber of this test binary");
        log
    })
}

/// A three-master cluster that keeps serving the slots of live masters when one dies (without
/// replicas, Redis would otherwise refuse every key after the node timeout).
fn cluster() -> RedisCluster {
    let cluster = RedisCluster::start(3).expect("a three-node Redis Cluster");
    for port in cluster.ports() {
        cluster
            .cli(
                port,
                &["config", "set", "cluster-require-full-coverage", "no"],
            )
            .expect("config set");
    }
    cluster
}

struct Filled {
    store: RedisStore,
    /// The port of each key's master.
    keys: Vec<(String, u16)>,
}

/// A store on `cluster` with 60 keys spread over the masters.
async fn filled(cluster: &RedisCluster) -> Filled {
    let urls = cluster.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let store = RedisStore::cluster(&urls)
        .await
        .expect("valid URLs")
        .timeout(Duration::from_millis(500));
    let deadline = Instant::now() + Duration::from_secs(15);
    while store.ping().await.is_err() {
        assert!(Instant::now() < deadline, "the cluster never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let names: Vec<String> = (0..60)
        .map(|i| format!("holysheep:cache:m:{i:032x}"))
        .collect();
    for name in &names {
        store
            .put(
                name,
                Bytes::from_static(b"answer"),
                Duration::from_secs(600),
            )
            .await
            .unwrap_or_else(|e| panic!("put {name}: {e}"));
    }
    let mut keys = Vec::new();
    for port in cluster.ports() {
        let held = cluster.cli(port, &["keys", "*"]).expect("keys");
        for name in held.lines().filter(|l| !l.is_empty()) {
            keys.push((name.to_owned(), port));
        }
    }
    assert_eq!(keys.len(), names.len(), "every key found on its master");
    Filled { store, keys }
}

/// Kills the master on `port` (its process exits; nothing listens there any more).
fn kill(cluster: &RedisCluster, port: u16) {
    // The node closes the connection as it exits, which redis-cli may report as an error.
    let _ = cluster.cli(port, &["shutdown", "nosave"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline, "node {port} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One read of every key: how many of the live masters' keys were hits, and how many of the
/// dead master's keys were anything but an error.
async fn round(filled: &Filled, dead: u16) -> (usize, usize) {
    let (mut live_hits, mut dead_answers) = (0, 0);
    for (key, port) in &filled.keys {
        let got = filled.store.get(key).await;
        if *port == dead {
            dead_answers += usize::from(got.is_ok());
        } else {
            live_hits += usize::from(matches!(got, Ok(Some(_))));
        }
    }
    (live_hits, dead_answers)
}

#[tokio::test]
async fn a_dead_master_costs_only_its_own_keys() {
    captured();
    let cluster = cluster();
    let filled = filled(&cluster).await;
    let dead = cluster.ports()[0];
    let live = filled.keys.iter().filter(|(_, port)| *port != dead).count();
    assert!(live > 0 && live < filled.keys.len());
    kill(&cluster, dead);

    // A few rounds to meet the dead node, then every round, for about two seconds.
    for i in 0..80 {
        let (live_hits, dead_answers) = round(&filled, dead).await;
        if i >= 3 {
            assert_eq!(
                live_hits, live,
                "round {i}: the live masters' keys are all hits"
            );
            assert_eq!(dead_answers, 0, "round {i}: the dead master's keys fail");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_dead_master_is_logged_once_not_per_attempt() {
    let log = captured();
    let cluster = cluster();
    let filled = filled(&cluster).await;
    let dead = cluster.ports()[2];
    let node = format!("127.0.0.1:{dead}");
    kill(&cluster, dead);
    let about_node = |lines: &[String]| -> (usize, usize) {
        let redis_rs = lines
            .iter()
            .filter(|l| l.contains(" redis::") && l.contains(&node))
            .count();
        let ours = lines
            .iter()
            .filter(|l| l.contains("redis node unreachable") && l.contains(&node))
            .count();
        (redis_rs, ours)
    };

    // Traffic on every key, the dead master's included, for about three seconds: the first
    // second to meet the failure, then two of steady state.
    let started = Instant::now();
    let mut settled: Option<(usize, usize)> = None;
    while started.elapsed() < Duration::from_secs(3) {
        round(&filled, dead).await;
        if settled.is_none() && started.elapsed() >= Duration::from_secs(1) {
            settled = Some(about_node(&log.lines()));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (redis_rs_then, _) = settled.expect("a second passed");
    let (redis_rs_now, ours) = about_node(&log.lines());
    assert_eq!(
        redis_rs_now, redis_rs_then,
        "redis-rs tried (and logged) no connection to the dead node in steady state"
    );
    assert_eq!(ours, 1, "the store said once that the node is unreachable");
}
