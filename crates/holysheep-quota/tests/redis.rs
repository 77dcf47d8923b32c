//! `QuotaLayer` over a real `redis-server` (and a Redis Cluster): limits shared by a fleet of
//! layer instances, the local fallback while Redis is down, and the fleet again after.
#![cfg(feature = "redis")]

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use holysheep_core::signal::{Namespace, RequestModel};
use holysheep_quota::{Clock, Limits, Quota, QuotaHandle, QuotaLayer, QuotaPolicy, RedisQuota};
use holysheep_testkit::redis::{RedisCluster, RedisServer, unique_prefix};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::util::BoxCloneService;
use tower::{BoxError, ServiceExt, service_fn};

type Svc = BoxCloneService<Request<Full<Bytes>>, Response<Bytes>, BoxError>;

const BODY: &str =
    r#"{"model":"m","messages":[{"role":"user","content":"Hello"}],"max_tokens":10}"#;

fn policy() -> QuotaPolicy {
    QuotaPolicy::new()
        .tenant(
            "a",
            Limits::new()
                .requests_per_minute(60)
                .tokens_per_minute(100_000),
        )
        .tenant("b", Limits::new().requests_per_minute(60))
}

/// One gateway instance: a quota layer over an upstream that counts its calls and answers
/// with 7 + 5 tokens of usage.
fn instance(layer: QuotaLayer, calls: &Arc<AtomicUsize>) -> Svc {
    let calls = Arc::clone(calls);
    let upstream = service_fn(move |_req: Request<Full<Bytes>>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async {
            Ok::<_, Infallible>(
                Response::builder()
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from_static(
                        br#"{"model":"m","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":5}}"#,
                    )))
                    .unwrap(),
            )
        }
    });
    let svc = Quota::new(upstream, &layer);
    BoxCloneService::new(ServiceExt::<Request<Full<Bytes>>>::and_then(
        svc,
        |res: Response<holysheep_quota::ResponseBody<Full<Bytes>>>| async move {
            let (parts, body) = res.into_parts();
            let body = body.collect().await.map_err(BoxError::from)?.to_bytes();
            Ok(Response::from_parts(parts, body))
        },
    ))
}

async fn send(svc: &Svc, tenant: &str) -> Response<Bytes> {
    let mut req = Request::post("/chat/completions")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .unwrap();
    req.extensions_mut().insert(Namespace(tenant.into()));
    req.extensions_mut().insert(RequestModel("m".into()));
    svc.clone()
        .oneshot(req)
        .await
        .expect("the quota layer never fails a request")
}

/// Three instances sharing `redis`, on one manual clock (so the minute does not move while
/// the test runs, however slow the machine).
fn fleet(
    redis: impl Fn() -> RedisQuota,
    clock: &Clock,
) -> (Vec<Svc>, Vec<QuotaHandle>, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svcs = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..3 {
        let layer = QuotaLayer::with_redis(policy(), redis()).clock(clock.clone());
        handles.push(layer.handle());
        svcs.push(instance(layer, &calls));
    }
    (svcs, handles, calls)
}

/// 90 requests of tenant `a` spread over the fleet: exactly 60 pass, the rest get `429` with
/// `Retry-After`; tenant `b` is untouched; a second later one more passes.
async fn exactly_sixty_across_the_fleet(
    svcs: &[Svc],
    handles: &[QuotaHandle],
    calls: &AtomicUsize,
    clock: &Clock,
) {
    let mut passed = 0;
    for i in 0..90 {
        let res = send(&svcs[i % 3], "a").await;
        match res.status() {
            StatusCode::OK => passed += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(res.headers()["retry-after"], "1");
                assert_eq!(res.headers()["x-ratelimit-remaining-requests"], "0");
                let body: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
                assert_eq!(body["error"]["code"], "rate_limit_exceeded");
            }
            other => panic!("unexpected status {other}"),
        }
        assert_eq!(
            res.headers()["x-ratelimit-limit-requests"],
            "60",
            "decided by the fleet"
        );
    }
    assert_eq!(passed, 60);
    assert_eq!(calls.load(Ordering::SeqCst), 60);

    let res = send(&svcs[1], "b").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-ratelimit-remaining-requests"], "59");

    // Tokens were reconciled in Redis: 60 answers of 12 tokens each (settled in the background).
    let a = Namespace("a".into());
    let mut remaining = 0;
    for _ in 0..200 {
        remaining = handles[2].usage(Some(&a)).await.tokens.unwrap().remaining;
        if remaining == 100_000 - 60 * 12 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(remaining, 100_000 - 60 * 12);

    clock.advance(Duration::from_secs(1));
    assert_eq!(send(&svcs[2], "a").await.status(), 200);
    assert_eq!(send(&svcs[0], "a").await.status(), 429);
}

fn start_of_2026() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

#[tokio::test]
async fn a_fleet_on_one_node_admits_exactly_the_limit() {
    let redis = RedisServer::from_env_or_start().expect("redis-server");
    let prefix = unique_prefix("quota-node");
    let clock = Clock::manual(start_of_2026());
    let (svcs, handles, calls) = fleet(
        || {
            RedisQuota::connect(redis.url())
                .unwrap()
                .key_prefix(prefix.as_str())
        },
        &clock,
    );
    exactly_sixty_across_the_fleet(&svcs, &handles, &calls, &clock).await;
}

