//! Fleet coalescing through the gateway: three gateways sharing a Redis in front of one
//! upstream make one upstream call for a burst of identical requests spread over them.

mod support;

use std::time::Duration;

use holysheep_mock::Latency;
use holysheep_testkit::redis::RedisServer;
use holysheep_testkit::{
    MockConfig, UPSTREAM_KEY, chat_body, expected_content, post_json, start_mock,
};
use http::StatusCode;
use support::{start, test_config, url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_sharing_redis_make_one_upstream_call() {
    let redis = RedisServer::from_env_or_start().expect("a Redis for the test");
    let mock = start_mock(
        MockConfig::default()
            .api_key(UPSTREAM_KEY)
            .latency(Latency::fixed(Duration::from_millis(400))),
    )
    .await;
    let mut gateways = Vec::new();
    for _ in 0..3 {
        let mut config = test_config(&mock);
        config.settings.cache.redis = Some(vec![redis.url().to_owned()]);
        config.settings.cache.redis_timeout_ms = Some(500);
        gateways.push(start(config).await);
    }
    // Every gateway's Redis is up before the burst (the store connects in the background).
    for gateway in &gateways {
        let warm = post_json(
            &url(gateway, "/v1/chat/completions"),
            None,
            &chat_body("gpt-4.1", &format!("warm-up {}", gateway.addr())),
        )
        .await;
        assert_eq!(warm.status, StatusCode::OK);
    }
    let before = mock.stats().requests_for_path("/v1/chat/completions");
    let body = chat_body("gpt-4.1", "one call for the whole fleet");
    let tasks: Vec<_> = (0..90)
        .map(|i| {
            let target = url(&gateways[i % 3], "/v1/chat/completions");
            let body = body.clone();
            tokio::spawn(async move { post_json(&target, None, &body).await })
        })
        .collect();
    let mut from_fleet = 0;
    for task in tasks {
        let reply = task.await.expect("no panic");
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.content(), expected_content(&body));
        if reply.header("cache-status") == Some("holysheep; hit; collapsed; detail=fleet") {
            from_fleet += 1;
        }
    }
    let calls = mock.stats().requests_for_path("/v1/chat/completions") - before;
    assert_eq!(
        calls, 1,
        "one upstream call for 90 requests over 3 gateways"
    );
    assert!(from_fleet >= 1, "remote followers say so in Cache-Status");
    for gateway in gateways {
        gateway.shutdown().await;
    }
}

#[tokio::test]
async fn fleet_coalescing_can_be_turned_off() {
    let redis = RedisServer::from_env_or_start().expect("a Redis for the test");
    let mock = start_mock(
        MockConfig::default()
            .api_key(UPSTREAM_KEY)
            .latency(Latency::fixed(Duration::from_millis(300))),
    )
    .await;
    let mut gateways = Vec::new();
    for _ in 0..2 {
        let mut config = test_config(&mock);
        config.settings.cache.redis = Some(vec![redis.url().to_owned()]);
        config.settings.cache.redis_timeout_ms = Some(500);
        config.settings.cache.fleet_coalescing = Some(false);
        gateways.push(start(config).await);
    }
    let body = chat_body("gpt-4.1", "each instance on its own");
    let (url_a, url_b) = (
        url(&gateways[0], "/v1/chat/completions"),
        url(&gateways[1], "/v1/chat/completions"),
    );
    let (a, b) = tokio::join!(
        post_json(&url_a, None, &body),
        post_json(&url_b, None, &body)
    );
    assert_eq!((a.status, b.status), (StatusCode::OK, StatusCode::OK));
    assert_eq!(mock.stats().requests_for_path("/v1/chat/completions"), 2);
    for gateway in gateways {
        gateway.shutdown().await;
    }
}
