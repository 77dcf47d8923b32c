use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use holysheep_core::error::ErrorBody;
use holysheep_core::price::{ModelPrice, PriceTable};
use holysheep_core::signal::{CacheOutcome, Namespace, RequestModel};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{BoxError, Service, ServiceExt, service_fn};

use crate::{Limits, Quota, QuotaLayer, QuotaPolicy};

/// What the fake upstream answers, chosen by the request.
#[derive(Clone, Copy)]
enum Answer {
    /// JSON with `usage` {prompt, completion}.
    Json(u64, u64),
    /// An SSE stream whose last chunk carries `usage`.
    Stream(u64, u64),
    /// A cache hit (JSON with usage, marked `CacheOutcome::Hit`).
    Hit(u64, u64),
    /// A `500` without usage.
    ServerError,
}

fn answer(a: Answer) -> Response<Full<Bytes>> {
    let json = |p: u64, c: u64| {
        format!(
            r#"{{"id":"x","model":"m","choices":[{{"message":{{"role":"assistant","content":"hi"}}}}],"usage":{{"prompt_tokens":{p},"completion_tokens":{c},"total_tokens":{}}}}}"#,
            p + c
        )
    };
    match a {
        Answer::Json(p, c) => Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(json(p, c))))
            .unwrap(),
        Answer::Hit(p, c) => {
            let mut r = answer(Answer::Json(p, c));
            r.extensions_mut().insert(CacheOutcome::Hit);
            r
        }
        Answer::Stream(p, c) => {
            let body = format!(
                "data: {{\"model\":\"m\",\"choices\":[{{\"delta\":{{\"content\":\"hi\"}}}}],\"usage\":null}}\n\n\
                 data: {{\"model\":\"m\",\"choices\":[],\"usage\":{{\"prompt_tokens\":{p},\"completion_tokens\":{c}}}}}\n\n\
                 data: [DONE]\n\n"
            );
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Full::new(Bytes::from(body)))
                .unwrap()
        }
        Answer::ServerError => Response::builder()
            .status(500)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"error":{"message":"boom"}}"#,
            )))
            .unwrap(),
    }
}

/// A fake upstream counting its calls; the answer is the request's `Answer` extension.
fn upstream(
    calls: Arc<AtomicUsize>,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    service_fn(move |req: Request<Full<Bytes>>| {
        calls.fetch_add(1, Ordering::SeqCst);
        let a = req.extensions().get::<Answer>().copied();
        async move { Ok::<_, Infallible>(answer(a.unwrap_or(Answer::Json(1, 1)))) }
    })
}

/// 2026-03-10T12:00:00Z.
fn noon() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_773_144_000)
}

fn request(tenant: Option<&str>, body: &str, a: Answer) -> Request<Full<Bytes>> {
    let mut req = Request::post("/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    if let Some(t) = tenant {
        req.extensions_mut().insert(Namespace(t.into()));
    }
    req.extensions_mut().insert(RequestModel("m".into()));
    req.extensions_mut().insert(a);
    req
}

type Answered = Response<crate::ResponseBody<Full<Bytes>>>;

struct Harness<S> {
    svc: S,
    calls: Arc<AtomicUsize>,
}

fn harness(
    layer: QuotaLayer,
) -> Harness<impl Service<Request<Full<Bytes>>, Response = Answered, Error = BoxError> + Clone> {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = Quota::new(upstream(Arc::clone(&calls)), &layer);
    Harness { svc, calls }
}

impl<S> Harness<S>
where
    S: Service<Request<Full<Bytes>>, Response = Answered, Error = BoxError> + Clone,
{
    /// Sends a request and reads its whole answer.
    async fn send(&self, req: Request<Full<Bytes>>) -> (http::response::Parts, Bytes) {
        let res = self.svc.clone().oneshot(req).await.unwrap();
        let (parts, body) = res.into_parts();
        (parts, body.collect().await.unwrap().to_bytes())
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn header<'a>(parts: &'a http::response::Parts, name: &str) -> &'a str {
    parts.headers[name].to_str().unwrap()
}

fn error_code(body: &Bytes) -> String {
    let e: ErrorBody = serde_json::from_slice(body).unwrap();
    e.error.code.unwrap()
}

