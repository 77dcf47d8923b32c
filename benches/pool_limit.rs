//! The cost `PoolLimitLayer` adds: a call that finds a free slot (and frees it when the body
//! is dropped) against the bare `service_fn`, the same with the adaptive limit on (a clock
//! read and a controller update per call), and a call shed because the pool is full.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use holysheep_pool_limit::{Aimd, PoolLimitLayer};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::{Layer, ServiceExt, service_fn};

fn request() -> Request<()> {
    Request::post("/chat/completions")
        .body(())
        .expect("a valid request")
}

fn pool_limit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let inner = service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
    });
    let limited = PoolLimitLayer::new(100, 30).layer(inner);
    let adaptive = PoolLimitLayer::new(100, 30)
        .adaptive(Aimd::default())
        .layer(inner);
    let full = PoolLimitLayer::new(1, 1)
        .queue_timeout(Duration::from_secs(5))
        .max_queue(0)
        .layer(inner);
    // Hold the only slot so every call to `full` is shed.
    let held = rt
        .block_on(full.clone().oneshot(request()))
        .expect("the first call gets the slot");

    let mut group = c.benchmark_group("pool_limit");
    group.bench_function("bare_service_fn", |b| {
        b.to_async(&rt).iter(|| async {
            let res = inner.oneshot(request()).await.expect("ok");
            assert_eq!(res.status(), StatusCode::OK);
        })
    });
    group.bench_function("passthrough", |b| {
        b.to_async(&rt).iter(|| async {
            let res = limited.clone().oneshot(request()).await.expect("ok");
            assert_eq!(res.status(), StatusCode::OK);
        })
    });
    group.bench_function("adaptive_passthrough", |b| {
        b.to_async(&rt).iter(|| async {
            let res = adaptive.clone().oneshot(request()).await.expect("ok");
            assert_eq!(res.status(), StatusCode::OK);
        })
    });
    group.bench_function("shed", |b| {
        b.to_async(&rt).iter(|| async {
            let err = full.clone().oneshot(request()).await.expect_err("shed");
            assert!(holysheep_pool_limit::is_overloaded(&*err));
        })
    });
    group.finish();
    drop(held);
}

criterion_group!(benches, pool_limit);
criterion_main!(benches);
