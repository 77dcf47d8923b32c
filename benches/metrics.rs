//! What `MetricsLayer` costs per request: a JSON chat completion through the layer, end to end
//! (call, answer, every body frame, metrics emitted at the body's end), against the same
//! service without the layer.
//!
//! Everything is ready at once, so each request is driven with `now_or_never` and no runtime
//! noise: the difference between `bare` and the others is the layer itself.
//!
//! `cargo bench --bench metrics -- --warm-up-time 1 --measurement-time 2`

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use holysheep_core::signal::RequestModel;
use holysheep_metrics::MetricsLayer;
use holysheep_testkit::{chat_body, mock_answer};
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tower::{Layer, Service, service_fn};

/// The mock upstream's answer to one question, usage included.
static ANSWER: LazyLock<Bytes> = LazyLock::new(|| {
    mock_answer(&chat_body(
        "gpt-4.1",
        "Why does connection pooling cut latency?",
    ))
    .to_json()
});

fn answer(_req: Request<()>) -> Ready<Result<Response<Full<Bytes>>, Infallible>> {
    ready(Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(ANSWER.clone()))
        .expect("a valid response")))
}

/// One request: call, then read the body to its end as a server would.
fn one<S, B>(svc: &mut S, model: &Arc<str>)
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
    B: Body + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut req = Request::new(());
    req.extensions_mut().insert(RequestModel(model.clone()));
    let Some(Ok(res)) = svc.call(req).now_or_never() else {
        unreachable!("the inner service answers at once")
    };
    let mut body = res.into_body();
    while let Some(Some(frame)) = body.frame().now_or_never() {
        black_box(frame.expect("an infallible body"));
    }
}

fn bench(c: &mut Criterion) {
    let model: Arc<str> = Arc::from("gpt-4.1");
    let mut group = c.benchmark_group("metrics_json_request");

    let mut bare = service_fn(answer);
    group.bench_function("bare", |b| b.iter(|| one(&mut bare, &model)));

    // No recorder installed: the `metrics` facade's no-op recorder.
    let mut measured = MetricsLayer::new().layer(service_fn(answer));
    group.bench_function("noop_recorder", |b| b.iter(|| one(&mut measured, &model)));

    // The same without reading `usage` from the body: what the JSON parse costs.
    let mut unparsed = MetricsLayer::new()
        .max_body_capture(0)
        .layer(service_fn(answer));
    group.bench_function("noop_recorder_no_body_parse", |b| {
        b.iter(|| one(&mut unparsed, &model))
    });

    let recorder = holysheep_metrics::prometheus::builder()
        .expect("valid buckets")
        .build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        // As `prometheus::install` does for a real gateway.
        holysheep_metrics::describe();
        let mut measured = MetricsLayer::new().layer(service_fn(answer));
        group.bench_function("prometheus_recorder", |b| {
            b.iter(|| one(&mut measured, &model));
            // Drain histogram samples between runs, as scrapes would.
            handle.run_upkeep();
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
