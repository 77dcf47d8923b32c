use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use holysheep_core::BoxError;
use holysheep_core::signal::Attempts;
use http::{Request, Response, StatusCode};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
use tower_test::mock;

use crate::{ATTEMPTS_HEADER, Classify, DeadlineExceeded, RetryLayer, is_deadline};

type Outcome = Result<Response<Bytes>, io::Error>;
type Step = fn() -> Outcome;

/// An upstream that plays `script` in order (the last entry repeats) and counts its calls.
#[derive(Clone)]
struct Scripted {
    script: Arc<Mutex<VecDeque<Step>>>,
    calls: Arc<AtomicUsize>,
}

impl Scripted {
    fn new(script: Vec<Step>) -> Self {
        Self {
            script: Arc::new(Mutex::new(script.into())),
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn service(
        &self,
    ) -> impl Service<
        Request<Bytes>,
        Response = Response<Bytes>,
        Error = io::Error,
        Future = impl Future<Output = Outcome> + Send,
    > + Clone
    + Send
    + 'static {
        let this = self.clone();
        service_fn(move |req: Request<Bytes>| {
            assert_eq!(req.body(), "prompt", "every attempt sends the full body");
            this.calls.fetch_add(1, Ordering::SeqCst);
            let next = {
                let mut script = this.script.lock().unwrap();
                if script.len() > 1 {
                    script.pop_front().unwrap()
                } else {
                    *script.front().unwrap()
                }
            };
            std::future::ready(next())
        })
    }
}

fn status(code: u16) -> Outcome {
    Ok(Response::builder()
        .status(code)
        .body(Bytes::from_static(b"answer"))
        .unwrap())
}

fn ok() -> Outcome {
    status(200)
}

fn unavailable() -> Outcome {
    status(503)
}

fn request() -> Request<Bytes> {
    Request::new(Bytes::from_static(b"prompt"))
}

fn attempts(res: &Response<Bytes>) -> u32 {
    res.extensions().get::<Attempts>().unwrap().0
}

#[tokio::test(start_paused = true)]
async fn first_try_passes_through() {
    let up = Scripted::new(vec![ok]);
    let svc = RetryLayer::new().layer_on(up.service());
    let res = svc.oneshot(request()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(attempts(&res), 1);
    assert_eq!(up.calls(), 1);
    assert!(res.headers().get(ATTEMPTS_HEADER).is_none());
}

#[tokio::test(start_paused = true)]
async fn transient_statuses_are_retried_until_success() {
    let up = Scripted::new(vec![unavailable, || status(502), || status(429), ok]);
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new().attempts_header(true))
        .service(up.service());
    let res = svc.oneshot(request()).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(attempts(&res), 4);
    assert_eq!(res.headers()[ATTEMPTS_HEADER], "4");
    assert_eq!(up.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn other_client_errors_are_final() {
    let steps: [(u16, Step); 4] = [
        (400, || status(400)),
        (401, || status(401)),
        (404, || status(404)),
        (422, || status(422)),
    ];
    for (code, step) in steps {
        let up = Scripted::new(vec![step, ok]);
        let res = RetryLayer::new()
            .layer_on(up.service())
            .oneshot(request())
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), code);
        assert_eq!(attempts(&res), 1);
        assert_eq!(up.calls(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn retries_stop_at_the_limit_and_return_the_last_answer() {
    let up = Scripted::new(vec![|| status(500)]);
    let res = RetryLayer::new()
        .max_retries(3)
        .layer_on(up.service())
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(res.body(), "answer");
    assert_eq!(attempts(&res), 4);
    assert_eq!(up.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn backoff_stays_under_the_exponential_ceilings() {
    let up = Scripted::new(vec![|| status(500)]);
    let start = Instant::now();
    RetryLayer::new()
        .backoff(Duration::from_millis(100), Duration::from_millis(150))
        .layer_on(up.service())
        .oneshot(request())
        .await
        .unwrap();
    // Ceilings 100 + 150 + 150 ms (capped), jittered below.
    assert!(start.elapsed() <= Duration::from_millis(400));
    assert_eq!(up.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn connect_faults_are_retried_unknown_errors_are_not() {
    let up = Scripted::new(vec![
        || Err(io::ErrorKind::ConnectionRefused.into()),
        || Err(io::ErrorKind::TimedOut.into()),
        ok,
    ]);
    let res = RetryLayer::new()
        .layer_on(up.service())
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(attempts(&res), 3);

    let up = Scripted::new(vec![|| Err(io::Error::other("overloaded")), ok]);
    let err = RetryLayer::new()
        .layer_on(up.service())
        .oneshot(request())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "overloaded");
    assert_eq!(up.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let up = Scripted::new(vec![
        || {
            Ok(Response::builder()
                .status(429)
                .header("retry-after", "2")
                .body(Bytes::new())
                .unwrap())
        },
        ok,
    ]);
    let start = Instant::now();
    let res = RetryLayer::new()
        .layer_on(up.service())
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(attempts(&res), 2);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

fn too_many(after: &'static str) -> Outcome {
    Ok(Response::builder()
        .status(429)
        .header("retry-after", after)
        .body(Bytes::new())
        .unwrap())
}

#[tokio::test(start_paused = true)]
async fn retry_after_past_the_cap_or_deadline_gives_up_at_once() {
    let up = Scripted::new(vec![|| too_many("31"), ok]);
    let start = Instant::now();
    let res = RetryLayer::new()
        .layer_on(up.service())
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["retry-after"], "31");
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(up.calls(), 1);

    let up = Scripted::new(vec![|| too_many("10"), ok]);
    let res = RetryLayer::new()
        .deadline(Duration::from_secs(5))
        .layer_on(up.service())
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(attempts(&res), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_in_flight_at_the_deadline_fails_the_call() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let slow = service_fn(move |_req: Request<Bytes>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, io::Error>(Response::new(Bytes::new()))
        }
    });
    let start = Instant::now();
    let err = RetryLayer::new()
        .deadline(Duration::from_secs(60))
        .layer_on(slow)
        .oneshot(request())
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(60));
    assert!(is_deadline(&*err));
    let typed = err.downcast_ref::<DeadlineExceeded>().unwrap();
    assert_eq!(typed.deadline(), Duration::from_secs(60));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn backoff_past_the_deadline_is_not_slept() {
    let up = Scripted::new(vec![unavailable, ok]);
    let start = Instant::now();
    let res = RetryLayer::new()
        .backoff(Duration::from_secs(10), Duration::from_secs(10))
        .deadline(Duration::ZERO)
        .layer_on(up.service())
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(up.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_stops_retries_for_every_clone() {
    let up = Scripted::new(vec![unavailable]);
    // No share of traffic, and a floor of 1 retry/s over the 10 s window: 10 retries in all.
    let svc = RetryLayer::new()
        .budget(1, 0.0)
        .backoff(Duration::from_millis(1), Duration::from_millis(1))
        .layer_on(up.service());
    for _ in 0..20 {
        let res = svc.clone().oneshot(request()).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(up.calls(), 20 + 10);
}

#[tokio::test(start_paused = true)]
async fn every_service_of_one_layer_spends_one_budget() {
    let up = Scripted::new(vec![unavailable]);
    let layer = RetryLayer::new().backoff(Duration::from_millis(1), Duration::from_millis(1));
    let earlier = layer.clone();
    // Set before anything is built, so the clone made earlier spends this budget too: a floor
    // of 1 retry/s over the 10 s window and no share of traffic, 10 retries in all.
    let layer = layer.budget(1, 0.0);
    let first = layer.clone().layer_on(up.service());
    let second = earlier.layer_on(up.service());
    // Once the budget is made, a budget setter changes nothing of it.
    let third = layer.budget(1000, 10.0).layer_on(up.service());
    for svc in [first, second, third] {
        for _ in 0..10 {
            let res = svc.clone().oneshot(request()).await.unwrap();
            assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        }
    }
    assert_eq!(up.calls(), 30 + 10);
}

#[tokio::test(start_paused = true)]
async fn the_budget_grows_with_traffic_and_can_be_shared() {
    let budget = Arc::new(crate::TpsBudget::new(Duration::from_secs(10), 0, 0.5));
    let layer = RetryLayer::new()
        .shared_budget(budget)
        .max_retries(100)
        .backoff(Duration::from_millis(1), Duration::from_millis(1));

    // Without traffic there is nothing to spend.
    let failing = Scripted::new(vec![unavailable]);
    layer
        .clone()
        .layer_on(failing.service())
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(failing.calls(), 1);

    // Ten good calls through another service on the same budget, plus the two failing calls,
    // deposit twelve: at 50 % that buys six retries.
    let good = Scripted::new(vec![ok]);
    let svc = layer.clone().layer_on(good.service());
    for _ in 0..10 {
        svc.clone().oneshot(request()).await.unwrap();
    }
    let failing = Scripted::new(vec![unavailable]);
    layer
        .layer_on(failing.service())
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(failing.calls(), 1 + 6);
}

#[tokio::test(start_paused = true)]
async fn a_retried_body_is_dropped_before_the_next_attempt() {
    struct Tracked(Arc<AtomicUsize>);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let (d, c) = (dropped.clone(), calls.clone());
    let svc = service_fn(move |_req: Request<Bytes>| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        if n == 1 {
            assert_eq!(d.load(Ordering::SeqCst), 1, "first body still alive");
        }
        let status = if n == 0 { 503 } else { 200 };
        let res = Response::builder()
            .status(status)
            .body(Tracked(d.clone()))
            .unwrap();
        std::future::ready(Ok::<_, io::Error>(res))
    });
    let res = RetryLayer::new()
        .layer_on(svc)
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(dropped.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_custom_classifier_replaces_the_default() {
    #[derive(Clone)]
    struct Only418;
    impl Classify for Only418 {
        fn is_retryable_response(&self, status: StatusCode, _: &http::HeaderMap) -> bool {
            status == StatusCode::IM_A_TEAPOT
        }
        fn is_retryable_error(&self, _: &(dyn std::error::Error + 'static)) -> bool {
            false
        }
    }
    let up = Scripted::new(vec![|| status(418), unavailable]);
    let res = RetryLayer::new()
        .classify(Only418)
        .layer_on(up.service())
        .oneshot(request())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(attempts(&res), 2);
}

#[tokio::test(start_paused = true)]
async fn readiness_and_sequencing_follow_the_inner_service() {
    let (mock, mut handle) = mock::pair::<Request<Bytes>, Response<Bytes>>();
    let mut svc = RetryLayer::new().layer_on(mock);

    handle.allow(0);
    assert!(
        std::future::poll_fn(|cx| svc.poll_ready(cx))
            .now_or_never()
            .is_none(),
        "not ready while the inner service is not"
    );
    handle.allow(1);
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    let fut = tokio::spawn(svc.call(request()));

    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req.body(), "prompt");
    send.send_error(io::Error::from(io::ErrorKind::ConnectionReset));

    // The retry waits for the inner service to be ready again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!fut.is_finished());
    handle.allow(1);
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req.body(), "prompt");
    send.send_response(Response::new(Bytes::from_static(b"done")));
    let res = fut.await.unwrap().unwrap();
    assert_eq!(res.body(), "done");
    assert_eq!(attempts(&res), 2);
}

/// Shorthand for building a service from a layer in tests.
trait LayerOn<S> {
    type Service;
    fn layer_on(self, inner: S) -> Self::Service;
}

impl<L: tower_layer::Layer<S>, S> LayerOn<S> for L {
    type Service = L::Service;
    fn layer_on(self, inner: S) -> L::Service {
        self.layer(inner)
    }
}

#[test]
fn futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let up = Scripted::new(vec![ok]);
    let mut svc = RetryLayer::new().layer_on(up.service());
    assert_send(&svc);
    let fut = svc.call(request());
    assert_send(&fut);
    let _: Option<BoxError> = None;
}
