//! Fleet coalescing: several cache instances (each a `CacheLayer` with its own in-flight table,
//! Redis connections and upstream client, as separate gateways have) sharing one Redis node or
//! a Redis Cluster, in front of one mock upstream.

use std::time::{Duration, Instant};

use bytes::Bytes;
use holysheep_cache::{Cache, CacheLayer, FleetCoalescing, RedisStore};
use holysheep_client::HolySheepClient;
use holysheep_mock::Latency;
use holysheep_testkit::redis::{RedisCluster, RedisServer};
use holysheep_testkit::{
    MockConfig, MockServer, Reply, UPSTREAM_KEY, chat_body, chat_request, expected_content,
    sse_chunks, start_mock, stream_body, stream_content, upstream_client, wait_until,
};
use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::{Layer, ServiceExt};

type Svc = Cache<HolySheepClient>;

/// A roomy bound for every Redis operation: the machine is shared and noisy.
const OP_TIMEOUT: Duration = Duration::from_millis(500);
/// A short lease, so that a leader that dies is noticed quickly.
const LEASE: Duration = Duration::from_millis(600);

async fn mock_with(cfg: MockConfig) -> MockServer {
    start_mock(cfg.api_key(UPSTREAM_KEY)).await
}

/// Upstream chat calls, counted as they arrive (failed ones too).
fn calls(mock: &MockServer) -> u64 {
    mock.stats().requests_for_path("/v1/chat/completions")
}

async fn reachable(store: &RedisStore) {
    let key = format!("fleet-probe-{}", std::process::id());
    let ok = async {
        loop {
            use holysheep_cache::CacheStore;
            if store
                .put(&key, Bytes::from_static(b"x"), Duration::from_secs(5))
                .await
                .is_ok()
                && store.get(&key).await.is_ok_and(|v| v.is_some())
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(15), ok)
        .await
        .expect("redis reachable");
}

/// One instance: its own Redis connections, cache and client.
async fn instance(urls: &[String], mock: &MockServer) -> Svc {
    instance_with(urls, mock, FleetCoalescing::DEFAULT_MAX_WAIT).await
}

async fn instance_with(urls: &[String], mock: &MockServer, max_wait: Duration) -> Svc {
    let store = match urls {
        [url] => RedisStore::connect(url).await,
        urls => RedisStore::cluster(&urls.iter().map(String::as_str).collect::<Vec<_>>()).await,
    }
    .expect("valid URLs")
    .timeout(OP_TIMEOUT);
    reachable(&store).await;
    CacheLayer::new(store.clone())
        .upstream(mock.base_url())
        .fleet(FleetCoalescing::new(store).lease(LEASE).max_wait(max_wait))
        .layer(upstream_client(mock))
}

async fn fleet(urls: &[String], mock: &MockServer, n: usize) -> Vec<Svc> {
    let mut instances = Vec::new();
    for _ in 0..n {
        instances.push(instance(urls, mock).await);
    }
    instances
}

/// `n` identical requests at once, spread over the instances in turn.
async fn burst(instances: &[Svc], body: &Value, n: usize) -> Vec<Reply> {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let svc = instances[i % instances.len()].clone();
            tokio::spawn(svc.oneshot(chat_request(body)))
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        let res = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("nobody hangs")
            .expect("no panic")
            .expect("an answer");
        replies.push(Reply::from_response(res).await);
    }
    replies
}

fn unique(prompt: &str) -> String {
    format!("{prompt} {}-{:?}", std::process::id(), Instant::now())
}

