//! The gateway (`holysheep-gateway`), started in-process on loopback in front of the mock
//! upstream, tested the way a caller sees it: statuses, bodies, headers, and what the upstream
//! received.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use holysheep_testkit::redis::RedisServer;
use holysheep_testkit::{
    MockConfig, MockServer, Reply, UPSTREAM_KEY, chat_body, expected_content, http_client,
    json_request, post_json, sse_chunks, start_mock, stream_body, stream_content,
};
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use holysheep_gateway::{Config, Gateway, GatewayHandle, Secret};

mod support;
use support::{mock_and_gateway, start, test_config, url};

async fn send(gateway: &GatewayHandle, method: &str, path: &str, body: &str) -> Reply {
    let method = Method::from_bytes(method.as_bytes()).expect("a method");
    let request = json_request(method, &url(gateway, path), None, body.to_owned());
    holysheep_testkit::send(&http_client(), request).await
}

async fn get(gateway: &GatewayHandle, path: &str) -> Reply {
    send(gateway, "GET", path, "").await
}

/// The OpenAI-style error of a reply: (type, param, code).
fn error_of(reply: &Reply) -> (String, Option<String>, Option<String>) {
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{}",
        reply.text()
    );
    let v = reply.json();
    let e = &v["error"];
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    (
        e["type"].as_str().unwrap_or_default().to_owned(),
        e["param"].as_str().map(str::to_owned),
        e["code"].as_str().map(str::to_owned),
    )
}

/// A streamed chat request whose body the test reads frame by frame.
async fn open_stream(
    gateway: &GatewayHandle,
    key: Option<&str>,
    body: &Value,
) -> http::Response<hyper::body::Incoming> {
    let request = json_request(
        Method::POST,
        &url(gateway, "/v1/chat/completions"),
        key,
        body.to_string(),
    );
    let response = http_client()
        .request(request)
        .await
        .expect("the gateway answers");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    response
}

/// Reads the next data frame of a streamed body.
async fn next_data(body: &mut hyper::body::Incoming) -> Option<Bytes> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("a frame within 10 s")?
            .expect("the stream does not fail");
        if let Ok(data) = frame.into_data() {
            return Some(data);
        }
    }
}

#[tokio::test]
async fn json_answer_then_cache_hit() {
    let (mock, gateway) = mock_and_gateway(|_| {}).await;
    let body = chat_body("gpt-4.1", "What is a tower layer?");
    let chat = url(&gateway, "/v1/chat/completions");

    let first = post_json(&chat, None, &body).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert_eq!(first.content(), expected_content(&body));
    assert_eq!(first.header("x-cache"), Some("MISS"));

    let second = post_json(&chat, None, &body).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.content(), first.content());
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(
        mock.stats().chat_requests(),
        1,
        "the hit never went upstream"
    );

    // The gateway strips its /v1 and the client adds the upstream's own.
    let seen = mock
        .stats()
        .last_request()
        .expect("a request reached the mock");
    assert_eq!(seen.uri.path(), "/v1/chat/completions");
    gateway.shutdown().await;
}

