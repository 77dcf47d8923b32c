//! What the request and attempt spans cost per request: a JSON chat completion through
//! `MetricsLayer` and `AttemptTraceLayer` (the request span, one attempt span, every field
//! recorded), with no subscriber, with a `fmt` subscriber at `info` (what the gateway's logs
//! install; the spans are `debug`, so not built) and at `debug` (the spans formatted), and
//! with an OpenTelemetry layer batching spans to an exporter that drops them (the OTLP path
//! without the network).
//!
//! Everything is ready at once, so each request is driven with `now_or_never` and no runtime
//! noise; the metrics go to the facade's no-op recorder, so the differences are the spans.
//!
//! `cargo bench --bench tracing -- --warm-up-time 1 --measurement-time 2`

mod support;

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use holysheep_core::signal::{Namespace, RequestModel};
use holysheep_metrics::{AttemptTraceLayer, MetricsLayer};
use http::Request;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::testing::trace::NoopSpanExporter;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tower::{Layer, service_fn};
use tracing_subscriber::layer::SubscriberExt;

use support::{answer, one};

/// A chat request of a tenant, as the gateway hands it on.
fn request(model: &Arc<str>, tenant: &Arc<str>) -> Request<()> {
    let mut req = Request::post("/v1/chat/completions")
        .body(())
        .expect("a valid request");
    req.extensions_mut().insert(RequestModel(model.clone()));
    req.extensions_mut().insert(Namespace(tenant.clone()));
    req
}

fn bench(c: &mut Criterion) {
    let model: Arc<str> = Arc::from("gpt-4.1");
    let tenant: Arc<str> = Arc::from("acme");
    let stack = || {
        MetricsLayer::new()
            .server("api.holysheep.ai", Some(443))
            .layer(
                AttemptTraceLayer::new()
                    .server("api.holysheep.ai", Some(443))
                    .layer(service_fn(answer)),
            )
    };
    let mut group = c.benchmark_group("tracing_json_request");

    let mut bare = service_fn(answer);
    group.bench_function("bare", |b| {
        b.iter(|| one(&mut bare, request(&model, &tenant)))
    });

    // The metrics alone, no subscriber: what the spans add is the difference to the next.
    let mut untraced = MetricsLayer::new().layer(service_fn(answer));
    group.bench_function("metrics_only_no_subscriber", |b| {
        b.iter(|| one(&mut untraced, request(&model, &tenant)))
    });

    // No subscriber: every span is disabled at its call site.
    let mut traced = stack();
    group.bench_function("no_subscriber", |b| {
        b.iter(|| one(&mut traced, request(&model, &tenant)))
    });

    // The gateway's log set-up: `fmt` at `info`, written to nowhere. The spans are `debug`.
    for (name, level) in [
        ("fmt_info", tracing::Level::INFO),
        ("fmt_debug", tracing::Level::DEBUG),
    ] {
        let fmt = tracing_subscriber::fmt()
            .with_writer(std::io::sink)
            .with_max_level(level)
            .finish();
        tracing::subscriber::with_default(fmt, || {
            let mut traced = stack();
            group.bench_function(name, |b| {
                b.iter(|| one(&mut traced, request(&model, &tenant)))
            });
        });
    }

    // OpenTelemetry: every span built and handed to the batch processor.
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(NoopSpanExporter::new())
        .build();
    let otel = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench")));
    tracing::subscriber::with_default(otel, || {
        let mut traced = stack();
        group.bench_function("otel_batch", |b| {
            b.iter(|| one(&mut traced, request(&model, &tenant)))
        });
    });
    let _ = provider.shutdown();
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
