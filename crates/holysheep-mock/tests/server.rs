//! The mock over real loopback TCP, as the layers and tests see it.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use holysheep_core::chat::{ChatCompletion, ChatCompletionChunk, ChatCompletionRequest};
use holysheep_mock::{CONNECTION_HEADER, MockConfig, MockServer, expected_content, expected_usage};
use holysheep_testkit::{
    Reply, TestClient, UPSTREAM_KEY, chat_body, http_client, json_request, post_json_with,
    read_sse, sse_chunks, start_mock, stream_body,
};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn send(
    client: &TestClient,
    method: Method,
    url: &str,
    key: Option<&str>,
    body: &str,
) -> Reply {
    holysheep_testkit::send(client, json_request(method, url, key, body.to_owned())).await
}

async fn get(client: &TestClient, mock: &MockServer, path: &str) -> Reply {
    send(client, Method::GET, &mock.url(path), Some(UPSTREAM_KEY), "").await
}

/// A chat request to the mock with the key, for tests that read the raw response.
fn chat_post(mock: &MockServer, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    json_request(
        Method::POST,
        &mock.url("/chat/completions"),
        Some(UPSTREAM_KEY),
        body,
    )
}

async fn post(client: &TestClient, mock: &MockServer, path: &str, body: &Value) -> Reply {
    post_json_with(client, &mock.url(path), Some(UPSTREAM_KEY), body).await
}

fn chat(prompt: &str) -> Value {
    chat_body("gpt-4.1", prompt)
}

fn stream_chat(prompt: &str, include_usage: bool) -> Value {
    stream_body("gpt-4.1", prompt, include_usage)
}

async fn start(cfg: MockConfig) -> MockServer {
    start_mock(cfg.api_key(UPSTREAM_KEY)).await
}

/// Sends a raw HTTP/1.1 request and reads until the server closes the connection.
async fn raw(addr: SocketAddr, path: &str, body: &str) -> (Vec<u8>, io::Result<usize>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /v1{path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {UPSTREAM_KEY}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let res = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
        .await
        .expect("the server closes the connection");
    (buf, res)
}

#[tokio::test]
async fn json_answer_has_openai_shape_and_is_deterministic() {
    let mock = start(MockConfig::default()).await;
    let c = http_client();
    let first = post(&c, &mock, "/chat/completions", &chat("hello")).await;
    let second = post(&c, &mock, "/chat/completions", &chat("hello")).await;
    let other = post(&c, &mock, "/chat/completions", &chat("goodbye")).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header("content-type"), Some("application/json"));

    let raw = first.json();
    for field in ["id", "object", "created", "model", "choices", "usage"] {
        assert!(raw.get(field).is_some(), "missing {field}");
    }
    let a: ChatCompletion = serde_json::from_value(raw).unwrap();
    let b: ChatCompletion = serde_json::from_slice(&second.body).unwrap();
    let o: ChatCompletion = serde_json::from_slice(&other.body).unwrap();
    assert_eq!(a.object, "chat.completion");
    assert_eq!(a.model, "gpt-4.1");
    assert_eq!(a.choices.len(), 1);
    assert_eq!(a.choices[0].index, 0);
    assert_eq!(a.choices[0].message.role, "assistant");
    assert_eq!(a.choices[0].finish_reason.as_deref(), Some("stop"));
    assert_eq!(a.choices[0].message.content, b.choices[0].message.content);
    assert_ne!(a.choices[0].message.content, o.choices[0].message.content);
    assert_ne!(a.id, b.id, "every answer has its own id");

    let req: ChatCompletionRequest = serde_json::from_value(chat("hello")).unwrap();
    assert_eq!(
        a.choices[0].message.text(),
        Some(expected_content(&req).as_str())
    );
    let usage = a.usage.unwrap();
    assert_eq!(usage, expected_usage(&req));
    assert_eq!(
        usage.total_tokens,
        usage.prompt_tokens + usage.completion_tokens
    );
    assert_eq!(usage, b.usage.unwrap());
    assert_eq!(mock.stats().chat_requests(), 3);
    assert_eq!(mock.stats().stream_requests(), 0);
}

