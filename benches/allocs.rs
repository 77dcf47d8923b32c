//! Allocations per request: a counting global allocator around the system one (`stats_alloc`), and sequential
//! requests (one at a time, after a warm-up) through each path, so the count divided by the
//! requests is what one request costs in heap allocations and bytes — the whole process's
//! (load client, gateway or stack, mock upstream) on each path.
//!
//! - `mock direct`: the pooled HTTP client to the mock (the baseline the others include);
//! - `stack bare client miss`, `stack miss`, `stack hit`: the in-process `holysheep::Stack`
//!   (no HTTP server), a new prompt per request for misses;
//! - `gateway forward (no-store)`, `gateway miss`, `gateway hit`: through the gateway over
//!   loopback HTTP.
//!
//! A path's own allocations are its count minus the baseline it contains (the stack's miss minus
//! the bare client's; the gateway's forward minus the direct one). Counts barely depend on the
//! build profile, so `cargo bench --bench allocs` and a debug run give the same picture.

use std::alloc::System;

use bytes::Bytes;
use holysheep::Stack;
use holysheep_core::BoxError;
use holysheep_gateway::{Config, Gateway};
use holysheep_testkit::{
    MockConfig, UPSTREAM_KEY, chat_body, http_client, json_request, start_mock, upstream_builder,
};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::ServiceExt;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const REQUESTS: u64 = 2_000;

fn chat(prompt: &str) -> String {
    chat_body("gpt-4.1", prompt).to_string()
}

/// Allocations and bytes per request over `REQUESTS` calls of `one(i)`.
async fn per_request<F, Fut>(mut one: F) -> (f64, f64)
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = ()>,
{
    for i in 0..50 {
        one(u64::MAX - i).await;
    }
    let region = Region::new(GLOBAL);
    for i in 0..REQUESTS {
        one(i).await;
    }
    let change = region.change();
    let allocations = change.allocations + change.reallocations;
    (
        allocations as f64 / REQUESTS as f64,
        change.bytes_allocated as f64 / REQUESTS as f64,
    )
}

fn main() -> Result<(), BoxError> {
    // One thread: no work of another request runs between the counts.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> Result<(), BoxError> {
    let mock = start_mock(MockConfig::default().api_key(UPSTREAM_KEY)).await;
    let stack = Stack::builder().client(upstream_builder(&mock)).build()?;
    let bare = stack.client().clone();
    let mut config = Config::in_process(mock.base_url(), UPSTREAM_KEY);
    config.settings.server.shutdown_grace_secs = Some(1);
    let gateway = Gateway::start(config).await?;
    let client = http_client();
    let direct = mock.url("/chat/completions");
    let via = format!("http://{}/v1/chat/completions", gateway.addr());

    let http = |url: String, body: String, no_store: bool| {
        let client = client.clone();
        async move {
            let mut request = Request::builder()
                .method(Method::POST)
                .uri(url)
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {UPSTREAM_KEY}"));
            if no_store {
                request = request.header("cache-control", "no-store");
            }
            let res = client
                .request(
                    request
                        .body(Full::new(Bytes::from(body)))
                        .expect("a request"),
                )
                .await
                .expect("an answer");
            assert_eq!(res.status(), StatusCode::OK);
            res.into_body().collect().await.expect("a body");
        }
    };
    let in_process = |svc: holysheep::client::HolySheepClient, body: String| async move {
        let req = json_request(Method::POST, "/chat/completions", None, body);
        let res = svc.oneshot(req).await.expect("an answer");
        res.into_body().collect().await.expect("a body");
    };

    let mut rows = Vec::new();
    rows.push((
        "mock direct (HTTP client + mock)",
        per_request(|i| http(direct.clone(), chat(&format!("direct {i}")), false)).await,
    ));
    rows.push((
        "stack: bare client miss (client + mock)",
        per_request(|i| in_process(bare.clone(), chat(&format!("bare {i}")))).await,
    ));
    rows.push((
        "stack: miss",
        per_request(|i| {
            let stack = stack.clone();
            async move {
                let req = json_request(
                    Method::POST,
                    "/chat/completions",
                    None,
                    chat(&format!("m {i}")),
                );
                let res = stack.oneshot(req).await.expect("an answer");
                res.into_body().collect().await.expect("a body");
            }
        })
        .await,
    ));
    let same = chat("the same question");
    rows.push((
        "stack: hit",
        per_request(|_| {
            let stack = stack.clone();
            let body = same.clone();
            async move {
                let req = json_request(Method::POST, "/chat/completions", None, body);
                let res = stack.oneshot(req).await.expect("an answer");
                res.into_body().collect().await.expect("a body");
            }
        })
        .await,
    ));
    rows.push((
        "gateway: forward, no-store (HTTP client + gateway + mock)",
        per_request(|i| http(via.clone(), chat(&format!("fwd {i}")), true)).await,
    ));
    rows.push((
        "gateway: miss",
        per_request(|i| http(via.clone(), chat(&format!("gm {i}")), false)).await,
    ));
    rows.push((
        "gateway: hit (HTTP client + gateway)",
        per_request(|_| http(via.clone(), same.clone(), false)).await,
    ));

    println!("allocations per request, {REQUESTS} sequential requests per path\n");
    println!("| path | allocations | bytes allocated |");
    println!("|---|---:|---:|");
    for (name, (allocs, bytes)) in &rows {
        println!("| {name} | {allocs:.1} | {bytes:.0} |");
    }
    gateway.shutdown().await;
    mock.shutdown().await;
    Ok(())
}