#[tokio::test]
async fn streamed_answer_arrives_chunk_by_chunk() {
    let mock = start_mock(
        MockConfig::default()
            .api_key(UPSTREAM_KEY)
            .stream_chunks(5)
            .stream_gap(Duration::from_millis(250)),
    )
    .await;
    let gateway = start(test_config(&mock)).await;
    let body = stream_body("claude-sonnet-4.5", "Stream me a haiku", true);

    let response = open_stream(&gateway, None, &body).await;
    let mut stream = response.into_body();
    let first = next_data(&mut stream).await.expect("a first chunk");
    // The first chunk is here while the upstream is still sending: nothing buffered the stream.
    assert_eq!(
        mock.stats().in_flight(),
        1,
        "the upstream stream is still open"
    );
    let mut all = first.to_vec();
    while let Some(data) = next_data(&mut stream).await {
        all.extend_from_slice(&data);
    }
    let (chunks, done) = sse_chunks(&all);
    assert!(done, "the stream ends with [DONE]");
    assert_eq!(stream_content(&chunks), expected_content(&body));
    assert!(
        chunks
            .last()
            .is_some_and(|c| c["usage"]["total_tokens"].as_u64().is_some()),
        "include_usage is honoured"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn embeddings_are_forwarded_and_cached_and_models_listed() {
    let (mock, gateway) = mock_and_gateway(|_| {}).await;
    let body = json!({"model": "text-embedding-3-small", "input": "tower middleware"}).to_string();

    let first = send(&gateway, "POST", "/v1/embeddings", &body).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    assert_eq!(first.json()["object"], "list");
    assert!(first.json()["data"][0]["embedding"].as_array().is_some());
    let second = send(&gateway, "POST", "/v1/embeddings", &body).await;
    assert_eq!(second.header("x-cache"), Some("HIT"));
    assert_eq!(second.json()["data"], first.json()["data"]);
    assert_eq!(mock.stats().embedding_requests(), 1);

    let models = get(&gateway, "/v1/models").await;
    assert_eq!(models.status, StatusCode::OK);
    let ids: Vec<_> = models.json()["data"]
        .as_array()
        .expect("a model list")
        .iter()
        .filter_map(|m| m["id"].as_str().map(str::to_owned))
        .collect();
    assert!(ids.iter().any(|id| id == "gpt-4.1"), "{ids:?}");
    gateway.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_400_and_nothing_is_forwarded() {
    let (mock, gateway) = mock_and_gateway(|_| {}).await;
    let cases = [
        ("/v1/chat/completions", "{\"model\": \"gpt-4.1\", ", None),
        ("/v1/chat/completions", "[]", None),
        (
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"hi"}]}"#,
            Some("model"),
        ),
        (
            "/v1/chat/completions",
            r#"{"model":"gpt-4.1","messages":"hi"}"#,
            Some("messages"),
        ),
        (
            "/v1/embeddings",
            r#"{"model":"text-embedding-3-small"}"#,
            Some("input"),
        ),
        ("/v1/embeddings", "not json", None),
    ];
    for (path, body, param) in cases {
        let reply = send(&gateway, "POST", path, body).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{body}: {}",
            reply.text()
        );
        let (type_, got_param, _) = error_of(&reply);
        assert_eq!(type_, "invalid_request_error");
        assert_eq!(got_param.as_deref(), param, "{body}");
    }
    assert_eq!(mock.stats().requests(), 0, "nothing reached the upstream");
    gateway.shutdown().await;
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let (mock, gateway) =
        mock_and_gateway(|c| c.settings.server.body_limit_bytes = Some(1024)).await;
    let big = chat_body("gpt-4.1", &"x".repeat(2048)).to_string();
    let reply = send(&gateway, "POST", "/v1/chat/completions", &big).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    let (type_, _, code) = error_of(&reply);
    assert_eq!(type_, "invalid_request_error");
    assert_eq!(code.as_deref(), Some("request_too_large"));

    // Without a Content-Length the limit holds while reading.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::io::Error>>(4);
    let request = Request::post(url(&gateway, "/v1/chat/completions"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(http_body_util::StreamBody::new(tokio_stream_from(rx)))
        .expect("a valid request");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let sender = tokio::spawn(async move {
        for _ in 0..4 {
            if tx
                .send(Ok(http_body::Frame::data(Bytes::from(vec![b' '; 600]))))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let response = client.request(request).await.expect("an answer");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let _ = sender.await;

    assert_eq!(mock.stats().requests(), 0);
    gateway.shutdown().await;
}

/// A `Stream` over an mpsc receiver, for a request body without a known length.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_get_json_errors() {
    let (mock, gateway) = mock_and_gateway(|_| {}).await;
    let reply = get(&gateway, "/v1/nope").await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(error_of(&reply).0, "invalid_request_error");

    let reply = get(&gateway, "/v1/chat/completions").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(error_of(&reply).2.as_deref(), Some("method_not_allowed"));

    let reply = send(&gateway, "POST", "/healthz", "").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(mock.stats().requests(), 0);
    gateway.shutdown().await;
}

#[tokio::test]
async fn client_keys_are_required_and_never_reach_the_upstream() {
    let (mock, gateway) = mock_and_gateway(|c| {
        c.gateway_keys = vec![Secret::new("gw-key-alpha"), Secret::new("gw-key-beta")];
    })
    .await;
    let chat = url(&gateway, "/v1/chat/completions");
    let body = chat_body("gpt-4.1", "Who am I?");

    let missing = post_json(&chat, None, &body).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_of(&missing).2.as_deref(), Some("invalid_api_key"));
    let wrong = post_json(&chat, Some("gw-key-gamma"), &body).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_of(&wrong).0, "invalid_request_error");
    assert_eq!(mock.stats().requests(), 0);

    let right = post_json(&chat, Some("gw-key-alpha"), &body).await;
    assert_eq!(right.status, StatusCode::OK, "{}", right.text());
    let seen = mock.stats().last_request().expect("forwarded");
    assert_eq!(
        seen.authorization(),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );
    for (name, value) in &seen.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        assert!(
            !value.contains("gw-key-alpha"),
            "caller key leaked in {name}"
        );
    }
    for (name, value) in &right.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        assert!(
            !value.contains(UPSTREAM_KEY),
            "upstream key leaked in {name}"
        );
    }
    assert!(!right.text().contains(UPSTREAM_KEY));

    // Operator routes stay open for probes.
    assert_eq!(get(&gateway, "/healthz").await.status, StatusCode::OK);
    gateway.shutdown().await;
}

