//! `RetryLayer` around the real HolySheep client, against the mock upstream on loopback.
#![cfg(all(feature = "retry", feature = "client"))]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use holysheep_core::signal::Attempts;
use holysheep_retry::RetryLayer;
use holysheep_testkit::{
    MockConfig, UPSTREAM_KEY, chat_body, chat_request, sse_chunks, start_mock, stream_body,
    upstream_client,
};
use http::StatusCode;
use http_body_util::BodyExt;
use tower::{ServiceBuilder, ServiceExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_never_reach_the_caller() {
    const REQUESTS: usize = 10_000;
    const CONCURRENCY: usize = 50;
    let mock = start_mock(
        MockConfig::default()
            .api_key(UPSTREAM_KEY)
            .error_rate(0.023)
            .seed(2300),
    )
    .await;
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new().backoff(Duration::from_millis(5), Duration::from_millis(50)))
        .service(upstream_client(&mock));

    let next = Arc::new(AtomicUsize::new(0));
    let attempts = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (svc, next, attempts, failures) = (
            svc.clone(),
            next.clone(),
            attempts.clone(),
            failures.clone(),
        );
        workers.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < REQUESTS {
                let req = chat_request(&chat_body("gpt-4.1", "pool me"));
                match svc.clone().oneshot(req).await {
                    Ok(res) if res.status() == StatusCode::OK => {
                        let n = res.extensions().get::<Attempts>().expect("attempts").0;
                        attempts.fetch_add(u64::from(n), Ordering::Relaxed);
                        res.into_body().collect().await.expect("the whole body");
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        });
    }
    while let Some(worker) = workers.join_next().await {
        worker.expect("worker");
    }

    // 2.3 % of 10,000 fail at first; four failures in a row has odds ~3e-7 per request, and the
    // budget (20 % of traffic) covers every retry needed.
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    let attempts = attempts.load(Ordering::Relaxed);
    let upstream = mock.stats().requests();
    assert_eq!(
        attempts, upstream,
        "every upstream request is an attempt the caller saw"
    );
    let retries = upstream - REQUESTS as u64;
    assert!(
        (100..=600).contains(&retries),
        "about 2.3 % of requests retried, got {retries}"
    );
}

#[tokio::test]
async fn rate_limited_answers_wait_for_retry_after() {
    let mock = start_mock(
        MockConfig::default()
            .api_key(UPSTREAM_KEY)
            .retry_after_secs(1),
    )
    .await;
    mock.fail_next(1, StatusCode::TOO_MANY_REQUESTS);
    let svc = RetryLayer::new()
        .attempts_header(true)
        .layer_service(upstream_client(&mock));

    let start = Instant::now();
    let res = svc
        .oneshot(chat_request(&chat_body("gpt-4.1", "again?")))
        .await
        .unwrap();
    let elapsed = start.elapsed();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.extensions().get::<Attempts>(), Some(&Attempts(2)));
    assert_eq!(res.headers()["x-holysheep-attempts"], "2");
    assert!(elapsed >= Duration::from_millis(950), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    assert_eq!(mock.stats().requests(), 2);
}

#[tokio::test]
async fn a_reset_connection_is_retried() {
    let mock = start_mock(MockConfig::default().api_key(UPSTREAM_KEY)).await;
    mock.reset_next(1);
    let res = RetryLayer::new()
        .layer_service(upstream_client(&mock))
        .oneshot(chat_request(&chat_body("gpt-4.1", "reset")))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.extensions().get::<Attempts>(), Some(&Attempts(2)));
}

#[tokio::test]
async fn a_stream_cut_midway_is_not_retried() {
    let mock = start_mock(MockConfig::default().api_key(UPSTREAM_KEY)).await;
    mock.truncate_next(1);
    let res = RetryLayer::new()
        .layer_service(upstream_client(&mock))
        .oneshot(chat_request(&stream_body(
            "gpt-4.1",
            "tell me a long story",
            true,
        )))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.extensions().get::<Attempts>(), Some(&Attempts(1)));

    // The caller sees the failure (an error, or an end without `[DONE]`), not a replay.
    let mut body = res.into_body();
    let mut bytes = Vec::new();
    let mut failed = false;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => bytes.extend_from_slice(frame.data_ref().map_or(&[][..], |d| &d[..])),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    let (_, done) = sse_chunks(&bytes);
    assert!(failed || !done, "the cut stream is passed on as it was");
    assert_eq!(mock.stats().requests(), 1);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let mock = start_mock(MockConfig::default().api_key(UPSTREAM_KEY)).await;
    mock.fail_next(1, StatusCode::BAD_REQUEST);
    let res = RetryLayer::new()
        .layer_service(upstream_client(&mock))
        .oneshot(chat_request(&chat_body("gpt-4.1", "bad")))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(mock.stats().requests(), 1);
}

/// `layer.layer(inner)` without importing `Layer` in every test.
trait LayerService<S>: tower::Layer<S> + Sized {
    fn layer_service(self, inner: S) -> Self::Service {
        self.layer(inner)
    }
}

impl<L: tower::Layer<S>, S> LayerService<S> for L {}
