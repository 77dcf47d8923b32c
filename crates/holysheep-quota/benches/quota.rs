//! What `QuotaLayer` costs a request, over a `service_fn` upstream that answers at once with a
//! JSON answer and its `usage`; each iteration sends one request and reads its answer to the end.
//!
//! - `quota/upstream_alone`: the upstream without the layer (the baseline).
//! - `quota/unlimited_tenant`: through the layer for a tenant without limits (body read only).
//! - `quota/memory`: a tenant with request and token limits (never reached) on the in-process
//!   backend: check, token estimate, rate-limit headers, usage read from the answer, settle.
//! - `quota/redis`: the same on `RedisQuota` over loopback (one script round trip per check;
//!   the settle is sent in the background), against `REDIS_URL` or a `redis-server` the bench
//!   starts; skipped with a note when neither is available.
//! - `quota/check_memory`, `quota/check_redis`: the check alone, without a request or an
//!   upstream: the tenant's limits looked up, its tokens estimated from the request body, the
//!   backend's decision (and charge).
//! - `quota/estimate`: the token estimate of the request body alone (part of the check).

use std::convert::Infallible;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use holysheep_core::signal::{Namespace, RequestModel};
use holysheep_quota::bench::Checker;
use holysheep_quota::{Limits, Quota, QuotaLayer, QuotaPolicy, RedisQuota};
use holysheep_testkit::redis::{RedisServer, unique_prefix};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt, service_fn};

const REQUEST: &str = r#"{"model":"gpt-4.1","temperature":0.2,"max_tokens":200,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"How do I keep HTTP connections warm?"}]}"#;
const ANSWER: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"gpt-4.1","choices":[{"index":0,"message":{"role":"assistant","content":"Reuse a pooled client with keep-alive."},"finish_reason":"stop"}],"usage":{"prompt_tokens":31,"completion_tokens":9,"total_tokens":40}}"#;

fn upstream() -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(ANSWER.as_bytes())))
                .unwrap(),
        )
    })
}

fn request(tenant: &str) -> Request<Full<Bytes>> {
    let mut req = Request::post("/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(REQUEST.as_bytes())))
        .unwrap();
    req.extensions_mut().insert(Namespace(tenant.into()));
    req.extensions_mut().insert(RequestModel("gpt-4.1".into()));
    req
}

fn policy() -> QuotaPolicy {
    // Limits far above what a bench sends: every check passes and is fully done.
    QuotaPolicy::new().tenant(
        "bench",
        Limits::new()
            .requests_per_minute(1_000_000_000)
            .tokens_per_minute(1_000_000_000_000)
            .dollars_per_day(1e12),
    )
}

fn bench(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let mut group = c.benchmark_group("quota");

    group.bench_function("upstream_alone", |b| {
        let svc = upstream();
        b.to_async(&rt).iter(|| {
            let svc = svc.clone();
            async move {
                let res = svc.oneshot(request("bench")).await.unwrap();
                black_box(res.into_body().collect().await.unwrap().to_bytes())
            }
        });
    });

    let quota = |layer: QuotaLayer,
                 name: &str,
                 tenant: &'static str,
                 group: &mut criterion::BenchmarkGroup<'_, _>| {
        let svc = Quota::new(upstream(), &layer);
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| {
                let svc = svc.clone();
                async move {
                    let res = svc.oneshot(request(tenant)).await.unwrap();
                    assert_eq!(res.status(), 200);
                    black_box(res.into_body().collect().await.unwrap().to_bytes())
                }
            });
        });
    };
    quota(
        QuotaLayer::new(policy()),
        "unlimited_tenant",
        "someone",
        &mut group,
    );
    quota(QuotaLayer::new(policy()), "memory", "bench", &mut group);

    let check = |layer: &QuotaLayer, name: &str, group: &mut criterion::BenchmarkGroup<'_, _>| {
        let checker = Checker::new(layer);
        let tenant = Namespace("bench".into());
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                assert!(checker.check(&tenant, REQUEST.as_bytes()).await);
            });
        });
    };
    check(&QuotaLayer::new(policy()), "check_memory", &mut group);
    group.bench_function("estimate", |b| {
        b.iter(|| holysheep_quota::bench::estimate(black_box(REQUEST.as_bytes())));
    });

    match RedisServer::from_env_or_start() {
        Ok(redis) => {
            let store = RedisQuota::connect(redis.url())
                .unwrap()
                .key_prefix(unique_prefix("quota-bench"));
            let layer = rt.block_on(async { QuotaLayer::with_redis(policy(), store) });
            check(&layer, "check_redis", &mut group);
            quota(layer, "redis", "bench", &mut group);
            drop(redis);
        }
        Err(error) => eprintln!("quota/redis skipped: {error}"),
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