#[tokio::test]
async fn tenants_do_not_share_cache_entries() {
    let (mock, gateway) = mock_and_gateway(|c| {
        c.gateway_keys = vec![Secret::new("tenant-a"), Secret::new("tenant-b")];
    })
    .await;
    let chat = url(&gateway, "/v1/chat/completions");
    let body = chat_body("gpt-4.1", "A private question");

    let a1 = post_json(&chat, Some("tenant-a"), &body).await;
    assert_eq!(a1.header("x-cache"), Some("MISS"));
    let b1 = post_json(&chat, Some("tenant-b"), &body).await;
    assert_eq!(b1.status, StatusCode::OK);
    assert_eq!(
        b1.header("x-cache"),
        Some("MISS"),
        "b must not read a's entry"
    );
    assert_eq!(mock.stats().chat_requests(), 2);
    let a2 = post_json(&chat, Some("tenant-a"), &body).await;
    assert_eq!(a2.header("x-cache"), Some("HIT"));
    assert_eq!(mock.stats().chat_requests(), 2);
    gateway.shutdown().await;
}

#[tokio::test]
async fn upstream_errors_pass_through_with_status_and_body() {
    let mock = start_mock(MockConfig::default().api_key("sk-some-other-key")).await;
    let gateway = start(test_config(&mock)).await;
    let reply = post_json(
        &url(&gateway, "/v1/chat/completions"),
        None,
        &chat_body("gpt-4.1", "hi"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "the mock's own 401");
    assert!(reply.json()["error"]["message"].is_string());
    assert!(!reply.text().contains(UPSTREAM_KEY));
    assert_eq!(mock.stats().requests(), 1, "a 401 is final: not retried");
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_upstream_is_a_502_and_not_ready() {
    // A port that was just free: connections to it are refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mock = start_mock(MockConfig::default()).await;
    let mut config = test_config(&mock);
    config.settings.client.base_url = Some(format!("http://127.0.0.1:{port}/v1"));
    config.settings.retry.max_retries = Some(0);
    let gateway = start(config).await;

    let reply = post_json(
        &url(&gateway, "/v1/chat/completions"),
        None,
        &chat_body("gpt-4.1", "anyone there?"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{}", reply.text());
    let (type_, _, code) = error_of(&reply);
    assert_eq!(type_, "server_error");
    assert_eq!(code.as_deref(), Some("upstream_unreachable"));

    assert_eq!(get(&gateway, "/healthz").await.status, StatusCode::OK);
    let ready = get(&gateway, "/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_of(&ready).2.as_deref(), Some("not_ready"));
    gateway.shutdown().await;
}

#[tokio::test]
async fn metrics_are_prometheus_text_without_secrets() {
    let (_mock, gateway) = mock_and_gateway(|c| {
        c.gateway_keys = vec![Secret::new("gw-metrics-key")];
    })
    .await;
    let reply = post_json(
        &url(&gateway, "/v1/chat/completions"),
        Some("gw-metrics-key"),
        &chat_body("deepseek-v3.2", "count me"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    let metrics = get(&gateway, "/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        metrics.headers
    );
    let text = metrics.text();
    assert!(text.contains("holysheep_requests_total"), "{text}");
    assert!(text.contains("deepseek-v3.2"), "{text}");
    assert!(!text.contains(UPSTREAM_KEY) && !text.contains("gw-metrics-key"));
    gateway.shutdown().await;
}

#[tokio::test]
async fn ready_when_the_upstream_answers() {
    let (_mock, gateway) = mock_and_gateway(|_| {}).await;
    let ready = get(&gateway, "/readyz").await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.text());
    assert_eq!(ready.json()["status"], "ready");
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_full_pool_sheds_with_503_and_retry_after() {
    let mock = start_mock(
        MockConfig::default()
            .api_key(UPSTREAM_KEY)
            .stream_chunks(4)
            .stream_gap(Duration::from_millis(300)),
    )
    .await;
    let mut config = test_config(&mock);
    config.settings.pool.max_in_flight = Some(1);
    config.settings.pool.per_host = Some(1);
    config.settings.pool.queue_depth = Some(0);
    config.settings.pool.queue_timeout_ms = Some(0);
    let gateway = start(config).await;

    // A stream holds the only slot until it ends.
    let response = open_stream(
        &gateway,
        None,
        &stream_body("gpt-4.1", "hold the slot", true),
    )
    .await;
    let mut stream = response.into_body();
    assert!(next_data(&mut stream).await.is_some());

    let shed = post_json(
        &url(&gateway, "/v1/chat/completions"),
        None,
        &chat_body("gpt-4.1", "no room"),
    )
    .await;
    assert_eq!(
        shed.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        shed.text()
    );
    let (type_, _, code) = error_of(&shed);
    assert_eq!(type_, "server_error");
    assert_eq!(code.as_deref(), Some("overloaded"));
    let retry_after: u64 = shed
        .header("retry-after")
        .expect("a Retry-After header")
        .parse()
        .expect("whole seconds");
    assert!(retry_after >= 1);
    assert_eq!(
        mock.stats().chat_requests(),
        1,
        "the shed request never went upstream"
    );
    drop(stream);
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_public_address_without_keys_is_refused() {
    let mock = start_mock(MockConfig::default()).await;
    let mut config = test_config(&mock);
    config.settings.server.listen = Some(SocketAddr::from(([0, 0, 0, 0], 0)));
    let error = match Gateway::start(config).await {
        Ok(_) => panic!("the gateway must refuse to start"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("HOLYSHEEP_GATEWAY_KEYS"), "{error}");
}

#[tokio::test]
async fn a_client_leaving_mid_stream_leaves_the_gateway_healthy() {
    let mock = start_mock(
        MockConfig::default()
            .api_key(UPSTREAM_KEY)
            .stream_chunks(8)
            .stream_gap(Duration::from_millis(100)),
    )
    .await;
    let gateway = start(test_config(&mock)).await;
    let body = stream_body("gpt-4.1", "a long story, please", true);

    let response = open_stream(&gateway, None, &body).await;
    let mut stream = response.into_body();
    assert!(next_data(&mut stream).await.is_some());
    drop(stream);

    assert_eq!(get(&gateway, "/healthz").await.status, StatusCode::OK);
    let other = chat_body("gpt-4.1", "still there?");
    let reply = post_json(&url(&gateway, "/v1/chat/completions"), None, &other).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content(), expected_content(&other));
    // The whole stream can still be had afterwards.
    let again = open_stream(&gateway, None, &body).await;
    let all = again.into_body().collect().await.expect("whole").to_bytes();
    let (chunks, done) = sse_chunks(&all);
    assert!(done);
    assert_eq!(stream_content(&chunks), expected_content(&body));
    gateway.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_finishes_an_open_stream() {
    let mock = start_mock(
        MockConfig::default()
            .api_key(UPSTREAM_KEY)
            .stream_chunks(6)
            .stream_gap(Duration::from_millis(100)),
    )
    .await;
    let gateway = start(test_config(&mock)).await;
    let addr = gateway.addr();
    let body = stream_body("gpt-4.1", "finish what you started", true);

    let response = open_stream(&gateway, None, &body).await;
    let mut stream = response.into_body();
    let mut all = next_data(&mut stream).await.expect("first chunk").to_vec();

    let shutdown = tokio::spawn(gateway.shutdown());
    // Once shutdown began, new connections are refused.
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "the listener closes on shutdown");

    while let Some(data) = next_data(&mut stream).await {
        all.extend_from_slice(&data);
    }
    let (chunks, done) = sse_chunks(&all);
    assert!(done, "the open stream ran to its end");
    assert_eq!(stream_content(&chunks), expected_content(&body));
    assert!(shutdown.await.expect("shutdown task"), "shutdown was clean");
}

#[tokio::test]
async fn demo_mode_answers_from_the_in_process_mock() {
    let mut config = Config {
        demo: true,
        ..Config::default()
    };
    config.settings.server.listen = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    let gateway = start(config).await;
    assert!(gateway.upstream().starts_with("http://127.0.0.1:"));
    let curl = gateway.curl_example();
    assert!(curl.contains(&gateway.addr().to_string()), "{curl}");

    // The body the printed curl line sends.
    let start = curl.find("-d '").expect("a body") + 4;
    let body: Value = serde_json::from_str(&curl[start..curl.len() - 1]).expect("JSON body");
    let reply = post_json(&url(&gateway, "/v1/chat/completions"), None, &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.content(), expected_content(&body));
    assert!(gateway.shutdown().await);
}

#[tokio::test]
async fn a_slow_upstream_past_the_deadline_is_a_504() {
    let mock = start_mock(
        MockConfig::default()
            .api_key(UPSTREAM_KEY)
            .latency(holysheep_mock::Latency::fixed(Duration::from_secs(3))),
    )
    .await;
    let mut config = test_config(&mock);
    config.settings.retry.deadline_secs = Some(1);
    let gateway = start(config).await;
    let reply = post_json(
        &url(&gateway, "/v1/chat/completions"),
        None,
        &chat_body("gpt-4.1", "take your time"),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        reply.text()
    );
    let (type_, _, code) = error_of(&reply);
    assert_eq!(type_, "server_error");
    assert_eq!(code.as_deref(), Some("deadline_exceeded"));
    gateway.shutdown().await;
}

#[tokio::test]
async fn an_upstream_that_sends_no_headers_in_time_is_a_504() {
    let mock = start_mock(
        MockConfig::default()
            .api_key(UPSTREAM_KEY)
            .latency(holysheep_mock::Latency::fixed(Duration::from_secs(3))),
    )
    .await;
    let mut config = test_config(&mock);
    config.settings.client.timeout_secs = Some(1);
    config.settings.retry.max_retries = Some(0);
    let gateway = start(config).await;
    let reply = post_json(
        &url(&gateway, "/v1/chat/completions"),
        None,
        &chat_body("gpt-4.1", "too slow"),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        reply.text()
    );
    assert_eq!(error_of(&reply).2.as_deref(), Some("upstream_timeout"));
    gateway.shutdown().await;
}

/// Keys in Redis matching `pattern`, read with `redis-cli`.
fn redis_keys(url: &str, pattern: &str) -> Vec<String> {
    let output = std::process::Command::new("redis-cli")
        .args(["-u", url, "--scan", "--pattern", pattern])
        .output()
        .expect("the Redis tests need `redis-cli` on PATH");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}

#[tokio::test]
async fn redis_mode_shares_answers_between_gateways() {
    let mut redis = RedisServer::from_env_or_start().expect("a Redis for the test");
    let mock = start_mock(MockConfig::default().api_key(UPSTREAM_KEY)).await;
    let with_redis = |mock: &MockServer| {
        let mut config = test_config(mock);
        config.settings.cache.redis = Some(vec![redis.url().to_owned()]);
        config.settings.cache.redis_timeout_ms = Some(200);
        // Each /readyz below probes anew.
        config.settings.server.ready_cache_ms = Some(1);
        config
    };
    let first = start(with_redis(&mock)).await;
    let second = start(with_redis(&mock)).await;
    // A model of its own, so a shared REDIS_URL server holds no entry for it yet.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let model = format!("gateway-redis-{}-{nanos}", std::process::id());
    let body = chat_body(&model, "shared between instances");

    let a = post_json(&url(&first, "/v1/chat/completions"), None, &body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.header("x-cache"), Some("MISS"));
    // The entry is written after the answer; wait (bounded) until Redis has it.
    let pattern = format!("holysheep:cache:{model}:*");
    let mut stored = false;
    for _ in 0..100 {
        if !redis_keys(redis.url(), &pattern).is_empty() {
            stored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stored, "the answer reached Redis under {pattern}");

    let b = post_json(&url(&second, "/v1/chat/completions"), None, &body).await;
    assert_eq!(b.header("x-cache"), Some("HIT"), "served from Redis");
    assert_eq!(b.content(), a.content());
    assert_eq!(mock.stats().chat_requests(), 1);
    assert_eq!(get(&second, "/readyz").await.status, StatusCode::OK);

    if !redis.is_external() {
        redis.kill();
        let ready = get(&second, "/readyz").await;
        assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
        // Why is in the log, not in an answer anyone can ask for.
        assert_eq!(error_of(&ready).2.as_deref(), Some("not_ready"));
        assert!(!ready.text().contains("cache store"), "{}", ready.text());
        // Redis down costs the caller nothing: a miss, answered from upstream.
        let other = chat_body(&model, "redis is down");
        let reply = post_json(&url(&second, "/v1/chat/completions"), None, &other).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.content(), expected_content(&other));
    } else {
        eprintln!("REDIS_URL is set: skipping the Redis-down half of this test");
    }
    first.shutdown().await;
    second.shutdown().await;
}
