//! Balancing and health over several mock upstreams on loopback.

mod common;

use std::time::Duration;

use common::{ask, chats, deployment, mock};
use holysheep_router::{HealthConfig, HealthState, Router};
use holysheep_testkit::{MockConfig, MockServer, UPSTREAM_KEY, chat_body, expected_content};
use http::StatusCode;

#[tokio::test]
async fn a_dead_deployment_costs_no_client_error_and_comes_back_after_its_cool_down() {
    let a = mock(Duration::ZERO).await;
    let b = mock(Duration::ZERO).await;
    let addr = a.addr();
    let router = Router::builder()
        .deployment(deployment("a", &a))
        .deployment(deployment("b", &b))
        .health(
            HealthConfig::default()
                .consecutive_failures(2)
                .base_ejection(Duration::from_millis(400)),
        )
        // Latency peaks (a's new connection after its return) fade within a second here.
        .peak_ewma(Duration::from_millis(50), Duration::from_millis(200))
        .build()
        .unwrap();
    let body = chat_body("gpt-4.1", "spread me");
    // Until both have answered (so `a` has pooled connections when it dies): which one wins a
    // draw follows their latency, which decays within a few hundred ms here.
    for _ in 0..500 {
        let reply = ask(&router, &body).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        if chats(&a) > 0 && chats(&b) > 0 {
            break;
        }
    }
    assert!(
        chats(&a) > 0 && chats(&b) > 0,
        "{} / {}",
        chats(&a),
        chats(&b)
    );

    // `a` dies mid-run, with pooled connections to it open.
    drop(a);
    // Every request is answered; `a` is drawn again as its latency estimate decays, fails twice
    // and is ejected.
    let b_before = chats(&b);
    let mut sent = 0;
    for i in 0..500 {
        let reply = ask(&router, &body)
            .await
            .unwrap_or_else(|e| panic!("request {i} failed: {e}"));
        assert_eq!(reply.status, StatusCode::OK, "request {i}");
        assert_eq!(reply.content(), expected_content(&body));
        sent += 1;
        if sent >= 30 && router.status()[0].health == HealthState::Ejected {
            break;
        }
    }
    assert_eq!(chats(&b) - b_before, sent, "b answered everything");
    let status = router.status();
    assert_eq!(status[0].name, "a");
    assert_eq!(status[0].health, HealthState::Ejected);
    assert_eq!(status[1].health, HealthState::Healthy);

    // `a` comes back on the same port; after the cool-down its trial request brings it back.
    let a = MockServer::bind(addr, MockConfig::default().api_key(UPSTREAM_KEY))
        .await
        .expect("the port is free again");
    let mut back = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let reply = ask(&router, &body).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        if chats(&a) >= 3 {
            back = true;
            break;
        }
    }
    assert!(back, "a took traffic again: {}", chats(&a));
    assert_eq!(router.status()[0].health, HealthState::Healthy);
}