#[tokio::test]
async fn streamed_answer_has_chunks_stop_usage_and_done() {
    let mock = start(MockConfig::default().stream_chunks(5)).await;
    let c = http_client();
    let whole = post(&c, &mock, "/chat/completions", &chat("stream me")).await;
    let whole: ChatCompletion = serde_json::from_slice(&whole.body).unwrap();

    let res = post(
        &c,
        &mock,
        "/chat/completions",
        &stream_chat("stream me", true),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(res.header("content-type"), Some("text/event-stream"));
    let (chunks, done) = read_sse::<ChatCompletionChunk>(&res.body);
    assert!(done, "the stream ends with [DONE]");
    assert!(res.body.ends_with(b"data: [DONE]\n\n"));
    assert_eq!(
        chunks.len(),
        5 + 1,
        "five content chunks and one usage chunk"
    );
    let (content, usage_chunk) = chunks.split_at(5);
    assert!(content.iter().all(|c| c.object == "chat.completion.chunk"));
    assert!(
        chunks
            .iter()
            .all(|c| c.id == chunks[0].id && c.model == "gpt-4.1")
    );
    assert_eq!(
        content[0].choices[0].delta.role.as_deref(),
        Some("assistant")
    );
    let text: String = content
        .iter()
        .map(|c| c.choices[0].delta.content.clone().unwrap())
        .collect();
    assert_eq!(Some(text.as_str()), whole.choices[0].message.text());
    for c in &content[..4] {
        assert_eq!(c.choices[0].finish_reason, None);
        assert_eq!(c.usage, None);
    }
    assert_eq!(content[4].choices[0].finish_reason.as_deref(), Some("stop"));
    assert!(usage_chunk[0].choices.is_empty());
    assert_eq!(usage_chunk[0].usage, whole.usage);

    let res = post(
        &c,
        &mock,
        "/chat/completions",
        &stream_chat("stream me", false),
    )
    .await;
    let (chunks, done) = read_sse::<ChatCompletionChunk>(&res.body);
    assert!(done);
    assert_eq!(chunks.len(), 5);
    assert!(chunks.iter().all(|c| c.usage.is_none()));
    assert!(!String::from_utf8_lossy(&res.body).contains("usage"));
    assert_eq!(mock.stats().stream_requests(), 2);
    assert_eq!(mock.stats().chat_requests(), 3);
}

#[tokio::test]
async fn stream_gap_paces_the_chunks() {
    let gap = Duration::from_millis(30);
    let mock = start(MockConfig::default().stream_chunks(3).stream_gap(gap)).await;
    let started = Instant::now();
    let res = post(
        &http_client(),
        &mock,
        "/chat/completions",
        &stream_chat("slow", false),
    )
    .await;
    // Three chunks and [DONE]: three gaps.
    assert!(started.elapsed() >= gap * 3);
    assert!(sse_chunks(&res.body).1);
}

#[tokio::test]
async fn wrong_or_missing_key_is_401() {
    let mock = start(MockConfig::default()).await;
    let c = http_client();
    let url = mock.url("/chat/completions");
    let body = chat("hi").to_string();
    for key in [None, Some("sk-caller")] {
        let res = send(&c, Method::POST, &url, key, &body).await;
        assert_eq!(res.status, StatusCode::UNAUTHORIZED);
        let err = res.error();
        assert_eq!(err.error.r#type, "invalid_request_error");
        assert!(!String::from_utf8_lossy(&res.body).contains("sk-caller"));
    }
    assert_eq!(mock.stats().chat_requests(), 0);
    assert_eq!(
        mock.stats().responses_with_status(StatusCode::UNAUTHORIZED),
        2
    );
    assert_eq!(
        mock.stats().last_request().unwrap().authorization(),
        Some("Bearer sk-caller")
    );

    // Without a configured key, any key (or none) is fine.
    mock.update(|cfg| cfg.api_key = None);
    let res = send(&c, Method::POST, &url, None, &body).await;
    assert_eq!(res.status, StatusCode::OK);
}

#[tokio::test]
async fn cold_penalty_is_paid_once_per_connection() {
    let penalty = Duration::from_millis(150);
    let mock = start(MockConfig::default().cold_penalty(penalty)).await;
    let pooled = http_client();

    let started = Instant::now();
    let first = post(&pooled, &mock, "/chat/completions", &chat("a")).await;
    assert!(
        started.elapsed() >= penalty,
        "the first request pays the penalty"
    );
    let second = post(&pooled, &mock, "/chat/completions", &chat("b")).await;
    assert_eq!(
        first.header(CONNECTION_HEADER),
        second.header(CONNECTION_HEADER)
    );
    assert_eq!(mock.stats().connections(), 1);
    assert_eq!(mock.stats().cold_starts(), 1);

    // A new client means a new connection, which pays again.
    let started = Instant::now();
    let third = post(&http_client(), &mock, "/chat/completions", &chat("c")).await;
    assert!(started.elapsed() >= penalty);
    assert_ne!(
        first.header(CONNECTION_HEADER),
        third.header(CONNECTION_HEADER)
    );
    assert_eq!(mock.stats().connections(), 2);
    assert_eq!(mock.stats().cold_starts(), 2);
    assert_eq!(mock.stats().requests(), 3);
}

#[tokio::test]
async fn fail_next_fails_exactly_n_requests() {
    let mock = start(MockConfig::default()).await;
    let c = http_client();
    mock.fail_next(2, StatusCode::SERVICE_UNAVAILABLE);
    mock.fail_next(1, StatusCode::BAD_GATEWAY);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let res = post(&c, &mock, "/chat/completions", &chat("x")).await;
        if res.status != StatusCode::OK {
            assert_eq!(res.error().error.r#type, "server_error");
            assert_eq!(res.header("content-type"), Some("application/json"));
        }
        statuses.push(res.status.as_u16());
    }
    assert_eq!(statuses, [503, 503, 502, 200]);
    assert_eq!(
        mock.stats().chat_requests(),
        1,
        "failed requests never reach the route"
    );
    assert_eq!(
        mock.stats()
            .responses_with_status(StatusCode::SERVICE_UNAVAILABLE),
        2
    );

    mock.fail_next(5, StatusCode::INTERNAL_SERVER_ERROR);
    mock.clear_forced_faults();
    assert_eq!(
        post(&c, &mock, "/chat/completions", &chat("x"))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn rate_limit_has_retry_after_and_can_be_turned_off() {
    let mock = start(MockConfig::default()).await;
    let c = http_client();
    mock.update(|cfg| {
        cfg.rate_limit_rate = 1.0;
        cfg.retry_after_secs = 7;
    });
    let res = post(&c, &mock, "/chat/completions", &chat("x")).await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.header("retry-after"), Some("7"));
    assert_eq!(
        res.error().error.code.as_deref(),
        Some("rate_limit_exceeded")
    );

    mock.update(|cfg| cfg.rate_limit_rate = 0.0);
    assert_eq!(
        post(&c, &mock, "/chat/completions", &chat("x"))
            .await
            .status,
        StatusCode::OK
    );

    mock.fail_next(1, StatusCode::TOO_MANY_REQUESTS);
    let res = post(&c, &mock, "/chat/completions", &chat("x")).await;
    assert_eq!(res.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.header("retry-after"), Some("7"));
}

#[tokio::test]
async fn seeded_faults_repeat() {
    let cfg = MockConfig::default().error_rate(0.5).seed(99);
    let run = |cfg: MockConfig| async move {
        let mock = start(cfg).await;
        let c = http_client();
        let mut statuses = Vec::new();
        for _ in 0..20 {
            statuses.push(post(&c, &mock, "/models", &json!({})).await.status.as_u16());
            statuses.push(get(&c, &mock, "/models").await.status.as_u16());
        }
        statuses
    };
    let a = run(cfg.clone()).await;
    assert_eq!(a, run(cfg.clone()).await);
    assert!(a.iter().any(|s| *s >= 500) && a.contains(&200));
}

#[tokio::test]
async fn truncated_stream_stops_without_done() {
    let mock = start(MockConfig::default().stream_chunks(6)).await;
    mock.truncate_next(1);
    let body = stream_chat("cut me", true).to_string();
    let (bytes, _) = raw(mock.addr(), "/chat/completions", &body).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("chat.completion.chunk"),
        "some chunks arrive: {text}"
    );
    assert!(!text.contains("[DONE]"));
    assert!(!text.contains("\"finish_reason\":\"stop\""));
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "the chunked body is never terminated"
    );
    assert_eq!(mock.stats().truncated_streams(), 1);

    // The hyper client sees an incomplete body; the next stream is whole again.
    let c = http_client();
    mock.update(|cfg| cfg.truncate_rate = 1.0);
    let req = chat_post(&mock, body.clone());
    let res = c.request(req).await.unwrap();
    assert!(res.into_body().collect().await.is_err());
    mock.update(|cfg| cfg.truncate_rate = 0.0);
    let whole = post(&c, &mock, "/chat/completions", &stream_chat("cut me", true)).await;
    assert!(sse_chunks(&whole.body).1);
}

#[tokio::test]
async fn reset_closes_the_connection_without_a_response() {
    let mock = start(MockConfig::default()).await;
    mock.reset_next(1);
    let (bytes, res) = raw(mock.addr(), "/chat/completions", &chat("x").to_string()).await;
    assert!(bytes.is_empty(), "nothing was answered: {bytes:?}");
    assert_eq!(res.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
    assert_eq!(mock.stats().resets(), 1);
    assert_eq!(mock.stats().chat_requests(), 0);
    assert!(mock.stats().by_status().is_empty());

    // A pooled client sees an error, then a fresh connection works.
    let c = http_client();
    mock.update(|cfg| cfg.reset_rate = 1.0);
    let req = chat_post(&mock, chat("x").to_string());
    assert!(c.request(req).await.is_err());
    mock.update(|cfg| cfg.reset_rate = 0.0);
    assert_eq!(
        post(&c, &mock, "/chat/completions", &chat("x"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(mock.stats().in_flight(), 0);
}

#[tokio::test]
async fn max_in_flight_tracks_concurrency() {
    let mock = start(
        MockConfig::default().latency(holysheep_mock::Latency::fixed(Duration::from_millis(600))),
    )
    .await;
    let c = http_client();
    let calls = (0..10).map(|i| {
        let c = c.clone();
        let url = mock.url("/chat/completions");
        async move {
            send(
                &c,
                Method::POST,
                &url,
                Some(UPSTREAM_KEY),
                &chat(&i.to_string()).to_string(),
            )
            .await
        }
    });
    let replies = futures_util::future::join_all(calls).await;
    assert!(replies.iter().all(|r| r.status == StatusCode::OK));
    assert_eq!(mock.stats().max_in_flight(), 10);
    assert_eq!(mock.stats().in_flight(), 0);

    mock.stats().reset();
    mock.update(|cfg| cfg.latency = holysheep_mock::Latency::ZERO);
    for _ in 0..3 {
        post(&c, &mock, "/chat/completions", &chat("one at a time")).await;
    }
    assert_eq!(mock.stats().max_in_flight(), 1);
    assert_eq!(mock.stats().requests(), 3);
}

#[tokio::test]
async fn streams_count_in_flight_until_their_end() {
    let mock = start(
        MockConfig::default()
            .stream_chunks(4)
            .stream_gap(Duration::from_millis(200)),
    )
    .await;
    let c = http_client();
    let req = chat_post(&mock, stream_chat("long", false).to_string());
    let res = c.request(req).await.unwrap();
    // The head has arrived; the body is still being paced out.
    assert_eq!(mock.stats().in_flight(), 1);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(sse_chunks(&body).1);
    assert_eq!(mock.stats().in_flight(), 0);
}

#[tokio::test]
async fn embeddings_are_deterministic() {
    let mock = start(MockConfig::default()).await;
    let c = http_client();
    let one = post(
        &c,
        &mock,
        "/embeddings",
        &json!({"model": "text-embedding-3-small", "input": "sheep"}),
    )
    .await;
    let two = post(
        &c,
        &mock,
        "/embeddings",
        &json!({"model": "text-embedding-3-small", "input": ["sheep", "goat"], "dimensions": 64}),
    )
    .await;
    assert_eq!(one.status, StatusCode::OK);
    let (one, two) = (one.json(), two.json());
    assert_eq!(one["object"], "list");
    assert_eq!(one["data"][0]["object"], "embedding");
    assert_eq!(one["data"][0]["embedding"].as_array().unwrap().len(), 64);
    assert_eq!(one["data"][0]["embedding"], two["data"][0]["embedding"]);
    assert_ne!(two["data"][0]["embedding"], two["data"][1]["embedding"]);
    assert_eq!(two["data"][1]["index"], 1);
    assert!(two["usage"]["prompt_tokens"].as_u64().unwrap() >= 2);

    let b64 = post(
        &c,
        &mock,
        "/embeddings",
        &json!({"model": "m", "input": "sheep", "encoding_format": "base64", "dimensions": 3}),
    )
    .await;
    // Three f32 values are 12 bytes, 16 base64 characters.
    assert_eq!(
        b64.json()["data"][0]["embedding"].as_str().unwrap().len(),
        16
    );

    let bad = post(&c, &mock, "/embeddings", &json!({"model": "m", "input": 5})).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.error().error.param.as_deref(), Some("input"));
    assert_eq!(mock.stats().embedding_requests(), 3);
}

#[tokio::test]
async fn models_and_errors_of_routing() {
    let mock = start(MockConfig::default()).await;
    let c = http_client();
    let models = get(&c, &mock, "/models").await;
    assert_eq!(models.status, StatusCode::OK);
    let ids: Vec<String> = models.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    for seed in [
        "gpt-4.1",
        "claude-sonnet-4.5",
        "gemini-2.5-flash",
        "deepseek-v3.2",
    ] {
        assert!(ids.iter().any(|id| id == seed), "{seed} listed");
    }
    let one = get(&c, &mock, "/models/deepseek-v3.2").await;
    assert_eq!(one.json()["id"], "deepseek-v3.2");
    let missing = get(&c, &mock, "/models/gpt-2").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        missing.error().error.code.as_deref(),
        Some("model_not_found")
    );

    let unknown = send(
        &c,
        Method::POST,
        &mock.url("/completions/legacy"),
        Some(UPSTREAM_KEY),
        "{}",
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(
        unknown.error().error.message,
        "Invalid URL (POST /v1/completions/legacy)"
    );
    let wrong_method = get(&c, &mock, "/chat/completions").await;
    assert_eq!(wrong_method.status, StatusCode::NOT_FOUND);

    let bad_json = send(
        &c,
        Method::POST,
        &mock.url("/chat/completions"),
        Some(UPSTREAM_KEY),
        "{nope",
    )
    .await;
    assert_eq!(bad_json.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_json.error().error.r#type, "invalid_request_error");
    let no_model = post(&c, &mock, "/chat/completions", &json!({"messages": []})).await;
    assert_eq!(no_model.status, StatusCode::BAD_REQUEST);
    assert_eq!(no_model.error().error.param.as_deref(), Some("model"));

    let stats = mock.stats();
    assert_eq!(stats.requests_for_path("/v1/models"), 1);
    assert_eq!(stats.requests_for_path("/v1/chat/completions"), 3);
    assert_eq!(stats.responses_with_status(StatusCode::NOT_FOUND), 3);
    assert_eq!(stats.responses_with_status(StatusCode::BAD_REQUEST), 2);
}

#[tokio::test]
async fn last_request_is_recorded_and_stats_reset() {
    let mock = start(MockConfig::default()).await;
    let c = http_client();
    post(&c, &mock, "/chat/completions", &chat("remember me")).await;
    let seen = mock.stats().last_request().unwrap();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.uri.path(), "/v1/chat/completions");
    assert_eq!(
        seen.authorization(),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );
    assert_eq!(seen.json().unwrap(), chat("remember me"));

    mock.stats().reset();
    let stats = mock.stats();
    assert_eq!(
        (stats.requests(), stats.chat_requests(), stats.connections()),
        (0, 0, 0)
    );
    assert!(stats.last_request().is_none());
    assert!(stats.by_path().is_empty());
    assert_eq!(
        stats.open_connections(),
        1,
        "the pooled connection is still open"
    );
}

#[tokio::test]
async fn serves_h2c_on_the_same_port() {
    let mock = start(MockConfig::default()).await;
    let h2: TestClient = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let a = post(&h2, &mock, "/chat/completions", &chat("over h2")).await;
    let b = post(
        &h2,
        &mock,
        "/chat/completions",
        &stream_chat("over h2", true),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(sse_chunks(&b.body).1);
    assert_eq!(mock.stats().connections(), 1);
}

#[tokio::test]
async fn shutdown_lets_a_stream_finish_and_drop_stops_the_server() {
    let mock = start(
        MockConfig::default()
            .stream_chunks(3)
            .stream_gap(Duration::from_millis(50)),
    )
    .await;
    let addr = mock.addr();
    let c = http_client();
    let req = chat_post(&mock, stream_chat("finish me", false).to_string());
    let res = c.request(req).await.unwrap();
    let body = tokio::spawn(async move { res.into_body().collect().await.map(|b| b.to_bytes()) });
    tokio::time::timeout(Duration::from_secs(10), mock.shutdown())
        .await
        .expect("shutdown completes");
    let body = body.await.unwrap().expect("the stream finished");
    assert!(sse_chunks(&body).1);
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );

    let mock = start(MockConfig::default()).await;
    let addr = mock.addr();
    drop(mock);
    let mut refused = false;
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "a dropped server stops listening");
}