const BODY: &str = r#"{"model":"m","messages":[{"role":"user","content":"Hello"}]}"#;

#[tokio::test(start_paused = true)]
async fn exactly_the_limit_passes_then_429_with_retry_after() {
    let policy = QuotaPolicy::new()
        .tenant("a", Limits::new().requests_per_minute(60))
        .tenant("b", Limits::new().requests_per_minute(60));
    let h = harness(QuotaLayer::new(policy));
    for i in 0..60 {
        let (parts, _) = h.send(request(Some("a"), BODY, Answer::Json(1, 1))).await;
        assert_eq!(parts.status, 200, "request {i}");
        assert_eq!(header(&parts, "x-ratelimit-limit-requests"), "60");
        assert_eq!(
            header(&parts, "x-ratelimit-remaining-requests"),
            (59 - i).to_string()
        );
    }
    let (parts, body) = h.send(request(Some("a"), BODY, Answer::Json(1, 1))).await;
    assert_eq!(parts.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&parts, "retry-after"), "1");
    assert_eq!(header(&parts, "x-ratelimit-remaining-requests"), "0");
    assert_eq!(header(&parts, "x-ratelimit-reset-requests"), "1m0s");
    assert_eq!(error_code(&body), "rate_limit_exceeded");
    assert_eq!(
        h.calls(),
        60,
        "a refused request never reaches the upstream"
    );
    // Another tenant is not affected.
    let (parts, _) = h.send(request(Some("b"), BODY, Answer::Json(1, 1))).await;
    assert_eq!(parts.status, 200);
    assert_eq!(header(&parts, "x-ratelimit-remaining-requests"), "59");
    // One more per second after the burst.
    tokio::time::advance(Duration::from_millis(1000)).await;
    let (parts, _) = h.send(request(Some("a"), BODY, Answer::Json(1, 1))).await;
    assert_eq!(parts.status, 200);
    let (parts, _) = h.send(request(Some("a"), BODY, Answer::Json(1, 1))).await;
    assert_eq!(parts.status, 429);
}

#[tokio::test(start_paused = true)]
async fn unlisted_tenants_and_anonymous_requests_pass_untouched() {
    let policy = QuotaPolicy::new().tenant("a", Limits::new().requests_per_minute(1));
    let h = harness(QuotaLayer::new(policy));
    for tenant in [None, Some("zed")] {
        for _ in 0..3 {
            let (parts, _) = h.send(request(tenant, BODY, Answer::Json(1, 1))).await;
            assert_eq!(parts.status, 200);
            assert!(parts.headers.get("x-ratelimit-limit-requests").is_none());
        }
    }
    // Default limits apply to both, anonymous requests counted as one tenant.
    let policy = QuotaPolicy::new().default_limits(Limits::new().requests_per_minute(1));
    let h = harness(QuotaLayer::new(policy));
    assert_eq!(
        h.send(request(None, BODY, Answer::Json(1, 1)))
            .await
            .0
            .status,
        200
    );
    assert_eq!(
        h.send(request(None, BODY, Answer::Json(1, 1)))
            .await
            .0
            .status,
        429
    );
    assert_eq!(
        h.send(request(Some("zed"), BODY, Answer::Json(1, 1)))
            .await
            .0
            .status,
        200
    );
}

