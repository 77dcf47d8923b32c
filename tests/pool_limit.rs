//! `PoolLimitLayer` around the real HolySheep client, against the mock upstream on loopback.
#![cfg(all(feature = "pool-limit", feature = "client"))]

use std::time::{Duration, Instant};

use holysheep_core::error::find_in_chain;
use holysheep_mock::Latency;
use holysheep_pool_limit::{Overloaded, PoolLimitLayer};
use holysheep_testkit::{
    MockConfig, UPSTREAM_KEY, chat_body, chat_request, start_mock, upstream_client,
};
use http::StatusCode;
use http_body_util::BodyExt;
use tower::{ServiceBuilder, ServiceExt};

const CALLERS: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_never_sees_more_than_the_cap() {
    let mock = start_mock(
        MockConfig::default()
            .api_key(UPSTREAM_KEY)
            .latency(Latency::fixed(Duration::from_millis(20))),
    )
    .await;
    // Relative requests all land in one host bucket: 30 is the cap that binds.
    let layer = PoolLimitLayer::new(100, 30).queue_timeout(Duration::from_secs(60));
    let counters = layer.handle();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(upstream_client(&mock));

    let mut callers = tokio::task::JoinSet::new();
    for i in 0..CALLERS {
        let svc = svc.clone();
        callers.spawn(async move {
            let req = chat_request(&chat_body("gpt-4.1", &format!("caller {i}")));
            let res = svc
                .oneshot(req)
                .await
                .expect("served within the queue bounds");
            assert_eq!(res.status(), StatusCode::OK);
            res.into_body().collect().await.expect("the whole body");
        });
    }
    while let Some(caller) = callers.join_next().await {
        caller.expect("caller");
    }

    let max = mock.stats().max_in_flight();
    assert!(max <= 30, "the upstream saw {max} requests at once");
    assert!(max > 1, "the callers did overlap");
    assert_eq!(mock.stats().requests(), CALLERS as u64);
    assert_eq!(counters.in_flight(), 0);
    assert_eq!(counters.queued(), 0);
    assert_eq!(counters.shed_total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_past_the_queue_bound_are_shed_promptly() {
    const LATENCY: Duration = Duration::from_millis(500);
    let mock = start_mock(
        MockConfig::default()
            .api_key(UPSTREAM_KEY)
            .latency(Latency::fixed(LATENCY)),
    )
    .await;
    let layer = PoolLimitLayer::new(30, 30)
        .max_queue(100)
        .queue_timeout(Duration::from_secs(60));
    let counters = layer.handle();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(upstream_client(&mock));

    let mut callers = tokio::task::JoinSet::new();
    for i in 0..CALLERS {
        let svc = svc.clone();
        callers.spawn(async move {
            let start = Instant::now();
            let req = chat_request(&chat_body("gpt-4.1", &format!("caller {i}")));
            match svc.oneshot(req).await {
                Ok(res) => {
                    assert_eq!(res.status(), StatusCode::OK);
                    res.into_body().collect().await.expect("the whole body");
                    None
                }
                Err(err) => {
                    let shed = find_in_chain::<Overloaded>(&*err).expect("only sheds fail");
                    assert!(shed.is_queue_full());
                    Some(start.elapsed())
                }
            }
        });
    }
    let (mut served, mut shed) = (0, 0);
    while let Some(caller) = callers.join_next().await {
        match caller.expect("caller") {
            None => served += 1,
            Some(waited) => {
                shed += 1;
                // Shed without waiting for any slot: well before the first answer.
                assert!(waited < LATENCY, "a shed took {waited:?}");
            }
        }
    }

    // 30 in flight and 100 queued are served; the rest is shed at once (a few more may be
    // served if a slot frees before the last caller arrives).
    assert!(served >= 130, "served {served}");
    assert!(shed >= 1 && served + shed == CALLERS, "shed {shed}");
    assert_eq!(counters.shed_total(), shed as u64);
    assert!(mock.stats().max_in_flight() <= 30);
    assert_eq!(mock.stats().requests(), served as u64);
}
