//! Baseline: one request through a bare `HolySheepClient` to an in-process mock with zero
//! latency, on a warm pool. Every layer's bench is measured against these numbers.
//!
//! `cargo bench --bench client`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use holysheep_client::HolySheepClient;
use holysheep_mock::{MockConfig, MockServer};
use http::{StatusCode, header};
use http_body_util::{BodyExt, Full};
use tokio::runtime::Runtime;
use tower::ServiceExt;

const CHAT: &str = r#"{"model":"gpt-4.1","messages":[{"role":"user","content":"hello"}]}"#;
const CHAT_STREAM: &str =
    r#"{"model":"gpt-4.1","stream":true,"messages":[{"role":"user","content":"hello"}]}"#;

fn request(body: &'static str) -> http::Request<Full<Bytes>> {
    http::Request::post("/chat/completions")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("static request is valid")
}

/// One request, its whole body read: for a stream, every chunk up to `[DONE]`.
async fn round_trip(client: &HolySheepClient, body: &'static str) -> Bytes {
    let response = client
        .clone()
        .oneshot(request(body))
        .await
        .expect("mock answers");
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
    let mock = runtime
        .block_on(MockServer::start(
            MockConfig::default().api_key("sk-bench").stream_chunks(8),
        ))
        .expect("mock starts");
    let client = HolySheepClient::builder()
        .base_url(mock.base_url())
        .api_key("sk-bench")
        .build()
        .expect("client builds");

    // Warm the pool so every measured request rides a kept-alive connection.
    runtime.block_on(async {
        round_trip(&client, CHAT).await;
        round_trip(&client, CHAT_STREAM).await;
    });

    let mut group = c.benchmark_group("client");
    group.bench_function("chat_json_warm", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(round_trip(&client, CHAT).await) })
    });
    group.bench_function("chat_stream_warm", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(round_trip(&client, CHAT_STREAM).await) })
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
