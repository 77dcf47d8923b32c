//! The whole stack (`holysheep::Stack`: `MetricsLayer → CacheLayer → RetryLayer →
//! PoolLimitLayer → HolySheepClient`) against an in-process mock with zero latency, next to the
//! bare client the stack wraps.
//!
//! `miss` uses a new prompt per request (a unique counter in the message), so it measures what
//! the four layers add to a real upstream call; `hit` repeats one prompt, so it measures a cache
//! hit with every layer above it.
//!
//! `cargo bench --bench stack`

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use holysheep::Stack;
use holysheep_core::BoxError;
use holysheep_testkit::{
    MockConfig, UPSTREAM_KEY, chat_body, json_request, start_mock, upstream_builder,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::runtime::Runtime;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceExt};

type Boxed = BoxCloneSyncService<Request<Full<Bytes>>, Response<Bytes>, BoxError>;

fn chat(prompt: &str) -> String {
    chat_body("gpt-4.1", prompt).to_string()
}

/// Boxes a service whose answer body is read whole, so both sides of the comparison pay the
/// same collection cost.
fn boxed<S, B>(svc: S) -> Boxed
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    BoxCloneSyncService::new(
        svc.map_err(Into::into)
            .and_then(|res: Response<B>| async move {
                let (parts, body) = res.into_parts();
                let bytes = body.collect().await.map_err(Into::into)?.to_bytes();
                Ok::<_, BoxError>(Response::from_parts(parts, bytes))
            }),
    )
}

async fn call(svc: &Boxed, body: String) {
    let request = json_request(Method::POST, "/chat/completions", None, body);
    let res = svc.clone().oneshot(request).await.expect("answer");
    assert_eq!(res.status(), StatusCode::OK);
    black_box(res);
}

fn stack(c: &mut Criterion) {
    let runtime = Runtime::new().expect("tokio runtime");
    let mock = runtime.block_on(start_mock(MockConfig::default().api_key(UPSTREAM_KEY)));
    let stack = Stack::builder()
        .client(upstream_builder(&mock))
        .build()
        .expect("the stack builds");

    let bare = boxed(stack.client().clone());
    let full = boxed(stack);

    let counter = AtomicU64::new(0);
    let unique = || {
        chat(&format!(
            "question {}",
            counter.fetch_add(1, Ordering::Relaxed)
        ))
    };
    // The hit's body is the same every time: built once, so the bench times the stack, not JSON.
    let same = chat("the same question");
    runtime.block_on(async {
        call(&bare, unique()).await;
        call(&full, unique()).await;
        call(&full, same.clone()).await;
    });

    let mut group = c.benchmark_group("stack");
    group.bench_function("bare_client_miss", |b| {
        b.to_async(&runtime).iter(|| call(&bare, unique()))
    });
    group.bench_function("full_stack_miss", |b| {
        b.to_async(&runtime).iter(|| call(&full, unique()))
    });
    group.bench_function("full_stack_hit", |b| {
        b.to_async(&runtime).iter(|| call(&full, same.clone()))
    });
    group.finish();
}

criterion_group!(benches, stack);
criterion_main!(benches);
