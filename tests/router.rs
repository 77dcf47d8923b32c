//! `Stack` with a `Router` at the bottom: several mock upstreams on loopback behind every layer.

use std::time::Duration;

use holysheep::Stack;
use holysheep::cache::{CacheLayer, MemoryStore};
use holysheep::router::{Deployment, HealthConfig, Router, SERVED_MODEL_HEADER};
use holysheep_testkit::{
    MockConfig, MockServer, Reply, UPSTREAM_KEY, chat_body, chat_request, expected_content,
    start_mock,
};
use http::StatusCode;
use tower::ServiceExt;

fn deployment(name: &str, mock: &MockServer) -> Deployment {
    Deployment::new(mock.base_url(), UPSTREAM_KEY).name(name)
}

async fn send(stack: &Stack, body: &serde_json::Value) -> Reply {
    let res = stack
        .clone()
        .oneshot(chat_request(body))
        .await
        .expect("the stack answers");
    Reply::from_response(res).await
}

#[tokio::test]
async fn a_fallback_answer_passes_the_cache_unstored_and_the_asked_model_is_tried_again() {
    let failing = start_mock(MockConfig::default().api_key(UPSTREAM_KEY).error_rate(1.0)).await;
    let cheap = start_mock(MockConfig::default().api_key(UPSTREAM_KEY)).await;
    let router = Router::builder()
        .deployment(deployment("gpt", &failing).models(["gpt-4.1"]))
        .deployment(deployment("deepseek", &cheap).models(["deepseek-v3.2"]))
        .fallback("gpt-4.1", ["deepseek-v3.2"])
        .health(HealthConfig::default().consecutive_failures(100))
        .build()
        .unwrap();
    let stack = Stack::builder()
        .router(router)
        .cache(CacheLayer::new(MemoryStore::new(16 << 20)))
        .build()
        .unwrap();
    assert_eq!(stack.router().map(|r| r.status().len()), Some(2));

    let body = chat_body("gpt-4.1", "cheaper, please");
    for round in 0..2 {
        let reply = send(&stack, &body).await;
        assert_eq!(reply.status, StatusCode::OK, "round {round}");
        assert_eq!(reply.header(SERVED_MODEL_HEADER), Some("deepseek-v3.2"));
        assert_eq!(reply.json()["model"], "deepseek-v3.2");
        assert_eq!(reply.header("x-cache"), Some("MISS"));
        assert_eq!(
            reply.header("cache-status"),
            Some("holysheep; fwd=miss; detail=fallback")
        );
        assert_eq!(
            reply.content(),
            expected_content(&chat_body("deepseek-v3.2", "cheaper, please"))
        );
    }
    // Not stored: each request went to the asked model first, then to its fallback.
    assert_eq!(cheap.stats().chat_requests(), 2);
    assert!(failing.stats().requests() >= 2);

    // An answer of the model asked for is stored under its key as always.
    let direct = chat_body("deepseek-v3.2", "direct");
    assert_eq!(send(&stack, &direct).await.header("x-cache"), Some("MISS"));
    let mut hit = false;
    for _ in 0..50 {
        if send(&stack, &direct).await.header("x-cache") == Some("HIT") {
            hit = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(hit, "the direct answer was stored");
    assert_eq!(cheap.stats().chat_requests(), 3);
}

#[tokio::test]
async fn a_dead_deployment_behind_the_stack_costs_no_error() {
    let a = start_mock(MockConfig::default().api_key(UPSTREAM_KEY)).await;
    let b = start_mock(MockConfig::default().api_key(UPSTREAM_KEY)).await;
    let router = Router::builder()
        .deployment(deployment("a", &a))
        .deployment(deployment("b", &b))
        .build()
        .unwrap();
    let stack = Stack::builder().router(router).build().unwrap();
    drop(a);
    for i in 0..20 {
        let reply = send(&stack, &chat_body("gpt-4.1", &format!("{i}"))).await;
        assert_eq!(reply.status, StatusCode::OK, "request {i}");
        assert_eq!(reply.header(SERVED_MODEL_HEADER), Some("gpt-4.1"));
    }
    assert_eq!(b.stats().chat_requests(), 20);
}
