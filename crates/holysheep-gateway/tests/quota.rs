//! Tenants with limits, end to end: tenants files, every `/v1/` route behind the quota layer,
//! tokens of streams whose client did not ask for usage, a dollar budget, the usage route,
//! and SIGHUP reloads.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use holysheep_gateway::GatewayHandle;
use holysheep_testkit::{
    MockServer, Reply, chat_body, expected_usage, http_client, json_request, post_json, send,
    stream_body,
};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{mock_and_gateway, url};

fn digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("the tenants file is written");
}

/// A gateway whose tenants come from a file with `text`.
async fn gateway(text: &str) -> (MockServer, GatewayHandle, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenants.toml");
    write(&path, text);
    let file = path.clone();
    let (mock, gateway) = mock_and_gateway(move |config| {
        config.settings.quota.tenant_files = Some(vec![file]);
    })
    .await;
    (mock, gateway, dir, path)
}

async fn get(gateway: &GatewayHandle, path: &str, key: &str) -> Reply {
    send(
        &http_client(),
        json_request(Method::GET, &url(gateway, path), Some(key), ""),
    )
    .await
}

async fn usage(gateway: &GatewayHandle, key: &str) -> Value {
    let reply = get(gateway, "/v1/holysheep/usage", key).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// Every `/v1/` route the gateway documents (the route table of its crate docs), so a route
/// added there is tested here without a line more.
fn api_routes() -> Vec<(Method, String)> {
    let docs = include_str!("../src/lib.rs");
    let routes: Vec<(Method, String)> = docs
        .lines()
        .filter_map(|line| line.strip_prefix("//! | `"))
        .filter_map(|rest| rest.split('`').next())
        .filter_map(|route| route.split_once(' '))
        .filter(|(_, path)| path.starts_with("/v1/"))
        .map(|(method, path)| (method.parse().expect("a method"), path.to_owned()))
        .collect();
    assert!(routes.len() >= 4, "the route table is found: {routes:?}");
    routes
}

async fn call(gateway: &GatewayHandle, method: &Method, path: &str, key: &str, i: usize) -> Reply {
    let body = match path {
        "/v1/chat/completions" => chat_body("gpt-4.1", &format!("route walk {i}")),
        "/v1/embeddings" => {
            json!({"model": "text-embedding-3-small", "input": format!("walk {i}")})
        }
        _ if *method == Method::GET => Value::Null,
        other => panic!("give the new route {other} a request body here"),
    };
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    send(
        &http_client(),
        json_request(method.clone(), &url(gateway, path), Some(key), body),
    )
    .await
}

#[tokio::test]
async fn every_api_route_is_limited() {
    let routes = api_routes();
    let mut file = String::new();
    for i in 0..routes.len() {
        file.push_str(&format!(
            "[[tenant]]\nname = \"t{i}\"\nkeys = [\"{}\"]\nrequests_per_minute = 2\n\n",
            digest(&format!("key-{i}"))
        ));
    }
    let (mock, gateway, _dir, _) = gateway(&file).await;
    for (i, (method, path)) in routes.iter().enumerate() {
        let key = format!("key-{i}");
        for n in 0..2 {
            let reply = call(&gateway, method, path, &key, n).await;
            assert_eq!(reply.status, 200, "{method} {path}: {}", reply.text());
            assert_eq!(
                reply.header("x-ratelimit-limit-requests"),
                Some("2"),
                "{method} {path}"
            );
            assert_eq!(
                reply.header("x-ratelimit-remaining-requests"),
                Some((1 - n).to_string().as_str()),
                "{method} {path}"
            );
        }
        let upstream_before = mock.stats().requests();
        let reply = call(&gateway, method, path, &key, 2).await;
        assert_eq!(
            reply.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{method} {path}"
        );
        assert_eq!(reply.header("retry-after"), Some("30"), "{method} {path}");
        assert_eq!(
            reply.error().error.code.as_deref(),
            Some("rate_limit_exceeded")
        );
        assert_eq!(
            mock.stats().requests(),
            upstream_before,
            "{method} {path}: a refused request never reaches the upstream"
        );
    }
    // A key of HOLYSHEEP_GATEWAY_KEYS would be a tenant without limits; a wrong key is no one.
    let reply = call(&gateway, &Method::GET, "/v1/models", "nobody", 0).await;
    assert_eq!(reply.status, 401);
}

#[tokio::test]
async fn streamed_tokens_count_though_the_client_sees_no_usage() {
    let file = format!(
        "[[tenant]]\nname = \"streamer\"\nkeys = [\"{}\"]\ntokens_per_minute = 100000\n",
        digest("sk-acme")
    );
    let (_mock, gateway, _dir, _) = gateway(&file).await;
    let body = stream_body("gpt-4.1", "How many tokens is this stream?", false);
    let reply = post_json(
        &url(&gateway, "/v1/chat/completions"),
        Some("sk-acme"),
        &body,
    )
    .await;
    assert_eq!(reply.status, 200);
    let text = reply.text();
    assert!(text.contains("data: [DONE]"), "{text}");
    assert!(
        !text.contains("\"usage\""),
        "no usage for a client that did not ask: {text}"
    );
    assert_eq!(reply.header("x-ratelimit-limit-tokens"), Some("100000"));

    // Exactly the answer's tokens are charged (the reservation was reconciled): the counter
    // says so, where the usage route's remaining figure already refills with time.
    let used = expected_usage(&body);
    let used = used.prompt_tokens + used.completion_tokens;
    let line = format!("holysheep_quota_tokens_total{{tenant=\"streamer\"}} {used}");
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = get(&gateway, "/metrics", "sk-acme").await.text();
        if metrics.contains(&line) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(metrics.contains(&line), "{line} in\n{metrics}");
    let figures = usage(&gateway, "sk-acme").await;
    assert_eq!(figures["tenant"], "streamer");
    assert_eq!(figures["tokens"]["limit"], 100_000);
}

#[tokio::test]
async fn a_dollar_budget_runs_out_at_the_right_request() {
    // gpt-4.1 at HolySheep's $8 per million tokens.
    let bodies: Vec<Value> = (1..=4)
        .map(|i| chat_body("gpt-4.1", &format!("budget question {i}")))
        .collect();
    let cost = |body: &Value| {
        let u = expected_usage(body);
        (u.prompt_tokens + u.completion_tokens) as f64 * 8.0 / 1e6
    };
    // The third request starts with $c1 + $c2 spent, under the budget; the fourth does not.
    let budget = cost(&bodies[0]) + cost(&bodies[1]) + cost(&bodies[2]) / 2.0;
    let file = format!(
        "[[tenant]]\nname = \"acme\"\nkeys = [\"{}\"]\ndollars_per_day = {budget:.12}\n",
        digest("sk-acme")
    );
    let (mock, gateway, _dir, _) = gateway(&file).await;
    let endpoint = url(&gateway, "/v1/chat/completions");
    for body in &bodies[..3] {
        let reply = post_json(&endpoint, Some("sk-acme"), body).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let reply = post_json(&endpoint, Some("sk-acme"), &bodies[3]).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        reply.error().error.code.as_deref(),
        Some("insufficient_quota")
    );
    assert!(reply.header("retry-after").is_some());
    assert_eq!(mock.stats().chat_requests(), 3);
    let figures = usage(&gateway, "sk-acme").await;
    let spent = figures["dollars_today"].as_f64().unwrap();
    let expected: f64 = bodies[..3].iter().map(cost).sum();
    assert!((spent - expected).abs() < 1e-9, "{spent} vs {expected}");
}

#[tokio::test]
async fn models_outside_a_tenants_list_are_refused() {
    let file = format!(
        "[[tenant]]\nname = \"acme\"\nkeys = [\"{}\"]\nmodels = [\"deepseek-v3.2\"]\n",
        digest("sk-acme")
    );
    let (mock, gateway, _dir, _) = gateway(&file).await;
    let endpoint = url(&gateway, "/v1/chat/completions");
    let reply = post_json(&endpoint, Some("sk-acme"), &chat_body("gpt-4.1", "hi")).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.error().error.code.as_deref(), Some("model_not_found"));
    let reply = post_json(
        &endpoint,
        Some("sk-acme"),
        &chat_body("deepseek-v3.2", "hi"),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(mock.stats().chat_requests(), 1);
}

#[tokio::test]
async fn a_tenants_cache_ttl_bounds_its_entries() {
    let file = format!(
        "[[tenant]]\nname = \"fresh\"\nkeys = [\"{}\"]\ncache_ttl_secs = 0\n\n\
         [[tenant]]\nname = \"cached\"\nkeys = [\"{}\"]\ncache_ttl_secs = 600\n",
        digest("sk-fresh"),
        digest("sk-cached")
    );
    let (mock, gateway, _dir, _) = gateway(&file).await;
    let endpoint = url(&gateway, "/v1/chat/completions");
    let body = chat_body("gpt-4.1", "same question");
    for _ in 0..2 {
        let reply = post_json(&endpoint, Some("sk-fresh"), &body).await;
        assert_eq!(reply.status, 200);
        assert_ne!(reply.header("x-cache"), Some("HIT"));
    }
    assert_eq!(mock.stats().chat_requests(), 2, "a TTL of 0 caches nothing");
    let first = post_json(&endpoint, Some("sk-cached"), &body).await;
    assert_eq!(first.header("x-cache"), Some("MISS"));
    let second = post_json(&endpoint, Some("sk-cached"), &body).await;
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(mock.stats().chat_requests(), 3);
}

fn sighup() {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[tokio::test]
async fn sighup_reloads_the_tenants_and_a_broken_file_is_refused() {
    let tenant = |rpm: u32| {
        format!(
            "[[tenant]]\nname = \"acme\"\nkeys = [\"{}\"]\nrequests_per_minute = {rpm}\n",
            digest("sk-acme")
        )
    };
    let (_mock, gateway, _dir, path) = gateway(&tenant(2)).await;
    let endpoint = url(&gateway, "/v1/chat/completions");
    let ask = move |i: usize| {
        let endpoint = endpoint.clone();
        async move {
            post_json(
                &endpoint,
                Some("sk-acme"),
                &chat_body("gpt-4.1", &format!("reload {i}")),
            )
            .await
        }
    };
    assert_eq!(ask(0).await.status, 200);
    assert_eq!(ask(1).await.status, 200);
    assert_eq!(ask(2).await.status, 429);

    // A higher limit, while requests keep coming: none is dropped.
    write(&path, &tenant(1000));
    let traffic = tokio::spawn({
        let ask = ask.clone();
        async move {
            let mut statuses = Vec::new();
            for i in 100..140 {
                statuses.push(ask(i).await.status);
            }
            statuses
        }
    });
    sighup();
    let mut reloaded = false;
    for i in 3..200 {
        let reply = ask(i).await;
        if reply.header("x-ratelimit-limit-requests") == Some("1000") {
            assert_eq!(reply.status, 200);
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(reloaded, "the new limit takes effect");
    for status in traffic.await.unwrap() {
        assert!(
            status == StatusCode::OK || status == StatusCode::TOO_MANY_REQUESTS,
            "a request during the reload got {status}"
        );
    }

    // A broken file is refused whole: the tenant keeps its key and its limit.
    write(&path, "[[tenant]]\nname = \"acme\"\nkeys = [\"not hex\"]\n");
    sighup();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reply = ask(500).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-ratelimit-limit-requests"), Some("1000"));
}

#[tokio::test]
async fn three_gateways_sharing_redis_admit_exactly_the_limit() {
    let redis = holysheep_testkit::redis::RedisServer::start().expect("redis-server");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenants.toml");
    write(
        &path,
        &format!(
            "[[tenant]]\nname = \"fleet\"\nkeys = [\"{}\"]\nrequests_per_minute = 6\n\
             [[tenant]]\nname = \"other\"\nkeys = [\"{}\"]\nrequests_per_minute = 6\n",
            digest("sk-fleet"),
            digest("sk-other")
        ),
    );
    let mut gateways = Vec::new();
    let mut mocks = Vec::new();
    for _ in 0..3 {
        let (file, url) = (path.clone(), redis.url().to_owned());
        let (mock, gateway) = mock_and_gateway(move |config| {
            config.settings.quota.tenant_files = Some(vec![file]);
            config.settings.cache.redis = Some(vec![url]);
            // A slow machine must not send checks to the local fallback.
            config.settings.quota.fleet_timeout_ms = Some(2000);
        })
        .await;
        mocks.push(mock);
        gateways.push(gateway);
    }
    let mut passed = 0;
    for i in 0..12 {
        let reply = post_json(
            &url(&gateways[i % 3], "/v1/chat/completions"),
            Some("sk-fleet"),
            &chat_body("gpt-4.1", &format!("fleet question {i}")),
        )
        .await;
        assert_eq!(reply.header("x-ratelimit-limit-requests"), Some("6"));
        match reply.status {
            StatusCode::OK => passed += 1,
            StatusCode::TOO_MANY_REQUESTS => assert!(reply.header("retry-after").is_some()),
            other => panic!("unexpected {other}: {}", reply.text()),
        }
    }
    // 6 per minute refills one request each 10 s, far longer than these 12 requests take.
    assert_eq!(passed, 6);
    let upstream: u64 = mocks.iter().map(|m| m.stats().chat_requests()).sum();
    assert_eq!(upstream, passed);
    let reply = post_json(
        &url(&gateways[1], "/v1/chat/completions"),
        Some("sk-other"),
        &chat_body("gpt-4.1", "another tenant"),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-ratelimit-remaining-requests"), Some("5"));
}

#[tokio::test]
async fn the_semantic_cache_follows_each_tenants_switch() {
    use holysheep_testkit::{MockConfig, UPSTREAM_KEY, start_mock};
    let mock = start_mock(
        MockConfig::default()
            .api_key(UPSTREAM_KEY)
            .embedding_mode(holysheep_mock::EmbeddingMode::WordOverlap),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenants.toml");
    write(
        &path,
        &format!(
            "[[tenant]]\nname = \"on\"\nkeys = [\"{}\"]\nsemantic = true\n\n\
             [[tenant]]\nname = \"off\"\nkeys = [\"{}\"]\nsemantic = false\n",
            digest("sk-on"),
            digest("sk-off")
        ),
    );
    let mut config = support::test_config(&mock);
    config.settings.quota.tenant_files = Some(vec![path]);
    // However loaded the machine: this test is about hits, not embedding timeouts.
    config.settings.semantic.embedding_timeout_ms = Some(30_000);
    let gateway = support::start(config).await;
    let chat = url(&gateway, "/v1/chat/completions");
    let question = chat_body("gpt-4.1", "What's the capital of France?");
    let paraphrase = chat_body("gpt-4.1", "what is the capital of france");
    for (key, semantic) in [("sk-on", true), ("sk-off", false)] {
        let first = post_json(&chat, Some(key), &question).await;
        assert_eq!(first.header("x-cache"), Some("MISS"));
        // The exact entry is written a moment after the answer ends.
        let mut stored = false;
        for _ in 0..100 {
            let again = post_json(&chat, Some(key), &question).await;
            if again.header("cache-status") == Some("holysheep; hit") {
                stored = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(stored, "{key}: the answer is stored");
        let reply = post_json(&chat, Some(key), &paraphrase).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header("cache-status") == Some("holysheep; hit; detail=semantic"),
            semantic,
            "{key}: {:?}",
            reply.headers
        );
    }
}
