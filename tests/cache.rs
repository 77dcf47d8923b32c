//! `CacheLayer` end to end: the real `HolySheepClient` against the mock upstream over loopback TCP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use holysheep_cache::{
    Cache, CacheLayer, CacheStore, CoalesceError, DefaultKeyPolicy, KeyPolicy, KeyRequest,
    MemoryStore, ParsedBody,
};
use holysheep_client::HolySheepClient;
use holysheep_core::signal::{CacheOutcome, Namespace};
use holysheep_mock::Latency;
use holysheep_testkit::{
    MockConfig, MockServer, Reply, UPSTREAM_KEY, chat_body, chat_request, expected_content,
    sse_chunks, start_mock, stream_body, stream_content, upstream_client, wait_until, with_header,
};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tower::{Layer, ServiceExt};

type Svc = Cache<HolySheepClient>;

fn cache(mock: &MockServer, layer: CacheLayer) -> Svc {
    layer.layer(upstream_client(mock))
}

fn memory() -> CacheLayer {
    CacheLayer::new(MemoryStore::new(64 << 20))
}

/// Sends one request through the cache and collects the answer.
async fn send(svc: &Svc, req: Request<Full<Bytes>>) -> Reply {
    Reply::from_response(svc.clone().oneshot(req).await.expect("the cache answers")).await
}

/// Waits until the cache has no flight left (each entry is written before its flight ends).
async fn settle(svc: &Svc) {
    let settled = wait_until(Duration::from_secs(2), || svc.in_flight() == 0).await;
    assert!(settled, "{} flights never ended", svc.in_flight());
    tokio::time::sleep(Duration::from_millis(5)).await;
}

async fn mock_with(cfg: MockConfig) -> MockServer {
    start_mock(cfg.api_key(UPSTREAM_KEY)).await
}

#[tokio::test]
async fn hit_after_miss() {
    let mock = mock_with(MockConfig::default()).await;
    let svc = cache(&mock, memory());
    let body = chat_body("gpt-4.1", "How do I pool connections?");
    let miss = send(&svc, chat_request(&body)).await;
    assert_eq!(miss.status, StatusCode::OK);
    assert_eq!(miss.header("x-cache"), Some("MISS"));
    assert_eq!(
        miss.header("cache-status"),
        Some("holysheep; fwd=miss; stored")
    );
    settle(&svc).await;
    let hit = send(&svc, chat_request(&body)).await;
    assert_eq!(hit.header("x-cache"), Some("HIT"));
    assert_eq!(hit.header("cache-status"), Some("holysheep; hit"));
    assert_eq!(hit.header("content-type"), miss.header("content-type"));
    assert_eq!(hit.body, miss.body, "the same answer, the same id");
    assert_eq!(hit.content(), expected_content(&body));
    assert_eq!(mock.stats().chat_requests(), 1);
    mock.shutdown().await;
}

#[tokio::test]
async fn outcome_reaches_response_extensions() {
    let mock = mock_with(MockConfig::default()).await;
    let svc = cache(&mock, memory());
    let body = chat_body("gpt-4.1", "extensions");
    let res = svc.clone().oneshot(chat_request(&body)).await.unwrap();
    assert_eq!(
        res.extensions().get::<CacheOutcome>(),
        Some(&CacheOutcome::Miss)
    );
    assert_eq!(
        res.extensions()
            .get::<holysheep_core::signal::RequestModel>()
            .map(|m| m.as_str()),
        Some("gpt-4.1")
    );
    res.into_body().collect().await.unwrap();
    settle(&svc).await;
    let res = svc.clone().oneshot(chat_request(&body)).await.unwrap();
    assert_eq!(
        res.extensions().get::<CacheOutcome>(),
        Some(&CacheOutcome::Hit)
    );
    mock.shutdown().await;
}

async fn concurrent(svc: &Svc, body: &Value, n: usize) -> Vec<Reply> {
    let tasks: Vec<_> = (0..n)
        .map(|_| tokio::spawn(svc.clone().oneshot(chat_request(body))))
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        let res = task.await.unwrap().expect("answered");
        replies.push(Reply::from_response(res).await);
    }
    replies
}

#[tokio::test]
async fn hundred_identical_requests_make_one_upstream_call() {
    let mock =
        mock_with(MockConfig::default().latency(Latency::fixed(Duration::from_millis(300)))).await;
    let svc = cache(&mock, memory());
    let body = chat_body("gpt-4.1", "coalesce me");
    let replies = concurrent(&svc, &body, 100).await;
    assert_eq!(mock.stats().chat_requests(), 1);
    assert!(
        replies
            .iter()
            .all(|r| r.status == StatusCode::OK && r.body == replies[0].body)
    );
    let followers = replies
        .iter()
        .filter(|r| r.header("cache-status") == Some("holysheep; fwd=miss; collapsed"))
        .count();
    assert_eq!(followers, 99);
    assert_eq!(replies[0].content(), expected_content(&body));
    mock.shutdown().await;
}

