//! Instances sharing a real `redis-server` (or a Redis Cluster): vectors recorded on one are hits
//! on the others, a new instance bootstraps from the stream, and Redis killed costs nothing but
//! sharing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use holysheep_cache::{Cache, CacheLayer, CacheStore, MemoryStore, RedisStore, TieredStore};
use holysheep_client::HolySheepClient;
use holysheep_mock::{EmbeddingMode, MockConfig, MockServer};
use holysheep_semantic::{RedisFleet, SemanticCache, SemanticCacheLayer};
use holysheep_testkit::redis::{RedisCluster, RedisServer, unique_prefix};
use holysheep_testkit::{
    Reply, chat_request, expected_content, start_mock, upstream_client, wait_until,
};
use serde_json::{Value, json};
use tower::{Layer, ServiceExt};

type Stack = Cache<SemanticCache<HolySheepClient>>;

async fn instance(mock: &MockServer, redis: &str, stream: &str) -> Stack {
    let shared = RedisStore::connect(redis).await.expect("a Redis URL");
    let fleet = RedisFleet::connect(redis)
        .expect("a Redis URL")
        .stream(stream.to_owned());
    instance_on(mock, shared, fleet)
}

/// An instance whose exact cache is a memory tier over `shared`, sharing vectors through `fleet`.
fn instance_on(mock: &MockServer, shared: RedisStore, fleet: RedisFleet) -> Stack {
    let store: Arc<dyn CacheStore> = Arc::new(TieredStore::new(MemoryStore::new(16 << 20), shared));
    // An embedding timeout no loaded machine runs out of: the fleet is what is tested here.
    let semantic = SemanticCacheLayer::new()
        .embedding_timeout(Duration::from_secs(30))
        .fleet(fleet)
        .layer(upstream_client(mock));
    CacheLayer::with_store(store).layer(semantic)
}

fn ask(question: &str) -> Value {
    json!({"model": "gpt-4.1", "messages": [{"role": "user", "content": question}]})
}

async fn post(stack: &Stack, body: &Value) -> Reply {
    let res = stack
        .clone()
        .oneshot(chat_request(body))
        .await
        .expect("an answer");
    let reply = Reply::from_response(res).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    reply
}

fn assert_semantic_hit(reply: &Reply) {
    assert_eq!(
        reply.header("cache-status"),
        Some("holysheep; hit; detail=semantic"),
        "{:?}",
        reply.headers
    );
}

/// A question answered on `a` (the first the mock sees): its paraphrase is a semantic hit on
/// `b`, with `a`'s answer, once the vector reached `b` (a few seconds at most).
async fn written_on_a_is_a_hit_on_b(mock: &MockServer, a: &Stack, b: &Stack) {
    let first = post(a, &ask("What's the capital of France?")).await;
    assert_eq!(first.header("x-cache"), Some("MISS"));
    let start = Instant::now();
    assert!(
        wait_until(Duration::from_secs(3), || b.get_ref().index().len() == 1).await,
        "the vector never reached instance B"
    );
    println!("vector visible on B after {:?}", start.elapsed());
    let reply = post(b, &ask("what is the capital of france")).await;
    assert_semantic_hit(&reply);
    assert_eq!(reply.json()["id"], first.json()["id"]);
    assert_eq!(mock.stats().chat_requests(), 1);
}

#[tokio::test]
async fn a_vector_recorded_on_one_instance_is_a_hit_on_another() {
    let Ok(redis) = RedisServer::from_env_or_start() else {
        panic!("redis-server on PATH, or REDIS_URL");
    };
    let mock = start_mock(MockConfig::default().embedding_mode(EmbeddingMode::WordOverlap)).await;
    let stream = format!("{{{}}}:vectors", unique_prefix("semantic-fleet"));
    let a = instance(&mock, redis.url(), &stream).await;
    let b = instance(&mock, redis.url(), &stream).await;

    written_on_a_is_a_hit_on_b(&mock, &a, &b).await;

    // A new instance starts from the stream.
    let c = instance(&mock, redis.url(), &stream).await;
    assert!(wait_until(Duration::from_secs(2), || c.get_ref().index().len() == 1).await);
    let reply = post(&c, &ask("WHAT is the capital of France")).await;
    assert_semantic_hit(&reply);
    assert_eq!(mock.stats().chat_requests(), 1);
}

#[tokio::test]
async fn redis_killed_still_answers_from_each_instance() {
    let Ok(mut redis) = RedisServer::start() else {
        panic!("redis-server on PATH");
    };
    let mock = start_mock(MockConfig::default().embedding_mode(EmbeddingMode::WordOverlap)).await;
    let stream = format!("{{{}}}:vectors", unique_prefix("semantic-killed"));
    let a = instance(&mock, redis.url(), &stream).await;
    let b = instance(&mock, redis.url(), &stream).await;
    post(&a, &ask("What's the capital of France?")).await;
    assert!(wait_until(Duration::from_secs(2), || b.get_ref().index().len() == 1).await);

    redis.kill();
    // A new question: answered upstream, recorded locally.
    let q = ask("How do I keep HTTP connections warm?");
    let reply = post(&a, &q).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.content(), expected_content(&q));
    // A paraphrase on the same instance: a local hit from the memory tier.
    let reply = post(&a, &ask("how do i keep http connections warm")).await;
    assert_semantic_hit(&reply);
    // On B the vector of the first question arrived before the kill, its answer lives in Redis
    // only: a miss, answered upstream, never an error.
    let q = ask("what is the capital of france");
    let reply = post(&b, &q).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-cache"), Some("MISS"));
    assert_eq!(reply.content(), expected_content(&q));
    // Recorded on B alone while Redis is down, beside the vector that came from A.
    assert_eq!(b.get_ref().index().len(), 2);
}

#[tokio::test]
async fn instances_sharing_a_redis_cluster_share_vectors() {
    let cluster = RedisCluster::start(3).expect("redis-server and redis-cli on PATH");
    let urls = cluster.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let mock = start_mock(MockConfig::default().embedding_mode(EmbeddingMode::WordOverlap)).await;
    let mut instances = Vec::new();
    for _ in 0..2 {
        let shared = RedisStore::cluster(&urls).await.expect("cluster URLs");
        let deadline = Instant::now() + Duration::from_secs(15);
        while shared.ping().await.is_err() {
            assert!(Instant::now() < deadline, "the cluster never answered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The default stream name: what a gateway on a Cluster uses.
        let fleet = RedisFleet::cluster(&urls).expect("cluster URLs");
        instances.push(instance_on(&mock, shared, fleet));
    }
    let (a, b) = (&instances[0], &instances[1]);

    written_on_a_is_a_hit_on_b(&mock, a, b).await;

    // Cluster-safe: the stream is one key with a hash tag, held by exactly one master; every
    // other master redirects.
    let stream = RedisFleet::DEFAULT_STREAM;
    assert!(stream.starts_with('{') && stream.contains("}:"), "{stream}");
    let holders: Vec<u16> = cluster
        .ports()
        .into_iter()
        .filter(|&port| {
            let answer = cluster.cli(port, &["XLEN", stream]).expect("redis-cli");
            answer.trim().parse::<u64>().is_ok_and(|n| n >= 1)
        })
        .collect();
    assert_eq!(holders.len(), 1, "the stream on {holders:?}");
}
