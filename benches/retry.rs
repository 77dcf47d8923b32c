//! The cost `RetryLayer` adds when nothing fails: one call through the layer around a
//! `service_fn` that answers at once, against the bare `service_fn`.

use std::convert::Infallible;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use holysheep_retry::RetryLayer;
use http::{Request, Response, StatusCode};
use tower::{Layer, ServiceExt, service_fn};

fn request() -> Request<Bytes> {
    Request::post("/chat/completions")
        .header("content-type", "application/json")
        .body(Bytes::from_static(br#"{"model":"gpt-4.1","messages":[]}"#))
        .expect("a valid request")
}

fn passthrough(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let inner = service_fn(|_req: Request<Bytes>| async {
        Ok::<_, Infallible>(Response::new(Bytes::from_static(b"{}")))
    });
    let retry = {
        let _guard = rt.enter();
        RetryLayer::new().layer(inner)
    };

    let mut group = c.benchmark_group("retry");
    group.bench_function("bare_service_fn", |b| {
        b.to_async(&rt).iter(|| async {
            let res = inner.oneshot(request()).await.expect("ok");
            assert_eq!(res.status(), StatusCode::OK);
        })
    });
    group.bench_function("passthrough", |b| {
        b.to_async(&rt).iter(|| async {
            let res = retry.clone().oneshot(request()).await.expect("ok");
            assert_eq!(res.status(), StatusCode::OK);
        })
    });
    group.finish();
}

criterion_group!(benches, passthrough);
criterion_main!(benches);
