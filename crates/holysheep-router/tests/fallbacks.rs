//! Fallback models and first-byte failover over mock upstreams on loopback.

mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{ask, chats, deployment, mock};
use holysheep_core::signal::Fallback;
use holysheep_router::{ATTEMPTS, Deployment, EJECTIONS, FALLBACKS, Router, SERVED_MODEL_HEADER};
use holysheep_testkit::{
    MockConfig, Reply, UPSTREAM_KEY, chat_body, chat_request, expected_content, sse_chunks,
    start_mock, stream_body, upstream_builder,
};
use http::StatusCode;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tower::ServiceExt;

/// The process-wide recorder of this test binary (each test counts its own `from`/`to` pair).
fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("the only recorder of this binary");
        snapshotter
    })
}

/// The counter `name` so far, summed over the series that carry every label of `labels`. A
/// snapshot drains the debugging recorder's counters, so every snapshot of any test is added up
/// here.
fn counted(name: &str, labels: &[(&str, &str)]) -> u64 {
    type Series = (String, Vec<(String, String)>);
    static SEEN: Mutex<Vec<(Series, u64)>> = Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap();
    for (key, _, _, value) in snapshotter().snapshot().into_vec() {
        let DebugValue::Counter(n) = value else {
            continue;
        };
        let series: Series = (
            key.key().name().to_owned(),
            key.key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect(),
        );
        match seen.iter_mut().find(|(s, _)| *s == series) {
            Some((_, total)) => *total += n,
            None => seen.push((series, n)),
        }
    }
    seen.iter()
        .filter(|((n, series), _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| series.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|(_, total)| total)
        .sum()
}

/// `holysheep_fallback_total{from,to}` so far.
fn fallbacks_counted(from: &str, to: &str) -> u64 {
    counted(FALLBACKS, &[("from", from), ("to", to)])
}

#[tokio::test]
async fn a_failing_model_falls_back_and_the_answer_says_which_model_served() {
    snapshotter();
    let failing = start_mock(MockConfig::default().api_key(UPSTREAM_KEY).error_rate(1.0)).await;
    let cheap = mock(Duration::ZERO).await;
    let router = Router::builder()
        .deployment(deployment("gpt-first", &failing).models(["gpt-4.1"]))
        .deployment(deployment("deepseek-first", &cheap).models(["deepseek-v3.2"]))
        .fallback("gpt-4.1", ["deepseek-v3.2"])
        .build()
        .unwrap();
    let body = chat_body("gpt-4.1", "fall back please");
    // As a gateway forwards it: with the length the caller declared, which the fallback's
    // longer model name changes.
    let mut request = chat_request(&body);
    let length = body.to_string().len();
    request
        .headers_mut()
        .insert(http::header::CONTENT_LENGTH, length.into());
    let res = router.clone().oneshot(request).await.unwrap();
    let reply = Reply::from_response(res).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["model"], "deepseek-v3.2");
    assert_eq!(reply.header(SERVED_MODEL_HEADER), Some("deepseek-v3.2"));
    assert_eq!(
        reply.extensions.get::<Fallback>(),
        Some(&Fallback {
            from: Arc::from("gpt-4.1"),
            to: Arc::from("deepseek-v3.2"),
        })
    );
    // The fallback got the request with its model replaced, the rest as it was.
    let sent = cheap.stats().last_request().unwrap().json().unwrap();
    assert_eq!(sent["model"], "deepseek-v3.2");
    assert_eq!(sent["messages"], body["messages"]);
    assert_eq!(
        reply.content(),
        expected_content(&chat_body("deepseek-v3.2", "fall back please"))
    );
    assert_eq!(failing.stats().requests(), 1);
    assert_eq!(fallbacks_counted("gpt-4.1", "deepseek-v3.2"), 1);
    // Each attempt is counted by deployment and by what it got.
    assert_eq!(counted(ATTEMPTS, &[("deployment", "gpt-first")]), 1);
    assert_eq!(
        counted(
            ATTEMPTS,
            &[("deployment", "deepseek-first"), ("result", "success")]
        ),
        1
    );
}

