//! Fleet coalescing: what it adds to a miss, and how soon a remote follower gets its first chunk.
//!
//! Against a `redis-server` the bench starts itself (or `REDIS_URL`), over loopback; each
//! "instance" is a `CacheLayer` on its own `RedisStore` connection, in front of a `service_fn`
//! upstream that answers at once.
//!
//! - `fleet/miss_local_only` vs `fleet/miss_fleet_leader`: a JSON miss (a new prompt each time)
//!   on a Redis-backed cache without and with fleet coalescing. The difference is the lease round
//!   trip (the writer task's mirror, renewal and release run beside the answer, not in front).
//! - `fleet/first_chunk_local_follower` vs `fleet/first_chunk_remote_follower`: a stream whose
//!   leader has sent its head and first chunk and holds the rest; the time from a second
//!   request to its first chunk when it joins on the same instance (in-process coalescing) and
//!   on another instance (lease lookup, a connection for the blocking read, `XREAD` of the
//!   leader's stream).
//!
//! `cargo bench --bench fleet`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use holysheep_cache::{Cache, CacheLayer, CacheStore, FleetCoalescing, RedisStore};
use holysheep_core::BoxError;
use holysheep_testkit::redis::RedisServer;
use holysheep_testkit::{ChatAnswer, json_request, stream_events};
use http::{Method, Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::runtime::Runtime;
use tokio::sync::Notify;
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt, service_fn};

type Body = UnsyncBoxBody<Bytes, BoxError>;
type Upstream = BoxCloneService<Request<Full<Bytes>>, Response<Body>, BoxError>;

/// An upstream that answers at once: JSON, or for a stream its first chunk at once and the rest
/// when `release` is notified.
fn upstream(release: Arc<Notify>) -> Upstream {
    let answer = ChatAnswer::new(
        "gpt-4.1",
        "Reuse a pooled client with keep-alive. ".repeat(8),
    )
    .id("chatcmpl-bench")
    .created(1);
    let json_body = answer.to_json();
    let sse = stream_events(&answer, 20, false);
    BoxCloneService::new(service_fn(move |req: Request<Full<Bytes>>| {
        let json_body = json_body.clone();
        let sse = sse.clone();
        let release = Arc::clone(&release);
        async move {
            let bytes = req.into_body().collect().await?.to_bytes();
            let stream = bytes.windows(13).any(|w| w == b"\"stream\":true");
            let res = if stream {
                let (first, rest) = sse.split_at(1);
                let first = first.to_vec();
                let rest = rest.to_vec();
                let frames = futures_util::stream::unfold(
                    (first, Some(rest), release),
                    |(mut now, later, release)| async move {
                        if let Some(chunk) = now.pop() {
                            return Some((
                                Ok(http_body::Frame::data(chunk)),
                                (now, later, release),
                            ));
                        }
                        let later = later?;
                        release.notified().await;
                        let mut chunks: Vec<Bytes> = later;
                        chunks.reverse();
                        let chunk = chunks.pop()?;
                        Some((Ok(http_body::Frame::data(chunk)), (chunks, None, release)))
                    },
                );
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(UnsyncBoxBody::new(StreamBody::new(frames)))?
            } else {
                Response::builder()
                    .header("content-type", "application/json")
                    .body(UnsyncBoxBody::new(
                        Full::new(json_body).map_err(|e| match e {}),
                    ))?
            };
            Ok::<_, BoxError>(res)
        }
    }))
}

fn request(prompt: &str, stream: bool) -> Request<Full<Bytes>> {
    let body = format!(
        r#"{{"model":"gpt-4.1","stream":{stream},"messages":[{{"role":"user","content":"{prompt}"}}]}}"#
    );
    json_request(Method::POST, "/chat/completions", None, body)
}

async fn store(url: &str) -> RedisStore {
    let store = RedisStore::connect(url)
        .await
        .expect("a valid URL")
        .timeout(Duration::from_millis(500));
    for _ in 0..200 {
        if store.ping().await.is_ok() {
            return store;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("redis not reachable");
}

async fn instance(url: &str, fleet: bool, release: &Arc<Notify>) -> Cache<Upstream> {
    let store = store(url).await;
    let mut layer = CacheLayer::new(store.clone());
    if fleet {
        layer = layer.fleet(FleetCoalescing::new(store));
    }
    layer.layer(upstream(Arc::clone(release)))
}

fn fleet(c: &mut Criterion) {
    let redis = match RedisServer::from_env_or_start() {
        Ok(redis) => redis,
        Err(e) => {
            eprintln!("fleet benches skipped: no Redis ({e})");
            return;
        }
    };
    let rt = Runtime::new().expect("a runtime");
    let release = Arc::new(Notify::new());
    let local = rt.block_on(instance(redis.url(), false, &release));
    let leader = rt.block_on(instance(redis.url(), true, &release));
    let other = rt.block_on(instance(redis.url(), true, &release));
    let n = AtomicU64::new(0);
    let next = || n.fetch_add(1, Ordering::Relaxed);

    let mut group = c.benchmark_group("fleet");
    group.sample_size(50);
    for (name, svc) in [("miss_local_only", &local), ("miss_fleet_leader", &leader)] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let req = request(&format!("miss {}", next()), false);
                let svc = svc.clone();
                async move {
                    let res = svc.oneshot(req).await.expect("an answer");
                    res.into_body().collect().await.expect("a body");
                }
            });
        });
    }
    for (name, follower) in [
        ("first_chunk_local_follower", &leader),
        ("first_chunk_remote_follower", &other),
    ] {
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let leader = leader.clone();
                let follower = follower.clone();
                let release = Arc::clone(&release);
                let prompts: Vec<String> =
                    (0..iters).map(|_| format!("stream {}", next())).collect();
                async move {
                    let mut total = Duration::ZERO;
                    for prompt in prompts {
                        let res = leader
                            .clone()
                            .oneshot(request(&prompt, true))
                            .await
                            .expect("the leader's answer");
                        let mut lead_body = res.into_body();
                        lead_body
                            .frame()
                            .await
                            .expect("a first chunk")
                            .expect("data");
                        let start = Instant::now();
                        let res = follower
                            .clone()
                            .oneshot(request(&prompt, true))
                            .await
                            .expect("the follower's answer");
                        let mut body = res.into_body();
                        body.frame().await.expect("a first chunk").expect("data");
                        total += start.elapsed();
                        release.notify_one();
                        let (a, b) = tokio::join!(lead_body.collect(), body.collect());
                        a.expect("the leader's rest");
                        b.expect("the follower's rest");
                    }
                    total
                }
            });
        });
    }
    group.finish();
    drop(redis);
}

criterion_group!(benches, fleet);
criterion_main!(benches);