#[tokio::test]
async fn a_fleet_on_a_cluster_admits_exactly_the_limit() {
    let cluster = RedisCluster::start(3).expect("redis cluster");
    let urls = cluster.urls();
    let clock = Clock::manual(start_of_2026());
    let (svcs, handles, calls) = fleet(
        || {
            let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
            // A cluster connection takes longer to set up than one check may wait.
            RedisQuota::cluster(&urls)
                .unwrap()
                .timeout(Duration::from_secs(2))
        },
        &clock,
    );
    exactly_sixty_across_the_fleet(&svcs, &handles, &calls, &clock).await;
}

#[tokio::test]
async fn redis_down_local_limits_hold_and_the_fleet_resumes_after_restart() {
    let mut redis = RedisServer::start().expect("redis-server");
    let clock = Clock::manual(start_of_2026());
    let layer = QuotaLayer::with_redis(
        policy(),
        RedisQuota::connect(redis.url())
            .unwrap()
            .fallback_share(0.5)
            .retry_interval(Duration::from_millis(100)),
    )
    .clock(clock.clone());
    let handle = layer.handle();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = instance(layer, &calls);

    for _ in 0..10 {
        assert_eq!(send(&svc, "a").await.status(), 200);
    }
    redis.kill();
    // Down: this instance enforces half the limit alone, and no request fails.
    let mut passed = 0;
    for _ in 0..40 {
        let res = send(&svc, "a").await;
        match res.status() {
            StatusCode::OK => passed += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(res.headers()["x-ratelimit-limit-requests"], "30");
                assert!(res.headers().contains_key("retry-after"));
            }
            other => panic!("a request failed while Redis was down: {other}"),
        }
    }
    assert_eq!(passed, 30, "the local share of 60 per minute");
    assert!(
        handle
            .usage(Some(&Namespace("a".into())))
            .await
            .local_fallback
    );

    // Back (empty): checks return to the fleet's counters once the connection is remade.
    redis.restart().expect("restart");
    let mut resumed = false;
    for _ in 0..100 {
        let res = send(&svc, "a").await;
        assert!(matches!(
            res.status(),
            StatusCode::OK | StatusCode::TOO_MANY_REQUESTS
        ));
        if res.headers()["x-ratelimit-limit-requests"] == "60" {
            resumed = true;
            assert_eq!(res.status(), 200);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(resumed, "the fleet's limits are back");
    assert!(
        !handle
            .usage(Some(&Namespace("a".into())))
            .await
            .local_fallback
    );
}

/// The Lua script is the arithmetic of `gcra.rs` again: a long run of checks (burst, waits,
/// token costs over and under the limit) gets the same answers and headers from Redis as from
/// the in-process backend.
#[tokio::test]
async fn the_script_decides_as_the_memory_backend_does() {
    let redis = RedisServer::from_env_or_start().expect("redis-server");
    let policy = || {
        QuotaPolicy::new().tenant(
            "a",
            Limits::new()
                .requests_per_minute(20)
                .tokens_per_minute(3000),
        )
    };
    let memory_clock = Clock::manual(start_of_2026());
    let redis_clock = Clock::manual(start_of_2026());
    let memory = Quota::new(
        no_usage(),
        &QuotaLayer::new(policy()).clock(memory_clock.clone()),
    );
    let fleet = Quota::new(
        no_usage(),
        &QuotaLayer::with_redis(
            policy(),
            RedisQuota::connect(redis.url())
                .unwrap()
                .timeout(Duration::from_secs(2))
                .key_prefix(unique_prefix("quota-same").as_str()),
        )
        .clock(redis_clock.clone()),
    );
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut passed, mut refused) = (0, 0);
    for step in 0..300 {
        let wait = Duration::from_millis(next() % 2500);
        memory_clock.advance(wait);
        redis_clock.advance(wait);
        let max_tokens = next() % 1200;
        let body = format!(r#"{{"model":"m","messages":[],"max_tokens":{max_tokens}}}"#);
        let request = || {
            let mut req = Request::post("/chat/completions")
                .body(Full::new(Bytes::from(body.clone())))
                .unwrap();
            req.extensions_mut().insert(Namespace("a".into()));
            req
        };
        let a = memory.clone().oneshot(request()).await.unwrap();
        let b = fleet.clone().oneshot(request()).await.unwrap();
        assert_eq!(a.status(), b.status(), "step {step}");
        for name in [
            "retry-after",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-requests",
            "x-ratelimit-reset-tokens",
        ] {
            assert_eq!(
                a.headers().get(name),
                b.headers().get(name),
                "step {step}: {name}"
            );
        }
        if a.status() == StatusCode::OK {
            passed += 1;
        } else {
            refused += 1;
        }
    }
    assert!(
        passed > 50 && refused > 50,
        "{passed} passed, {refused} refused"
    );
}

/// An upstream whose answers carry no usage (so the reservations stand and nothing is settled
/// in the background).
fn no_usage() -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    service_fn(|_req: Request<Full<Bytes>>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
    })
}