#[tokio::test]
async fn a_ten_times_slower_deployment_gets_under_a_fifth_of_the_traffic() {
    let fast = mock(Duration::from_millis(15)).await;
    let slow = mock(Duration::from_millis(150)).await;
    let router = Router::builder()
        .deployment(deployment("fast", &fast))
        .deployment(deployment("slow", &slow))
        .peak_ewma(Duration::from_millis(50), Duration::from_secs(10))
        .build()
        .unwrap();
    let mut workers = Vec::new();
    for w in 0..4 {
        let router = router.clone();
        workers.push(tokio::spawn(async move {
            for i in 0..25 {
                let body = chat_body("gpt-4.1", &format!("worker {w} request {i}"));
                let reply = ask(&router, &body).await.unwrap();
                assert_eq!(reply.status, StatusCode::OK);
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let (fast, slow) = (chats(&fast), chats(&slow));
    assert_eq!(fast + slow, 100);
    assert!(fast >= 80, "fast {fast}, slow {slow}");
}

#[tokio::test]
async fn a_key_answering_429_with_retry_after_is_rested_while_the_others_carry_the_load() {
    let throttled = holysheep_testkit::start_mock(
        MockConfig::default()
            .api_key(UPSTREAM_KEY)
            .rate_limit_rate(1.0)
            .retry_after_secs(30),
    )
    .await;
    let b = mock(Duration::ZERO).await;
    let c = mock(Duration::ZERO).await;
    let router = Router::builder()
        // Its weight has it drawn twice, so tried without a contest, nearly every time.
        .deployment(deployment("throttled", &throttled).weight(100))
        .deployment(deployment("b", &b))
        .deployment(deployment("c", &c))
        .build()
        .unwrap();
    for i in 0..30 {
        let body = chat_body("gpt-4.1", &format!("request {i}"));
        let reply = ask(&router, &body).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "request {i}");
    }
    // One 429 with `Retry-After: 30`, and it was left alone after that.
    assert_eq!(throttled.stats().requests(), 1);
    assert_eq!(chats(&b) + chats(&c), 30);
    assert_eq!(router.status()[0].health, HealthState::Resting);
}

#[tokio::test]
async fn a_rejection_is_the_answer_and_is_not_tried_elsewhere() {
    let a = mock(Duration::ZERO).await;
    let b = mock(Duration::ZERO).await;
    let router = Router::builder()
        .deployment(deployment("a", &a))
        .deployment(deployment("b", &b))
        .build()
        .unwrap();
    a.fail_next(1, StatusCode::BAD_REQUEST);
    b.fail_next(1, StatusCode::BAD_REQUEST);
    let reply = ask(&router, &chat_body("gpt-4.1", "bad")).await.unwrap();
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.stats().requests() + b.stats().requests(), 1);
    let status = router.status();
    assert!(status.iter().all(|d| d.health == HealthState::Healthy));
}

#[tokio::test]
async fn models_go_only_to_the_deployments_that_serve_them() {
    let a = mock(Duration::ZERO).await;
    let b = mock(Duration::ZERO).await;
    let any = mock(Duration::ZERO).await;
    let router = Router::builder()
        .deployment(deployment("a", &a).models(["gpt-4.1"]))
        .deployment(deployment("b", &b).models(["deepseek-v3.2"]))
        .build()
        .unwrap();
    assert_eq!(router.deployments_for("gpt-4.1"), ["a"]);
    for i in 0..6 {
        let reply = ask(&router, &chat_body("deepseek-v3.2", &format!("{i}")))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.json()["model"], "deepseek-v3.2");
    }
    assert_eq!((chats(&a), chats(&b)), (0, 6));
    let reply = ask(&router, &chat_body("gemini-2.5-flash", "nobody"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.error().error.code.as_deref(), Some("model_not_found"));
    assert_eq!(chats(&a) + chats(&b), 6);

    // A deployment that lists no model serves every model, beside those that list it.
    let router = Router::builder()
        .deployment(deployment("a", &a).models(["gpt-4.1"]))
        .deployment(deployment("any", &any))
        .build()
        .unwrap();
    assert_eq!(router.deployments_for("gpt-4.1"), ["a", "any"]);
    assert_eq!(router.deployments_for("gemini-2.5-flash"), ["any"]);
    let reply = ask(&router, &chat_body("gemini-2.5-flash", "any"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(chats(&any), 1);
}

#[tokio::test]
async fn weights_shape_the_share_of_traffic() {
    // Latency alone would send nearly everything to `light`; its weight of 1 against 9 leaves it
    // only the draws that bring both into a contest.
    let heavy = mock(Duration::from_millis(8)).await;
    let light = mock(Duration::ZERO).await;
    let router = Router::builder()
        .deployment(deployment("heavy", &heavy).weight(9))
        .deployment(deployment("light", &light).weight(1))
        .build()
        .unwrap();
    for i in 0..100 {
        let reply = ask(&router, &chat_body("gpt-4.1", &format!("{i}")))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    // Drawn twice 80 % of the time (then it takes the request without a contest).
    assert!(chats(&heavy) >= 65, "heavy {}", chats(&heavy));
    assert_eq!(chats(&heavy) + chats(&light), 100);
}

#[tokio::test]
async fn when_every_deployment_is_out_the_call_is_shed_with_a_retry_after() {
    let a = holysheep_testkit::start_mock(
        MockConfig::default()
            .api_key(UPSTREAM_KEY)
            .rate_limit_rate(1.0)
            .retry_after_secs(20),
    )
    .await;
    let router = Router::builder()
        .deployment(deployment("a", &a))
        .build()
        .unwrap();
    // The 429 itself is the answer of the one attempt…
    let reply = ask(&router, &chat_body("gpt-4.1", "x")).await.unwrap();
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    // …then the key rests, and nothing goes upstream until it may.
    let error = ask(&router, &chat_body("gpt-4.1", "y")).await.unwrap_err();
    assert!(
        error.contains("overload") || error.contains("capacity"),
        "{error}"
    );
    assert_eq!(a.stats().requests(), 1);
}

#[tokio::test]
async fn one_upstream_through_the_upstream_type_answers_as_without_a_router() {
    use holysheep_pool_limit::PoolLimitLayer;
    use holysheep_router::Upstream;
    use holysheep_testkit::{Reply, chat_request, upstream_client};
    use tower::{Layer, ServiceExt};

    let one = mock(Duration::ZERO).await;
    let upstream = Upstream::from(PoolLimitLayer::default().layer(upstream_client(&one)));
    assert!(upstream.router().is_none());
    let body = chat_body("gpt-4.1", "just one");
    let res = upstream.oneshot(chat_request(&body)).await.unwrap();
    let reply = Reply::from_response(res).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content(), expected_content(&body));
    assert_eq!(reply.header(holysheep_router::SERVED_MODEL_HEADER), None);
    assert_eq!(chats(&one), 1);
}

#[tokio::test]
async fn an_exhausted_rate_limit_header_rests_the_key_before_it_fails() {
    use std::sync::atomic::Ordering;

    // Answers well, but says its key has no request left for 30 s.
    let limited = common::header_upstream(&[
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "30s"),
    ])
    .await;
    let other = mock(Duration::ZERO).await;
    let router = Router::builder()
        .deployment(
            holysheep_router::Deployment::new(&limited.base_url, UPSTREAM_KEY).name("limited"),
        )
        .deployment(deployment("other", &other))
        .build()
        .unwrap();
    // Whichever the first request goes to, `limited` answers it: `other` fails it once.
    other.fail_next(1, StatusCode::SERVICE_UNAVAILABLE);
    let reply = ask(&router, &chat_body("gpt-4.1", "first")).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(limited.answered.load(Ordering::SeqCst), 1);
    assert_eq!(router.status()[0].health, HealthState::Resting);
    // (When the first request went to `limited` directly, the forced 503 is still waiting.)
    other.clear_forced_faults();
    for i in 0..20 {
        let reply = ask(&router, &chat_body("gpt-4.1", &format!("{i}")))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK);
    }
    assert_eq!(limited.answered.load(Ordering::SeqCst), 1);
    assert_eq!(chats(&other), 20);
}