async fn ninety_json_requests_make_one_call(urls: &[String]) {
    let mock =
        mock_with(MockConfig::default().latency(Latency::fixed(Duration::from_millis(400)))).await;
    let instances = fleet(urls, &mock, 3).await;
    let body = chat_body("gpt-4.1", &unique("fleet json"));
    let replies = burst(&instances, &body, 90).await;
    assert_eq!(calls(&mock), 1, "one upstream call for the fleet");
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.content(), expected_content(&body));
    }
    let from_fleet = replies
        .iter()
        .filter(|r| r.header("cache-status") == Some("holysheep; hit; collapsed; detail=fleet"))
        .count();
    assert!(from_fleet >= 1, "remote followers say so");
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ninety_json_requests_over_three_instances_make_one_upstream_call() {
    let redis = RedisServer::from_env_or_start().expect("a Redis for the test");
    ninety_json_requests_make_one_call(&[redis.url().to_owned()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_over_a_redis_cluster() {
    let cluster = RedisCluster::start(3).expect("a Redis Cluster for the test");
    ninety_json_requests_make_one_call(&cluster.urls()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_followers_replay_a_stream_live() {
    let redis = RedisServer::from_env_or_start().expect("a Redis for the test");
    let mock = mock_with(
        MockConfig::default()
            .stream_chunks(8)
            .stream_gap(Duration::from_millis(200)),
    )
    .await;
    let instances = fleet(&[redis.url().to_owned()], &mock, 3).await;
    let body = stream_body("gpt-4.1", &unique("fleet stream"), true);
    let tasks: Vec<_> = (0..90)
        .map(|i| {
            let svc = instances[i % 3].clone();
            let body = body.clone();
            tokio::spawn(async move {
                let res = svc.oneshot(chat_request(&body)).await.expect("an answer");
                let miss = res.headers()["x-cache"] == "MISS";
                let mut body = res.into_body();
                let first = body.frame().await.expect("a chunk").expect("no error");
                let first_at = Instant::now();
                let mut data = first.into_data().expect("data").to_vec();
                data.extend_from_slice(&body.collect().await.expect("the rest").to_bytes());
                (miss, first_at, Instant::now(), data)
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("nobody hangs")
                .expect("no panic"),
        );
    }
    assert_eq!(calls(&mock), 1);
    let leaders: Vec<_> = results.iter().filter(|r| r.0).collect();
    assert_eq!(leaders.len(), 1, "one leader in the fleet");
    let leader_end = leaders[0].2;
    for (_, first_at, _, data) in &results {
        assert!(
            *first_at < leader_end,
            "every first chunk came before the leader's end"
        );
        let (chunks, done) = sse_chunks(data);
        assert!(done);
        assert_eq!(stream_content(&chunks), expected_content(&body));
    }
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_answers_are_shared_not_multiplied() {
    let redis = RedisServer::from_env_or_start().expect("a Redis for the test");
    let mock = mock_with(
        MockConfig::default()
            .rate_limit_rate(1.0)
            .latency(Latency::fixed(Duration::from_secs(1))),
    )
    .await;
    let instances = fleet(&[redis.url().to_owned()], &mock, 3).await;
    let body = chat_body("gpt-4.1", &unique("fleet 429"));
    let replies = burst(&instances, &body, 90).await;
    assert_eq!(calls(&mock), 1);
    assert!(
        replies
            .iter()
            .all(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
    );
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upstream_call_costs_at_most_one_more() {
    let redis = RedisServer::from_env_or_start().expect("a Redis for the test");
    let mock =
        mock_with(MockConfig::default().latency(Latency::fixed(Duration::from_millis(300)))).await;
    let instances = fleet(&[redis.url().to_owned()], &mock, 3).await;
    let body = chat_body("gpt-4.1", &unique("fleet reset"));
    mock.reset_next(1);
    // The leader's instance first, so the failing call is the fleet leader's.
    let leader = tokio::spawn(instances[0].clone().oneshot(chat_request(&body)));
    assert!(wait_until(Duration::from_secs(10), || mock.stats().in_flight() >= 1).await);
    let replies = burst(&instances[1..], &body, 60).await;
    let _ = leader.await;
    assert!(
        replies.iter().all(|r| r.status == StatusCode::OK),
        "the other instances' requests were answered"
    );
    assert_eq!(replies[0].content(), expected_content(&body));
    assert_eq!(calls(&mock), 2, "one more call after the failure");
    mock.shutdown().await;
}

#[test]
fn a_leader_instance_killed_midway_is_taken_over() {
    let redis = RedisServer::from_env_or_start().expect("a Redis for the test");
    let url = redis.url().to_owned();
    let main = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mock = main.block_on(mock_with(
        // Long enough that the leader's call cannot end before it is killed, however loaded
        // the machine.
        MockConfig::default().latency(Latency::fixed(Duration::from_secs(4))),
    ));
    let body = chat_body("gpt-4.1", &unique("fleet kill"));

    // The leader instance lives on a runtime of its own, shut down hard midway: its tasks stop
    // where they are, as in a process that died (the lease is neither renewed nor released).
    let doomed = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let leader_svc = doomed.block_on(instance(std::slice::from_ref(&url), &mock));
    let _leader = doomed.spawn(leader_svc.oneshot(chat_request(&body)));
    let (kill, killed) = tokio::sync::oneshot::channel::<()>();
    let thread_rt = std::thread::spawn(move || {
        let _ = doomed.block_on(killed);
        doomed.shutdown_background();
    });

    main.block_on(async {
        assert!(wait_until(Duration::from_secs(10), || mock.stats().in_flight() >= 1).await);
        let instances = fleet(&[url], &mock, 2).await;
        let replies = tokio::spawn({
            let body = body.clone();
            async move { burst(&instances, &body, 60).await }
        });
        // The followers are waiting on the leader when it dies.
        tokio::time::sleep(Duration::from_millis(300)).await;
        kill.send(()).unwrap();
        thread_rt.join().unwrap();
        let replies = replies.await.unwrap();
        for reply in &replies {
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(reply.content(), expected_content(&body));
        }
        assert_eq!(calls(&mock), 2, "one takeover call, no more");
        mock.shutdown().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_burst_costs_nothing_visible() {
    let mut redis = RedisServer::start().expect("a Redis of the test's own");
    let mock =
        mock_with(MockConfig::default().latency(Latency::fixed(Duration::from_millis(300)))).await;
    let instances = fleet(&[redis.url().to_owned()], &mock, 3).await;
    let body = chat_body("gpt-4.1", &unique("fleet redis down"));
    let first = tokio::spawn({
        let instances = instances.clone();
        let body = body.clone();
        async move { burst(&instances, &body, 45).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    redis.kill();
    let second = burst(&instances, &body, 45).await;
    let first = first.await.unwrap();
    for reply in first.iter().chain(&second) {
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.content(), expected_content(&body));
    }
    // Per instance at most: the first burst's one fleet call, then one per instance.
    assert!(calls(&mock) <= 4, "{}", calls(&mock));
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_of_the_other_shape_is_served_from_the_stored_entry() {
    let redis = RedisServer::from_env_or_start().expect("a Redis for the test");
    let mock =
        mock_with(MockConfig::default().latency(Latency::fixed(Duration::from_millis(300)))).await;
    let instances = fleet(&[redis.url().to_owned()], &mock, 2).await;
    let prompt = unique("fleet shapes");
    let json = chat_body("gpt-4.1", &prompt);
    let stream = stream_body("gpt-4.1", &prompt, true);
    let leader = tokio::spawn(instances[0].clone().oneshot(chat_request(&json)));
    assert!(wait_until(Duration::from_secs(10), || mock.stats().in_flight() >= 1).await);
    let res = instances[1]
        .clone()
        .oneshot(chat_request(&stream))
        .await
        .expect("an answer");
    let follower = Reply::from_response(res).await;
    let leader = Reply::from_response(leader.await.unwrap().unwrap()).await;
    assert_eq!(leader.content(), expected_content(&json));
    assert_eq!(
        follower.header("cache-status"),
        Some("holysheep; hit; collapsed; detail=fleet")
    );
    let (chunks, done) = sse_chunks(follower.text().as_bytes());
    assert!(done, "a whole stream");
    assert_eq!(stream_content(&chunks), expected_content(&json));
    assert_eq!(
        calls(&mock),
        1,
        "the stream came from the JSON answer's entry"
    );
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_waits_no_longer_than_its_bound() {
    let redis = RedisServer::from_env_or_start().expect("a Redis for the test");
    let mock =
        mock_with(MockConfig::default().latency(Latency::fixed(Duration::from_secs(3)))).await;
    let url = [redis.url().to_owned()];
    let leader_instance = instance(&url, &mock).await;
    let impatient = instance_with(&url, &mock, Duration::from_millis(200)).await;
    let body = chat_body("gpt-4.1", &unique("fleet impatient"));
    let leader = tokio::spawn(leader_instance.oneshot(chat_request(&body)));
    assert!(wait_until(Duration::from_secs(10), || mock.stats().in_flight() >= 1).await);
    let res = impatient
        .oneshot(chat_request(&body))
        .await
        .expect("an answer");
    let follower = Reply::from_response(res).await;
    assert_eq!(follower.status, StatusCode::OK);
    assert_eq!(
        follower.header("x-cache"),
        Some("MISS"),
        "it called upstream itself"
    );
    assert_eq!(calls(&mock), 2);
    let leader = Reply::from_response(leader.await.unwrap().unwrap()).await;
    assert_eq!(leader.content(), follower.content());
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_redis_holds_no_request_back() {
    let port = holysheep_testkit::redis::free_port().expect("a free port");
    let redis = RedisServer::start_on(port, &["--enable-debug-command", "yes"])
        .expect("a Redis of the test's own");
    let mock =
        mock_with(MockConfig::default().latency(Latency::fixed(Duration::from_millis(50)))).await;
    let instances = fleet(&[redis.url().to_owned()], &mock, 3).await;
    let body = chat_body("gpt-4.1", &unique("fleet redis stalled"));
    // Redis answers nothing for 6 s (its event loop sleeps), while every request is sent.
    let port = redis.port().to_string();
    let sleep = tokio::task::spawn_blocking(move || {
        std::process::Command::new("redis-cli")
            .args(["-p", &port, "DEBUG", "SLEEP", "6"])
            .output()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let replies = burst(&instances, &body, 30).await;
    assert!(
        !sleep.is_finished(),
        "every request was answered while Redis still slept"
    );
    for reply in &replies {
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.content(), expected_content(&body));
    }
    assert!(
        calls(&mock) <= 3,
        "coalesced per instance: {}",
        calls(&mock)
    );
    let slept = sleep.await.unwrap().expect("redis-cli runs");
    assert_eq!(
        String::from_utf8_lossy(&slept.stdout).trim(),
        "OK",
        "Redis did sleep"
    );
    mock.shutdown().await;
}
