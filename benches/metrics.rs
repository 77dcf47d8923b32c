//! What `MetricsLayer` costs per request: a JSON chat completion through the layer, end to end
//! (call, answer, every body frame, metrics emitted at the body's end), against the same
//! service without the layer.
//!
//! Everything is ready at once, so each request is driven with `now_or_never` and no runtime
//! noise: the difference between `bare` and the others is the layer itself.
//!
//! `cargo bench --bench metrics -- --warm-up-time 1 --measurement-time 2`

mod support;

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use holysheep_core::signal::RequestModel;
use holysheep_metrics::MetricsLayer;
use http::Request;
use tower::{Layer, service_fn};

use support::{answer, one};

/// A request for `model`, as the gateway hands it on.
fn request(model: &Arc<str>) -> Request<()> {
    let mut req = Request::new(());
    req.extensions_mut().insert(RequestModel(model.clone()));
    req
}

fn bench(c: &mut Criterion) {
    let model: Arc<str> = Arc::from("gpt-4.1");
    let mut group = c.benchmark_group("metrics_json_request");

    let mut bare = service_fn(answer);
    group.bench_function("bare", |b| b.iter(|| one(&mut bare, request(&model))));

    // No recorder installed: the `metrics` facade's no-op recorder.
    let mut measured = MetricsLayer::new().layer(service_fn(answer));
    group.bench_function("noop_recorder", |b| {
        b.iter(|| one(&mut measured, request(&model)))
    });

    // The same without reading `usage` from the body: what the JSON parse costs.
    let mut unparsed = MetricsLayer::new()
        .max_body_capture(0)
        .layer(service_fn(answer));
    group.bench_function("noop_recorder_no_body_parse", |b| {
        b.iter(|| one(&mut unparsed, request(&model)))
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
            b.iter(|| one(&mut measured, request(&model)));
            // Drain histogram samples between runs, as scrapes would.
            handle.run_upkeep();
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