#[tokio::test]
async fn hundred_identical_streams_make_one_upstream_call() {
    let mock = mock_with(
        MockConfig::default()
            .latency(Latency::fixed(Duration::from_millis(200)))
            .stream_chunks(8)
            .stream_gap(Duration::from_millis(20)),
    )
    .await;
    let svc = cache(&mock, memory());
    let body = stream_body("gpt-4.1", "coalesce my stream", true);
    let replies = concurrent(&svc, &body, 100).await;
    assert_eq!(mock.stats().chat_requests(), 1);
    for r in &replies {
        assert_eq!(r.body, replies[0].body);
        let (chunks, done) = sse_chunks(&r.body);
        assert!(done && !chunks.is_empty());
    }
    assert_eq!(replies[0].content(), expected_content(&body));
    mock.shutdown().await;
}

#[tokio::test]
async fn followers_get_chunks_before_the_stream_ends() {
    let mock = mock_with(
        MockConfig::default()
            .stream_chunks(6)
            .stream_gap(Duration::from_millis(100)),
    )
    .await;
    let svc = cache(&mock, memory());
    let body = stream_body("gpt-4.1", "live please", true);
    let leader = svc.clone().oneshot(chat_request(&body)).await.unwrap();
    let follower = svc.clone().oneshot(chat_request(&body)).await.unwrap();
    assert_eq!(follower.headers()["x-cache"], "HIT");
    let leader_done = tokio::spawn(async move {
        leader.into_body().collect().await.unwrap();
        Instant::now()
    });
    let mut follower = follower.into_body();
    let first = follower.frame().await.unwrap().unwrap();
    let first_at = Instant::now();
    assert!(first.is_data());
    follower.collect().await.unwrap();
    assert!(
        first_at < leader_done.await.unwrap(),
        "the follower was fed live"
    );
    assert_eq!(mock.stats().chat_requests(), 1);
    mock.shutdown().await;
}

#[tokio::test]
async fn key_order_and_spacing_do_not_matter() {
    let mock = mock_with(MockConfig::default()).await;
    let svc = cache(&mock, memory());
    let a = r#"{"model":"gpt-4.1","temperature":0.5,"messages":[{"role":"user","content":"hi"}]}"#;
    let b = r#"{ "messages": [ {"content": "hi", "role": "user"} ], "temperature": 0.50, "model": "gpt-4.1" }"#;
    let req = |s: &'static str| {
        Request::post("/chat/completions")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(s.as_bytes())))
            .unwrap()
    };
    assert_eq!(send(&svc, req(a)).await.header("x-cache"), Some("MISS"));
    settle(&svc).await;
    assert_eq!(send(&svc, req(b)).await.header("x-cache"), Some("HIT"));
    assert_eq!(mock.stats().chat_requests(), 1);
    mock.shutdown().await;
}

#[tokio::test]
async fn tenants_do_not_share_entries() {
    let mock = mock_with(MockConfig::default()).await;
    let svc = cache(&mock, memory());
    let body = chat_body("gpt-4.1", "tenant secret");
    let as_tenant = |t: &str| {
        let mut req = chat_request(&body);
        req.extensions_mut().insert(Namespace(Arc::from(t)));
        req
    };
    send(&svc, as_tenant("a")).await;
    settle(&svc).await;
    assert_eq!(
        send(&svc, as_tenant("b")).await.header("x-cache"),
        Some("MISS")
    );
    settle(&svc).await;
    assert_eq!(
        send(&svc, as_tenant("a")).await.header("x-cache"),
        Some("HIT")
    );
    assert_eq!(mock.stats().chat_requests(), 2);
    mock.shutdown().await;
}

#[tokio::test]
async fn a_truncated_stream_is_not_cached() {
    let mock = mock_with(MockConfig::default()).await;
    let svc = cache(&mock, memory());
    let body = stream_body("gpt-4.1", "cut me", true);
    mock.truncate_next(1);
    let res = svc.clone().oneshot(chat_request(&body)).await.unwrap();
    let _ = res.into_body().collect().await; // cut: an error or an early end
    settle(&svc).await;
    let again = send(&svc, chat_request(&body)).await;
    assert_eq!(again.header("x-cache"), Some("MISS"));
    assert!(sse_chunks(&again.body).1);
    settle(&svc).await;
    assert_eq!(
        send(&svc, chat_request(&body)).await.header("x-cache"),
        Some("HIT")
    );
    assert_eq!(mock.stats().chat_requests(), 2);
    mock.shutdown().await;
}

