//! The Redis cache stores against a real `redis-server` (started by the test on loopback, or
//! `REDIS_URL`): hits, TTL, a Redis that dies and comes back, and a three-node Redis Cluster.

use std::time::{Duration, Instant};

use bytes::Bytes;
use holysheep_cache::{CacheStore, MemoryStore, RedisStore, TieredStore};
use holysheep_testkit::redis::{RedisCluster, RedisServer, free_port, unique_prefix};

/// A roomy bound for the functional tests: the machine is shared and noisy.
const OP_TIMEOUT: Duration = Duration::from_millis(500);

/// Polls `store.ping()` until it answers, for at most `limit`.
async fn wait_until_reachable(store: &RedisStore, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        match store.ping().await {
            Ok(()) => return,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("redis not reachable within {limit:?}: {e}"),
        }
    }
}

/// Polls a put + get round trip until it works, for at most `limit`.
async fn wait_until_round_trip(store: &RedisStore, key: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    let value = Bytes::from_static(b"probe");
    loop {
        let ok = store
            .put(key, value.clone(), Duration::from_secs(60))
            .await
            .is_ok()
            && matches!(store.get(key).await, Ok(Some(v)) if v == value);
        if ok {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the store did not recover within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn redis_hit_after_miss() {
    let server = RedisServer::from_env_or_start().expect("a Redis for the test");
    let store = RedisStore::connect(server.url())
        .await
        .expect("a valid URL")
        .timeout(OP_TIMEOUT);
    assert_eq!(store.kind(), "redis");
    wait_until_reachable(&store, Duration::from_secs(10)).await;

    let prefix = unique_prefix("hit");
    let key = format!("{prefix}:chat");
    assert_eq!(store.get(&key).await.expect("get"), None);

    let answer = Bytes::from_static(br#"{"choices":[{"message":{"content":"hi"}}]}"#);
    store
        .put(&key, answer.clone(), Duration::from_secs(60))
        .await
        .expect("put");
    assert_eq!(store.get(&key).await.expect("get"), Some(answer));

    // Binary-safe and not limited to small values.
    let binary: Bytes = (0..=255u8)
        .cycle()
        .take(1 << 20)
        .collect::<Vec<u8>>()
        .into();
    let big = format!("{prefix}:binary");
    store
        .put(&big, binary.clone(), Duration::from_secs(60))
        .await
        .expect("put 1 MiB");
    assert_eq!(store.get(&big).await.expect("get 1 MiB"), Some(binary));

    // Clones share the connection and the data.
    let clone = store.clone();
    assert!(clone.get(&key).await.expect("get").is_some());
}

#[tokio::test]
async fn redis_entries_expire_after_their_ttl() {
    let server = RedisServer::from_env_or_start().expect("a Redis for the test");
    let store = RedisStore::connect(server.url())
        .await
        .expect("a valid URL")
        .timeout(OP_TIMEOUT);
    wait_until_reachable(&store, Duration::from_secs(10)).await;

    let key = format!("{}:ttl", unique_prefix("ttl"));
    // Sub-second TTLs round up to `EX 1`, never down to "no expiry" or an error.
    store
        .put(&key, Bytes::from_static(b"v"), Duration::from_millis(300))
        .await
        .expect("put");
    assert!(store.get(&key).await.expect("get").is_some());
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_eq!(store.get(&key).await.expect("get"), None);
}

#[tokio::test]
async fn redis_that_dies_fails_fast_and_is_used_again_when_back() {
    let mut server = RedisServer::from_env_or_start().expect("a Redis for the test");
    if server.is_external() {
        eprintln!("skipped: REDIS_URL is set, and this test must kill and restart its own Redis");
        return;
    }
    let store = RedisStore::connect(server.url())
        .await
        .expect("a valid URL")
        .timeout(Duration::from_millis(200));
    wait_until_reachable(&store, Duration::from_secs(10)).await;
    let prefix = unique_prefix("restart");
    let key = format!("{prefix}:k");
    store
        .put(&key, Bytes::from_static(b"before"), Duration::from_secs(60))
        .await
        .expect("put while up");

    server.kill();
    for i in 0..20 {
        let started = Instant::now();
        let got = store.get(&key).await;
        let put = store
            .put(&key, Bytes::from_static(b"during"), Duration::from_secs(60))
            .await;
        let ping = store.ping().await;
        let took = started.elapsed();
        assert!(got.is_err(), "get #{i} while Redis is down: {got:?}");
        assert!(put.is_err(), "put #{i} while Redis is down: {put:?}");
        assert!(ping.is_err(), "ping #{i} while Redis is down");
        let err = got.unwrap_err();
        assert!(err.is_unavailable() || err.is_timeout(), "{err}");
        assert!(
            took < Duration::from_secs(2),
            "three operations took {took:?} while Redis was down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Same port, same store: no rebuild, no restart of the caller.
    server.restart().expect("redis-server restarts on its port");
    wait_until_round_trip(&store, &format!("{prefix}:probe"), Duration::from_secs(15)).await;
    // The new server started empty (no persistence).
    assert_eq!(store.get(&key).await.expect("get after restart"), None);
    store
        .put(&key, Bytes::from_static(b"after"), Duration::from_secs(60))
        .await
        .expect("put after restart");
    assert_eq!(
        store.get(&key).await.expect("get after restart").as_deref(),
        Some(&b"after"[..])
    );
}

#[tokio::test]
async fn redis_store_starts_while_redis_is_down() {
    if std::env::var("REDIS_URL").is_ok_and(|u| !u.is_empty()) {
        eprintln!("skipped: REDIS_URL is set, and this test must start its own Redis");
        return;
    }
    let port = free_port().expect("a free loopback port");
    let store = RedisStore::connect(&format!("redis://127.0.0.1:{port}"))
        .await
        .expect("connect succeeds while Redis is down")
        .timeout(Duration::from_millis(200));
    let started = Instant::now();
    let err = store.get("k").await.expect_err("nothing listens yet");
    assert!(err.is_unavailable() || err.is_timeout(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));

    let _server = RedisServer::start_on(port, &[]).expect("redis-server starts");
    wait_until_round_trip(&store, &unique_prefix("late"), Duration::from_secs(15)).await;
}

#[tokio::test]
async fn redis_cluster_spreads_keys_and_reads_them_back() {
    let cluster = RedisCluster::start(3).expect("a three-node Redis Cluster");
    let urls = cluster.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let store = RedisStore::cluster(&urls)
        .await
        .expect("valid URLs")
        .timeout(Duration::from_secs(2));
    assert_eq!(store.kind(), "redis-cluster");
    wait_until_reachable(&store, Duration::from_secs(15)).await;

    let keys: Vec<String> = (0..300)
        .map(|i| format!("holysheep:cache:gpt-4o-mini:{i:032x}"))
        .collect();
    for (i, key) in keys.iter().enumerate() {
        store
            .put(
                key,
                Bytes::from(format!("answer {i}")),
                Duration::from_secs(60),
            )
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }
    for (i, key) in keys.iter().enumerate() {
        let got = store
            .get(key)
            .await
            .unwrap_or_else(|e| panic!("get {key}: {e}"));
        assert_eq!(got, Some(Bytes::from(format!("answer {i}"))), "{key}");
    }
    assert_eq!(
        store.get("holysheep:cache:none:0").await.expect("get"),
        None
    );

    // Every master holds a share: the keys really went to different slots and nodes.
    let mut total = 0;
    for port in cluster.ports() {
        let out = cluster
            .cli(port, &["dbsize"])
            .unwrap_or_else(|e| panic!("dbsize of {port}: {e}"));
        let n: u64 = out
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("dbsize of {port}: {out:?} ({e})"));
        assert!(n > 0, "node {port} holds no keys");
        total += n;
    }
    assert_eq!(total, keys.len() as u64);
}

/// Issue 18, item 2: an instance's memory copy of a Redis entry expires with the Redis entry,
/// whatever the front TTL.
#[tokio::test]
async fn a_memory_copy_expires_with_its_redis_entry() {
    let server = RedisServer::from_env_or_start().expect("a Redis for the test");
    let redis = RedisStore::connect(server.url())
        .await
        .expect("a valid URL")
        .timeout(OP_TIMEOUT);
    wait_until_reachable(&redis, Duration::from_secs(10)).await;
    let tiered = |redis: RedisStore| {
        TieredStore::new(MemoryStore::new(1 << 20), redis).front_ttl(Duration::from_secs(60))
    };
    let (a, b) = (tiered(redis.clone()), tiered(redis.clone()));
    let key = format!("{}:k", unique_prefix("tiered-ttl"));
    a.put(&key, Bytes::from_static(b"v"), Duration::from_secs(2))
        .await
        .expect("put");
    let (_, left) = redis
        .get_with_ttl(&key)
        .await
        .expect("get")
        .expect("present");
    assert!(left.is_some_and(|left| left <= Duration::from_secs(2)));
    assert!(b.get(&key).await.expect("get").is_some(), "a hit on B...");
    assert!(
        b.front().get(&key).await.expect("get").is_some(),
        "...copied"
    );
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    assert_eq!(redis.get(&key).await.expect("get"), None);
    assert_eq!(
        b.get(&key).await.expect("get"),
        None,
        "B's copy expired with the Redis entry"
    );
}
