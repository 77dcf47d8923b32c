//! The gateway over several deployments: `[[deployments]]` and `[fallbacks]` from TOML, two mock
//! upstreams on loopback.

mod support;

use holysheep_gateway::{Config, GatewayHandle, Settings};
use holysheep_testkit::{
    MockConfig, MockServer, UPSTREAM_KEY, chat_body, expected_content, post_json, start_mock,
};
use http::StatusCode;
use support::{start, test_config, url};

/// A gateway whose `[[deployments]]` and `[fallbacks]` come from `toml`.
async fn routed_gateway(first: &MockServer, toml: &str) -> GatewayHandle {
    let file = Settings::from_toml(toml, "routing.toml").expect("valid TOML");
    let mut config: Config = test_config(first);
    config.settings = config.settings.or(file);
    config.validate().expect("a valid configuration");
    start(config).await
}

async fn ask(gateway: &GatewayHandle, body: &serde_json::Value) -> holysheep_testkit::Reply {
    post_json(&url(gateway, "/v1/chat/completions"), None, body).await
}

fn mock_config() -> MockConfig {
    MockConfig::default().api_key(UPSTREAM_KEY)
}

#[tokio::test]
async fn two_deployments_share_the_traffic_and_a_dead_one_costs_no_error() {
    let a = start_mock(mock_config()).await;
    let b = start_mock(mock_config()).await;
    let toml = format!(
        r#"
        [router]
        eject_after_failures = 2

        [[deployments]]
        name = "a"
        base_url = "{}"

        [[deployments]]
        name = "b"
        base_url = "{}"
        "#,
        a.base_url(),
        b.base_url()
    );
    let gateway = routed_gateway(&a, &toml).await;
    for i in 0..10 {
        let body = chat_body("gpt-4.1", &format!("first {i}"));
        let reply = ask(&gateway, &body).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.content(), expected_content(&body));
        assert_eq!(reply.header("x-holysheep-served-model"), Some("gpt-4.1"));
    }
    assert_eq!(a.stats().chat_requests() + b.stats().chat_requests(), 10);
    let ready = post_free_get(&gateway, "/readyz").await;
    assert_eq!(ready, StatusCode::OK);

    drop(a);
    for i in 0..10 {
        let body = chat_body("gpt-4.1", &format!("second {i}"));
        let reply = ask(&gateway, &body).await;
        assert_eq!(reply.status, StatusCode::OK, "request {i}");
    }
    // Ready while one deployment answers.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(post_free_get(&gateway, "/readyz").await, StatusCode::OK);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_failing_model_falls_back_uncached_and_a_400_does_not() {
    let gpt = start_mock(mock_config().error_rate(1.0)).await;
    let cheap = start_mock(mock_config()).await;
    let toml = format!(
        r#"
        [[deployments]]
        name = "gpt"
        base_url = "{}"
        models = ["gpt-4.1"]

        [[deployments]]
        name = "deepseek"
        base_url = "{}"
        models = ["deepseek-v3.2"]

        [fallbacks]
        "gpt-4.1" = ["deepseek-v3.2"]
        "#,
        gpt.base_url(),
        cheap.base_url()
    );
    let gateway = routed_gateway(&gpt, &toml).await;
    let body = chat_body("gpt-4.1", "fall back");
    for _ in 0..2 {
        let reply = ask(&gateway, &body).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply.header("x-holysheep-served-model"),
            Some("deepseek-v3.2")
        );
        assert_eq!(reply.json()["model"], "deepseek-v3.2");
        assert_eq!(
            reply.header("cache-status"),
            Some("holysheep; fwd=miss; detail=fallback")
        );
    }
    assert_eq!(cheap.stats().chat_requests(), 2);

    // A rejection is the answer: no fallback.
    let bad = start_mock(mock_config()).await;
    let toml = format!(
        r#"
        [[deployments]]
        base_url = "{}"
        models = ["gpt-4.1"]

        [[deployments]]
        base_url = "{}"
        models = ["deepseek-v3.2"]

        [fallbacks]
        "gpt-4.1" = ["deepseek-v3.2"]
        "#,
        bad.base_url(),
        cheap.base_url()
    );
    let second = routed_gateway(&bad, &toml).await;
    bad.fail_next(1, StatusCode::BAD_REQUEST);
    let reply = ask(&second, &chat_body("gpt-4.1", "rejected")).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(cheap.stats().chat_requests(), 2);
    gateway.shutdown().await;
    second.shutdown().await;
}

#[tokio::test]
async fn router_settings_reach_the_router_and_the_cache() {
    // `first_byte_timeout_ms`: a stalled deployment's stream comes whole from the other one.
    let stalled = start_mock(mock_config().latency(holysheep_mock::Latency::fixed(
        std::time::Duration::from_secs(5),
    )))
    .await;
    let quick = start_mock(mock_config()).await;
    let toml = format!(
        r#"
        [router]
        first_byte_timeout_ms = 300
        cache_fallbacks = true

        [[deployments]]
        name = "stalled"
        base_url = "{}"
        weight = 100

        [[deployments]]
        name = "quick"
        base_url = "{}"
        "#,
        stalled.base_url(),
        quick.base_url()
    );
    let gateway = routed_gateway(&quick, &toml).await;
    let body = holysheep_testkit::stream_body("gpt-4.1", "stream it", false);
    let reply = ask(&gateway, &body).await;
    assert_eq!(reply.status, StatusCode::OK);
    let (_, done) = holysheep_testkit::sse_chunks(&reply.body);
    assert!(done, "one clean stream: {}", reply.text());
    assert_eq!(reply.content(), expected_content(&body));
    assert_eq!(stalled.stats().requests(), 1);
    assert_eq!(quick.stats().chat_requests(), 1);
    gateway.shutdown().await;

    // `cache_fallbacks = true`: a fallback's answer is stored under the asked model's key.
    let failing = start_mock(mock_config().error_rate(1.0)).await;
    let toml = format!(
        r#"
        [router]
        cache_fallbacks = true

        [[deployments]]
        base_url = "{}"
        models = ["gpt-4.1"]

        [[deployments]]
        base_url = "{}"
        models = ["deepseek-v3.2"]

        [fallbacks]
        "gpt-4.1" = ["deepseek-v3.2"]
        "#,
        failing.base_url(),
        quick.base_url()
    );
    let gateway = routed_gateway(&failing, &toml).await;
    let body = chat_body("gpt-4.1", "store the fallback");
    let first = ask(&gateway, &body).await;
    assert_eq!(
        first.header("cache-status"),
        Some("holysheep; fwd=miss; stored")
    );
    let mut hit = false;
    for _ in 0..50 {
        let again = ask(&gateway, &body).await;
        if again.header("x-cache") == Some("HIT") {
            // Entries keep the body: the answer's own `model` says who served it.
            assert_eq!(again.json()["model"], "deepseek-v3.2");
            hit = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(hit, "the fallback answer was stored");
    assert_eq!(quick.stats().chat_requests(), 2);
    gateway.shutdown().await;
}

/// The status of a GET to the gateway.
async fn post_free_get(gateway: &GatewayHandle, path: &str) -> StatusCode {
    let client = holysheep_testkit::http_client();
    let req = http::Request::get(url(gateway, path))
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    holysheep_testkit::send(&client, req).await.status
}