#[tokio::test]
async fn errors_are_not_cached() {
    let mock = mock_with(MockConfig::default()).await;
    let svc = cache(&mock, memory());
    let body = chat_body("gpt-4.1", "fail first");
    mock.fail_next(1, StatusCode::INTERNAL_SERVER_ERROR);
    let err = send(&svc, chat_request(&body)).await;
    assert_eq!(err.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        err.header("cache-status"),
        Some("holysheep; fwd=miss; fwd-status=500")
    );
    settle(&svc).await;
    let ok = send(&svc, chat_request(&body)).await;
    assert_eq!(
        (ok.status, ok.header("x-cache")),
        (StatusCode::OK, Some("MISS"))
    );
    settle(&svc).await;
    assert_eq!(
        send(&svc, chat_request(&body)).await.header("x-cache"),
        Some("HIT")
    );
    assert_eq!(mock.stats().requests(), 2, "the 500 and one good answer");
    mock.shutdown().await;
}

#[tokio::test]
async fn request_cache_control() {
    let mock = mock_with(MockConfig::default()).await;
    let svc = cache(&mock, memory());
    let body = chat_body("gpt-4.1", "controls");
    let r = send(
        &svc,
        with_header(chat_request(&body), "cache-control", "no-store"),
    )
    .await;
    assert_eq!(r.header("x-cache"), Some("BYPASS"));
    settle(&svc).await;
    assert_eq!(
        send(&svc, chat_request(&body)).await.header("x-cache"),
        Some("MISS"),
        "no-store stored nothing"
    );
    settle(&svc).await;
    let first = send(&svc, chat_request(&body)).await;
    assert_eq!(first.header("x-cache"), Some("HIT"));
    let refreshed = send(
        &svc,
        with_header(chat_request(&body), "cache-control", "no-cache"),
    )
    .await;
    assert_eq!(
        refreshed.header("cache-status"),
        Some("holysheep; fwd=request; stored")
    );
    assert_ne!(refreshed.json()["id"], first.json()["id"], "a fresh answer");
    settle(&svc).await;
    let after = send(&svc, chat_request(&body)).await;
    assert_eq!(
        after.json()["id"],
        refreshed.json()["id"],
        "no-cache refreshed the entry"
    );
    let r = send(
        &svc,
        with_header(chat_request(&body), "cache-control", "max-age=0"),
    )
    .await;
    assert_eq!(r.header("x-cache"), Some("MISS"));
    settle(&svc).await;
    let r = send(
        &svc,
        with_header(chat_request(&body), "cache-control", "max-age=3600"),
    )
    .await;
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert_eq!(mock.stats().chat_requests(), 4);
    mock.shutdown().await;
}

#[tokio::test]
async fn answers_change_shape_on_a_hit() {
    let mock = mock_with(MockConfig::default().stream_chunks(5)).await;
    let svc = cache(&mock, memory());
    // A JSON entry served as a stream.
    let plain = chat_body("gpt-4.1", "json first");
    send(&svc, chat_request(&plain)).await;
    settle(&svc).await;
    let mut as_stream = plain.clone();
    as_stream["stream"] = json!(true);
    let r = send(&svc, chat_request(&as_stream)).await;
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let (chunks, done) = sse_chunks(&r.body);
    assert!(done);
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "stop")
    );
    assert_eq!(stream_content(&chunks), expected_content(&plain));

    // A streamed entry served as one JSON.
    let streamed = stream_body("gpt-4.1", "stream first", true);
    send(&svc, chat_request(&streamed)).await;
    settle(&svc).await;
    let plain2 = chat_body("gpt-4.1", "stream first");
    let r = send(&svc, chat_request(&plain2)).await;
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        expected_content(&plain2)
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["total_tokens"].as_u64().unwrap() > 0);
    assert_eq!(mock.stats().chat_requests(), 2);
    mock.shutdown().await;
}

