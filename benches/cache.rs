//! `CacheLayer` in process, over a `service_fn` upstream that answers at once:
//!
//! - `cache/hit_memory`: a hit through `Cache` on `MemoryStore` (request parse, key, lookup,
//!   response, body read).
//! - `cache/hit_redis`: the same on a `RedisStore` over loopback, against `REDIS_URL` or a
//!   `redis-server` the bench starts; skipped with a note when neither is available.
//! - `cache/json_{miss,passthrough}` and `cache/stream_{miss,passthrough}`: what a miss pays for
//!   recording. The miss sends `Cache-Control: no-cache` (no lookup, so the two differ only by the
//!   coalescing, recording, judging and store write), the passthrough `no-store`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use holysheep_cache::{Cache, CacheLayer, CacheStore, MemoryStore, RedisStore};
use holysheep_core::BoxError;
use holysheep_testkit::redis::RedisServer;
use holysheep_testkit::{ChatAnswer, json_request, stream_events};
use http::{Method, Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::runtime::Runtime;
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt, service_fn};

type Body = UnsyncBoxBody<Bytes, BoxError>;
type Upstream = BoxCloneService<Request<Full<Bytes>>, Response<Body>, BoxError>;

const REQUEST: &str = r#"{"model":"gpt-4.1","temperature":0.2,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"How do I keep HTTP connections warm?"}]}"#;
const STREAM_REQUEST: &str = r#"{"model":"gpt-4.1","temperature":0.2,"stream":true,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"How do I keep HTTP connections warm?"}]}"#;

/// An upstream that answers at once: JSON, or SSE in 20 chunks when the request asks for a
/// stream.
fn upstream() -> Upstream {
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
        async move {
            let stream = req
                .into_body()
                .collect()
                .await?
                .to_bytes()
                .windows(13)
                .any(|w| w == b"\"stream\":true");
            let res = if stream {
                let frames = futures_util::stream::iter(
                    sse.into_iter().map(|c| Ok(http_body::Frame::data(c))),
                );
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(StreamBody::new(frames).boxed_unsync())?
            } else {
                Response::builder()
                    .header("content-type", "application/json")
                    .body(Full::new(json_body).map_err(|e| match e {}).boxed_unsync())?
            };
            Ok::<_, BoxError>(res)
        }
    }))
}

fn request(body: &'static str, cache_control: Option<&'static str>) -> Request<Full<Bytes>> {
    let mut req = json_request(Method::POST, "/chat/completions", None, body);
    if let Some(cc) = cache_control {
        req.headers_mut()
            .insert("cache-control", http::HeaderValue::from_static(cc));
    }
    req
}

async fn roundtrip(svc: &Cache<Upstream>, req: Request<Full<Bytes>>) -> Bytes {
    let res = svc.clone().oneshot(req).await.expect("answered");
    res.into_body()
        .collect()
        .await
        .expect("whole body")
        .to_bytes()
}

/// Fills the cache with one answer and waits until it is readable.
fn warm(rt: &Runtime, svc: &Cache<Upstream>) {
    rt.block_on(async {
        roundtrip(svc, request(REQUEST, None)).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let res = svc
                .clone()
                .oneshot(request(REQUEST, None))
                .await
                .expect("answered");
            if res.headers()["x-cache"] == "HIT" {
                return;
            }
            assert!(Instant::now() < deadline, "the entry never became a hit");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
}

fn hits(c: &mut Criterion) {
    let rt = Runtime::new().expect("a tokio runtime");
    let svc = rt.block_on(async { CacheLayer::new(MemoryStore::new(64 << 20)).layer(upstream()) });
    warm(&rt, &svc);
    c.bench_function("cache/hit_memory", |b| {
        b.to_async(&rt)
            .iter(|| async { black_box(roundtrip(&svc, request(REQUEST, None)).await) })
    });

    match RedisServer::from_env_or_start() {
        Ok(server) => {
            let url = server.url();
            let svc = rt.block_on(async {
                let store = RedisStore::connect(url).await.expect("a valid Redis URL");
                let deadline = Instant::now() + Duration::from_secs(10);
                while store.ping().await.is_err() {
                    assert!(Instant::now() < deadline, "redis at {url} not reachable");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                CacheLayer::new(store).layer(upstream())
            });
            warm(&rt, &svc);
            c.bench_function("cache/hit_redis", |b| {
                b.to_async(&rt)
                    .iter(|| async { black_box(roundtrip(&svc, request(REQUEST, None)).await) })
            });
        }
        Err(why) => eprintln!("cache/hit_redis skipped: {why}"),
    }
}

fn recording_cost(c: &mut Criterion) {
    let rt = Runtime::new().expect("a tokio runtime");
    let svc = rt.block_on(async { CacheLayer::new(MemoryStore::new(64 << 20)).layer(upstream()) });
    for (name, body) in [("json", REQUEST), ("stream", STREAM_REQUEST)] {
        c.bench_function(&format!("cache/{name}_miss"), |b| {
            b.to_async(&rt).iter(|| async {
                black_box(roundtrip(&svc, request(body, Some("no-cache"))).await)
            })
        });
        c.bench_function(&format!("cache/{name}_passthrough"), |b| {
            b.to_async(&rt).iter(|| async {
                black_box(roundtrip(&svc, request(body, Some("no-store"))).await)
            })
        });
    }
}

criterion_group!(benches, hits, recording_cost);
criterion_main!(benches);