#[tokio::test(start_paused = true)]
async fn tokens_are_reserved_then_reconciled_with_usage() {
    let policy = QuotaPolicy::new().tenant("a", Limits::new().tokens_per_minute(1000));
    let h = harness(QuotaLayer::new(policy));
    // The reservation (body / 4 + max_tokens 850) fits; the answer used 100 tokens.
    let body = r#"{"model":"m","messages":[{"role":"user","content":"Hello"}],"max_tokens":850}"#;
    let (parts, _) = h.send(request(Some("a"), body, Answer::Json(40, 60))).await;
    assert_eq!(parts.status, 200);
    let reserve = (body.len() as u64).div_ceil(4) + 850;
    assert_eq!(header(&parts, "x-ratelimit-limit-tokens"), "1000");
    assert_eq!(
        header(&parts, "x-ratelimit-remaining-tokens"),
        (1000 - reserve).to_string()
    );
    // The reservation was replaced by the 100 used: another reservation fits.
    let (parts, _) = h.send(request(Some("a"), body, Answer::Json(40, 60))).await;
    assert_eq!(parts.status, 200);
    assert_eq!(
        header(&parts, "x-ratelimit-remaining-tokens"),
        (1000 - 100 - reserve).to_string()
    );
    // 200 used; a third reservation does not fit in the 800 left.
    let (parts, body) = h.send(request(Some("a"), body, Answer::Json(40, 60))).await;
    assert_eq!(parts.status, 429);
    assert_eq!(error_code(&body), "rate_limit_exceeded");
    assert_eq!(h.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn streamed_usage_counts_and_hits_are_free() {
    let policy = QuotaPolicy::new().tenant(
        "a",
        Limits::new()
            .tokens_per_minute(10_000)
            .requests_per_minute(100),
    );
    let layer = QuotaLayer::new(policy);
    let handle = layer.handle();
    let h = harness(layer);
    let body = r#"{"model":"m","stream":true,"messages":[],"max_tokens":10}"#;
    let ns = Namespace("a".into());

    let (_, text) = h
        .send(request(Some("a"), body, Answer::Stream(1000, 2000)))
        .await;
    assert!(
        text.ends_with(b"data: [DONE]\n\n"),
        "the stream passes unchanged"
    );
    let usage = handle.usage(Some(&ns)).await;
    assert_eq!(usage.tokens.unwrap().remaining, 7000);

    // A hit: the request counts, its tokens do not.
    let (parts, _) = h
        .send(request(Some("a"), body, Answer::Hit(5000, 5000)))
        .await;
    assert_eq!(parts.status, 200);
    let usage = handle.usage(Some(&ns)).await;
    assert_eq!(usage.tokens.unwrap().remaining, 7000);
    assert_eq!(usage.requests.unwrap().remaining, 98);

    // An error answer without usage gives its reservation back.
    let (parts, _) = h.send(request(Some("a"), body, Answer::ServerError)).await;
    assert_eq!(parts.status, 500);
    let usage = handle.usage(Some(&ns)).await;
    assert_eq!(usage.tokens.unwrap().remaining, 7000);
    assert_eq!(usage.requests.unwrap().remaining, 97);
}

#[tokio::test(start_paused = true)]
async fn a_dollar_budget_runs_out_at_the_right_request() {
    // $1 per million tokens: 400k tokens cost $0.40.
    let prices = PriceTable::empty().with_price("m", ModelPrice::flat(1.0));
    let policy = QuotaPolicy::new().tenant("a", Limits::new().dollars_per_day(1.0));
    let layer = QuotaLayer::new(policy)
        .prices(prices)
        .clock(crate::Clock::starting_at(noon()));
    let handle = layer.handle();
    let h = harness(layer);
    // $0.40, $0.80, $1.20: the third passes (the budget was not spent yet), the fourth not.
    for i in 0..3 {
        let (parts, _) = h
            .send(request(Some("a"), BODY, Answer::Json(300_000, 100_000)))
            .await;
        assert_eq!(parts.status, 200, "request {i}");
    }
    let (parts, body) = h.send(request(Some("a"), BODY, Answer::Json(1, 1))).await;
    assert_eq!(parts.status, 429);
    assert_eq!(error_code(&body), "insufficient_quota");
    // Until midnight UTC: 12 hours.
    assert_eq!(header(&parts, "retry-after"), "43200");
    assert_eq!(h.calls(), 3);
    let usage = handle.usage(Some(&Namespace("a".into()))).await;
    assert!((usage.dollars_today - 1.2).abs() < 1e-9);
    assert!((usage.dollars_this_month - 1.2).abs() < 1e-9);
    // A new day, a new budget.
    tokio::time::advance(Duration::from_secs(12 * 3600)).await;
    let (parts, _) = h.send(request(Some("a"), BODY, Answer::Json(1, 1))).await;
    assert_eq!(parts.status, 200);
}

#[tokio::test(start_paused = true)]
async fn requests_in_flight_hold_their_place_until_the_body_ends() {
    let policy = QuotaPolicy::new().tenant("a", Limits::new().max_concurrent(1));
    let h = harness(QuotaLayer::new(policy));
    let first = h
        .svc
        .clone()
        .oneshot(request(Some("a"), BODY, Answer::Json(1, 1)))
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let (parts, body) = h.send(request(Some("a"), BODY, Answer::Json(1, 1))).await;
    assert_eq!(parts.status, 429);
    assert_eq!(header(&parts, "retry-after"), "1");
    assert_eq!(error_code(&body), "rate_limit_exceeded");
    // Reading the first answer to its end frees the place.
    first.into_body().collect().await.unwrap();
    let (parts, _) = h.send(request(Some("a"), BODY, Answer::Json(1, 1))).await;
    assert_eq!(parts.status, 200);
    assert_eq!(h.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_new_policy_takes_effect_for_the_next_request() {
    let layer =
        QuotaLayer::new(QuotaPolicy::new().tenant("a", Limits::new().requests_per_minute(1)));
    let handle = layer.handle();
    let h = harness(layer);
    assert_eq!(
        h.send(request(Some("a"), BODY, Answer::Json(1, 1)))
            .await
            .0
            .status,
        200
    );
    assert_eq!(
        h.send(request(Some("a"), BODY, Answer::Json(1, 1)))
            .await
            .0
            .status,
        429
    );
    handle.set_policy(QuotaPolicy::new().tenant("a", Limits::new().requests_per_minute(10)));
    let (parts, _) = h.send(request(Some("a"), BODY, Answer::Json(1, 1))).await;
    assert_eq!(parts.status, 200);
    assert_eq!(header(&parts, "x-ratelimit-limit-requests"), "10");
}

#[tokio::test(start_paused = true)]
async fn rejections_are_counted_by_tenant_and_reason() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let policy = QuotaPolicy::new().tenant("a", Limits::new().requests_per_minute(1));
    let h = harness(QuotaLayer::new(policy));
    let _guard = metrics::set_default_local_recorder(&recorder);
    h.send(request(Some("a"), BODY, Answer::Json(3, 4))).await;
    h.send(request(Some("a"), BODY, Answer::Json(3, 4))).await;
    let found = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .any(|(key, _, _, value)| {
            let labels: Vec<_> = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            key.key().name() == crate::names::REJECTIONS
                && labels.contains(&("tenant".into(), "a".into()))
                && labels.contains(&("reason".into(), "requests".into()))
                && value == DebugValue::Counter(1)
        });
    assert!(found);
}

#[tokio::test(start_paused = true)]
async fn allowed_requests_and_tokens_are_counted_by_tenant_label() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let policy = QuotaPolicy::new()
        .tenant(
            "a",
            Limits::new()
                .requests_per_minute(10)
                .tokens_per_minute(10_000),
        )
        .default_limits(Limits::new().requests_per_minute(10));
    let h = harness(QuotaLayer::new(policy));
    let _guard = metrics::set_default_local_recorder(&recorder);
    h.send(request(Some("a"), BODY, Answer::Json(3, 4))).await;
    h.send(request(Some("a"), BODY, Answer::Json(5, 6))).await;
    h.send(request(Some("unlisted"), BODY, Answer::Json(1, 1)))
        .await;
    h.send(request(None, BODY, Answer::Json(1, 1))).await;
    // Name, labels, value.
    type Series = (String, Vec<(String, String)>, DebugValue);
    let counters: Vec<Series> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let labels = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            (key.key().name().to_owned(), labels, value)
        })
        .collect();
    let value = |name: &str, labels: &[(&str, &str)]| {
        counters
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && l.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| l.contains(&((*k).to_owned(), (*v).to_owned())))
            })
            .map(|(_, _, v)| v)
    };
    let allowed = |tenant| [("tenant", tenant), ("result", "allowed")];
    assert_eq!(
        value(crate::names::REQUESTS, &allowed("a")),
        Some(&DebugValue::Counter(2))
    );
    // The unlisted tenant and the requests without a namespace share the label `other`.
    assert_eq!(
        value(crate::names::REQUESTS, &allowed("other")),
        Some(&DebugValue::Counter(2))
    );
    assert_eq!(
        value(crate::names::TOKENS, &[("tenant", "a")]),
        Some(&DebugValue::Counter(3 + 4 + 5 + 6))
    );
    assert_eq!(
        value(crate::names::TOKENS, &[("tenant", "other")]),
        Some(&DebugValue::Counter(4))
    );
}