#[tokio::test]
async fn a_leader_leaving_mid_stream_does_not_cut_followers() {
    let mock = mock_with(
        MockConfig::default()
            .stream_chunks(6)
            .stream_gap(Duration::from_millis(50)),
    )
    .await;
    let svc = cache(&mock, memory());
    let body = stream_body("gpt-4.1", "leader leaves", true);
    let leader = svc.clone().oneshot(chat_request(&body)).await.unwrap();
    let follower = svc.clone().oneshot(chat_request(&body)).await.unwrap();
    let mut leader_body = leader.into_body();
    leader_body.frame().await.unwrap().unwrap();
    drop(leader_body);
    let rest = follower
        .into_body()
        .collect()
        .await
        .expect("the follower's stream completes")
        .to_bytes();
    assert!(sse_chunks(&rest).1);
    settle(&svc).await;
    let hit = send(&svc, chat_request(&body)).await;
    assert_eq!(
        hit.header("x-cache"),
        Some("HIT"),
        "the drained answer was stored"
    );
    assert_eq!(hit.content(), expected_content(&body));
    assert_eq!(mock.stats().chat_requests(), 1);
    mock.shutdown().await;
}

#[tokio::test]
async fn a_failing_leader_answers_followers_promptly() {
    let mock =
        mock_with(MockConfig::default().latency(Latency::fixed(Duration::from_millis(200)))).await;
    let svc = cache(&mock, memory());
    let body = chat_body("gpt-4.1", "reset me");
    mock.reset_next(1);
    let tasks: Vec<_> = (0..10)
        .map(|_| tokio::spawn(svc.clone().oneshot(chat_request(&body))))
        .collect();
    let mut shared_errors = 0;
    for task in tasks {
        let res = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("nobody hangs")
            .unwrap();
        if let Err(e) = res
            && e.downcast_ref::<CoalesceError>()
                .is_some_and(CoalesceError::is_leader_failed)
        {
            shared_errors += 1;
        }
    }
    assert_eq!(shared_errors, 9, "the leader's followers got its error");
    assert_eq!(svc.in_flight(), 0);
    assert_eq!(send(&svc, chat_request(&body)).await.status, StatusCode::OK);
    mock.shutdown().await;
}

#[tokio::test]
async fn oversize_answers_are_not_cached() {
    let mock = mock_with(MockConfig::default()).await;
    let svc = cache(&mock, memory().max_entry_bytes(64));
    let body = chat_body("gpt-4.1", "too big to keep");
    for _ in 0..2 {
        let r = send(&svc, chat_request(&body)).await;
        assert_eq!(
            (r.status, r.header("x-cache")),
            (StatusCode::OK, Some("MISS"))
        );
        assert_eq!(r.content(), expected_content(&body));
        settle(&svc).await;
    }
    assert_eq!(mock.stats().chat_requests(), 2);
    mock.shutdown().await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn a_store_that_always_fails_costs_nothing_visible() {
    let mock = mock_with(MockConfig::default()).await;
    // Port 1 on loopback: nothing listens, so every store call is refused.
    let down = holysheep_cache::RedisStore::connect("redis://127.0.0.1:1")
        .await
        .expect("a valid URL");
    assert!(down.ping().await.is_err());
    let svc = cache(&mock, CacheLayer::new(down));
    for prompt in ["a", "b", "a"] {
        let body = stream_body("gpt-4.1", prompt, true);
        let r = send(&svc, chat_request(&body)).await;
        assert_eq!(
            (r.status, r.header("x-cache")),
            (StatusCode::OK, Some("MISS"))
        );
        assert_eq!(r.content(), expected_content(&body));
        settle(&svc).await;
    }
    assert_eq!(mock.stats().chat_requests(), 3);
    mock.shutdown().await;
}

#[tokio::test]
async fn python_compat_scheme_stores_plain_completion_json() {
    let mock = mock_with(MockConfig::default().stream_chunks(4)).await;
    let store = Arc::new(MemoryStore::new(16 << 20));
    let svc = cache(
        &mock,
        CacheLayer::with_store(store.clone()).key_policy(DefaultKeyPolicy::python_compat()),
    );
    let body = stream_body("gpt-4.1", "python compatible", true);
    send(&svc, chat_request(&body)).await;
    settle(&svc).await;
    let text = serde_json::to_vec(&body).unwrap();
    let key = DefaultKeyPolicy::python_compat()
        .key(&KeyRequest {
            path: "/chat/completions",
            upstream: CacheLayer::DEFAULT_UPSTREAM,
            namespace: None,
            body: &ParsedBody::parse(&text).unwrap(),
        })
        .unwrap();
    let value = store
        .get(key.as_str())
        .await
        .unwrap()
        .expect("stored under the reference Python client's key");
    let v: Value = serde_json::from_slice(&value).expect("the value is plain JSON");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        expected_content(&body)
    );
    // A value the reference Python client wrote (plain JSON) is a hit for a plain request too.
    assert_eq!(
        send(
            &svc,
            chat_request(&chat_body("gpt-4.1", "python compatible"))
        )
        .await
        .header("x-cache"),
        Some("HIT")
    );
    assert_eq!(mock.stats().chat_requests(), 1);
    mock.shutdown().await;
}
