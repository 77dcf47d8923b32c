//! Heap allocations per request through `QuotaLayer` (a counting global allocator,
//! `stats_alloc`): sequential requests over a `service_fn` upstream, after a warm-up, for the
//! upstream alone, a tenant without limits and a tenant with request, token and dollar limits
//! on the in-process backend. Unlike times, counts do not depend on the machine's load.

use std::alloc::System;
use std::convert::Infallible;

use bytes::Bytes;
use holysheep_core::signal::{Namespace, RequestModel};
use holysheep_quota::{Limits, Quota, QuotaLayer, QuotaPolicy};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Service, ServiceExt, service_fn};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const REQUESTS: u64 = 10_000;
const REQUEST: &str = r#"{"model":"gpt-4.1","temperature":0.2,"max_tokens":200,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"How do I keep HTTP connections warm?"}]}"#;
const ANSWER: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1,"model":"gpt-4.1","choices":[{"index":0,"message":{"role":"assistant","content":"Reuse a pooled client with keep-alive."},"finish_reason":"stop"}],"usage":{"prompt_tokens":31,"completion_tokens":9,"total_tokens":40}}"#;

fn request(tenant: &str) -> Request<Full<Bytes>> {
    let mut req = Request::post("/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(REQUEST.as_bytes())))
        .unwrap();
    req.extensions_mut().insert(Namespace(tenant.into()));
    req.extensions_mut().insert(RequestModel("gpt-4.1".into()));
    req
}

fn upstream() -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(ANSWER.as_bytes())))
                .unwrap(),
        )
    })
}

async fn per_request<S, B>(svc: S, tenant: &str) -> (f64, f64)
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let one = || async {
        let res = svc.clone().oneshot(request(tenant)).await.unwrap();
        res.into_body().collect().await.unwrap();
    };
    for _ in 0..100 {
        one().await;
    }
    let region = Region::new(GLOBAL);
    for _ in 0..REQUESTS {
        one().await;
    }
    let change = region.change();
    (
        (change.allocations + change.reallocations) as f64 / REQUESTS as f64,
        change.bytes_allocated as f64 / REQUESTS as f64,
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let policy = QuotaPolicy::new().tenant(
        "bench",
        Limits::new()
            .requests_per_minute(1_000_000_000)
            .tokens_per_minute(1_000_000_000_000)
            .dollars_per_day(1e12),
    );
    let layer = QuotaLayer::new(policy);
    let rows = [
        ("upstream alone", per_request(upstream(), "bench").await),
        (
            "quota, tenant without limits",
            per_request(Quota::new(upstream(), &layer), "someone").await,
        ),
        (
            "quota, limited tenant (memory)",
            per_request(Quota::new(upstream(), &layer), "bench").await,
        ),
    ];
    println!("{:<32} {:>12} {:>12}", "path", "allocs/req", "bytes/req");
    for (name, (allocs, bytes)) in rows {
        println!("{name:<32} {allocs:>12.1} {bytes:>12.0}");
    }
}
