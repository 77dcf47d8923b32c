//! Baseline: one request through a bare `HolySheepClient` to an in-process mock with zero
//! latency, on a warm pool. Every layer's bench is measured against these numbers.
//!
//! `cargo bench --bench client`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use holysheep_client::HolySheepClient;
use holysheep_testkit::{
    MockConfig, UPSTREAM_KEY, chat_body, json_request, start_mock, stream_body, upstream_client,
};
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use tokio::runtime::Runtime;
use tower::ServiceExt;

/// One request, its whole body read: for a stream, every chunk up to `[DONE]`. The body is
/// serialised once, outside the measurement.
async fn round_trip(client: &HolySheepClient, body: &Bytes) -> Bytes {
    let request = json_request(Method::POST, "/chat/completions", None, body.clone());
    let response = client.clone().oneshot(request).await.expect("mock answers");
    assert_eq!(response.status(), StatusCode::OK);
    response
        .into_body()
        .collect()
        .await
        .expect("body completes")
        .to_bytes()
}

fn client(c: &mut Criterion) {
    let runtime = Runtime::new().expect("tokio runtime");
    let mock = runtime.block_on(start_mock(
        MockConfig::default().api_key(UPSTREAM_KEY).stream_chunks(8),
    ));
    let client = upstream_client(&mock);
    let chat = Bytes::from(chat_body("gpt-4.1", "hello").to_string());
    let chat_stream = Bytes::from(stream_body("gpt-4.1", "hello", false).to_string());

    // Warm the pool so every measured request rides a kept-alive connection.
    runtime.block_on(async {
        round_trip(&client, &chat).await;
        round_trip(&client, &chat_stream).await;
    });

    let mut group = c.benchmark_group("client");
    group.bench_function("chat_json_warm", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(round_trip(&client, &chat).await) })
    });
    group.bench_function("chat_stream_warm", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(round_trip(&client, &chat_stream).await) })
    });
    group.finish();

    // hyper-util may open an extra connection when a request races a connection on its way
    // back to the pool; a handful for thousands of requests still means a warm pool.
    eprintln!(
        "client bench: {} requests over {} connections",
        mock.stats().requests(),
        mock.stats().connections()
    );
}

criterion_group!(benches, client);
criterion_main!(benches);