#[tokio::test]
async fn ejections_are_counted_by_deployment() {
    snapshotter();
    let flaky = mock(Duration::ZERO).await;
    let steady = mock(Duration::ZERO).await;
    let router = Router::builder()
        // Drawn twice, so tried first, nearly every time.
        .deployment(deployment("flaky-one", &flaky).weight(100))
        .deployment(deployment("steady-one", &steady))
        .health(
            holysheep_router::HealthConfig::default()
                .consecutive_failures(2)
                .base_ejection(Duration::from_secs(60)),
        )
        .build()
        .unwrap();
    flaky.fail_next(2, StatusCode::BAD_GATEWAY);
    for i in 0..6 {
        let reply = ask(&router, &chat_body("gpt-4.1", &format!("{i}")))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    assert_eq!(flaky.stats().requests(), 2, "out after two 502s");
    assert_eq!(counted(EJECTIONS, &[("deployment", "flaky-one")]), 1);
    assert_eq!(
        counted(
            ATTEMPTS,
            &[("deployment", "flaky-one"), ("result", "server_error")]
        ),
        2
    );
    assert_eq!(counted(EJECTIONS, &[("deployment", "steady-one")]), 0);
}

#[tokio::test]
async fn the_chain_goes_on_past_a_429_and_a_timeout() {
    snapshotter();
    let throttled = start_mock(
        MockConfig::default()
            .api_key(UPSTREAM_KEY)
            .rate_limit_rate(1.0),
    )
    .await;
    let stalled = mock(Duration::from_secs(5)).await;
    let last = mock(Duration::ZERO).await;
    let router = Router::builder()
        .deployment(deployment("sonnet", &throttled).models(["claude-sonnet-4.5"]))
        .deployment(
            Deployment::from_client(upstream_builder(&stalled).timeout(Duration::from_millis(200)))
                .name("gemini")
                .models(["gemini-2.5-flash"]),
        )
        .deployment(deployment("deepseek", &last).models(["deepseek-v3.2"]))
        .fallback("claude-sonnet-4.5", ["gemini-2.5-flash", "deepseek-v3.2"])
        .build()
        .unwrap();
    let reply = ask(&router, &chat_body("claude-sonnet-4.5", "anyone?"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header(SERVED_MODEL_HEADER), Some("deepseek-v3.2"));
    assert_eq!(reply.json()["model"], "deepseek-v3.2");
    assert_eq!(
        (
            throttled.stats().requests(),
            stalled.stats().requests(),
            chats(&last)
        ),
        (1, 1, 1)
    );
    assert_eq!(fallbacks_counted("claude-sonnet-4.5", "deepseek-v3.2"), 1);
    assert_eq!(
        fallbacks_counted("claude-sonnet-4.5", "gemini-2.5-flash"),
        0
    );
}

#[tokio::test]
async fn a_400_never_falls_back() {
    snapshotter();
    let first = mock(Duration::ZERO).await;
    let other = mock(Duration::ZERO).await;
    let router = Router::builder()
        .deployment(deployment("first", &first).models(["gemini-2.5-flash"]))
        .deployment(deployment("other", &other).models(["deepseek-v3.2"]))
        .fallback("gemini-2.5-flash", ["deepseek-v3.2"])
        .build()
        .unwrap();
    first.fail_next(1, StatusCode::BAD_REQUEST);
    let reply = ask(&router, &chat_body("gemini-2.5-flash", "bad"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.header(SERVED_MODEL_HEADER), Some("gemini-2.5-flash"));
    assert!(reply.extensions.get::<Fallback>().is_none());
    assert_eq!(other.stats().requests(), 0);
    assert_eq!(fallbacks_counted("gemini-2.5-flash", "deepseek-v3.2"), 0);
}

#[tokio::test]
async fn a_stream_with_no_first_byte_in_time_comes_whole_from_the_next_deployment() {
    let stalled = mock(Duration::from_secs(5)).await;
    let quick = mock(Duration::ZERO).await;
    let router = Router::builder()
        // Its weight has it drawn twice, so tried first, nearly every time.
        .deployment(deployment("stalled", &stalled).weight(100))
        .deployment(deployment("quick", &quick))
        .first_byte_timeout(Some(Duration::from_millis(300)))
        .build()
        .unwrap();
    let body = stream_body("gpt-4.1", "stream me", true);
    let mut from_quick = 0;
    for _ in 0..4 {
        let reply = ask(&router, &body).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        let (chunks, done) = sse_chunks(&reply.body);
        assert!(done, "one clean stream to its [DONE]");
        assert!(chunks.iter().all(|c| c["model"] == "gpt-4.1"));
        assert_eq!(reply.content(), expected_content(&body));
        from_quick += 1;
    }
    assert_eq!(from_quick, 4);
    assert_eq!(chats(&quick), 4);
    // The stalled one was tried at most once per request, and never answered.
    let stalled = stalled.stats().requests();
    assert!((1..=4).contains(&stalled), "{stalled}");
}

#[tokio::test]
async fn first_byte_failover_never_cuts_a_stream_already_started_nor_a_plain_request() {
    let gappy = start_mock(
        MockConfig::default()
            .api_key(UPSTREAM_KEY)
            .stream_chunks(3)
            .stream_gap(Duration::from_millis(250)),
    )
    .await;
    let slow = mock(Duration::from_millis(400)).await;
    let router = Router::builder()
        .deployment(deployment("gappy", &gappy).models(["gpt-4.1"]))
        .deployment(deployment("slow", &slow).models(["deepseek-v3.2"]))
        .first_byte_timeout(Some(Duration::from_millis(150)))
        .build()
        .unwrap();
    // The first chunk comes at once, then gaps longer than the bound: not switched.
    let body = stream_body("gpt-4.1", "slow stream", false);
    let reply = ask(&router, &body).await.unwrap();
    let (_, done) = sse_chunks(&reply.body);
    assert!(done);
    assert_eq!(reply.content(), expected_content(&body));
    assert_eq!(chats(&gappy), 1);
    // A plain (not streamed) request is not bound by the first-byte timeout.
    let body = chat_body("deepseek-v3.2", "slow answer");
    let reply = ask(&router, &body).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content(), expected_content(&body));
    assert_eq!(chats(&slow), 1);
}

#[tokio::test]
async fn a_model_with_no_open_deployment_falls_back_at_once() {
    snapshotter();
    let rested = start_mock(
        MockConfig::default()
            .api_key(UPSTREAM_KEY)
            .rate_limit_rate(1.0)
            .retry_after_secs(60),
    )
    .await;
    let cheap = mock(Duration::ZERO).await;
    let router = Router::builder()
        .deployment(deployment("rested", &rested).models(["o-model"]))
        .deployment(deployment("cheap", &cheap).models(["cheap-model"]))
        .fallback("o-model", ["cheap-model"])
        .build()
        .unwrap();
    for i in 0..5 {
        let reply = ask(&router, &chat_body("o-model", &format!("{i}")))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.header(SERVED_MODEL_HEADER), Some("cheap-model"));
    }
    // One 429 with Retry-After: 60, then the key rests and the fallback answers directly.
    assert_eq!(rested.stats().requests(), 1);
    assert_eq!(chats(&cheap), 5);
    assert_eq!(fallbacks_counted("o-model", "cheap-model"), 5);
}
