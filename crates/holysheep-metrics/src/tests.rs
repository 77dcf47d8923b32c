//! Behaviour of the whole layer, observed through `metrics-util`'s `DebuggingRecorder`.
//!
//! Each test installs the recorder for its own thread (`set_default_local_recorder`) and runs
//! on tokio's current-thread runtime with paused time, so durations are exact.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, stream};
use holysheep_core::BoxError;
use holysheep_core::signal::{Attempts, CacheOutcome, Namespace, RequestModel, SemanticHit};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use std::pin::Pin;
use tokio::sync::mpsc;
use tower::{Layer, ServiceExt, service_fn};

use holysheep_core::error::{DeadlineExceeded, Overloaded};

use crate::{MetricsLayer, names};

/// Reads a recorder; snapshots drain it, so gauges are added up here across snapshots.
struct Probe {
    snapshotter: Snapshotter,
    gauges: std::cell::RefCell<BTreeMap<String, f64>>,
}

impl Probe {
    fn new(recorder: &DebuggingRecorder) -> Self {
        Self {
            snapshotter: recorder.snapshotter(),
            gauges: Default::default(),
        }
    }

    /// Counters and histograms since the last call; gauges since the start.
    fn take(&self) -> Recorded {
        let mut recorded = Recorded::take(&self.snapshotter);
        let mut gauges = self.gauges.borrow_mut();
        for (name, delta) in &recorded.gauges {
            *gauges.entry(name.clone()).or_default() += delta;
        }
        recorded.gauges = gauges.clone();
        recorded
    }
}

/// A metric name and its sorted labels.
type Series = (String, Vec<(String, String)>);

/// Everything recorded so far: counters summed, gauges as net change, histogram samples.
#[derive(Default)]
struct Recorded {
    counters: BTreeMap<Series, u64>,
    gauges: BTreeMap<String, f64>,
    histograms: BTreeMap<Series, Vec<f64>>,
}

impl Recorded {
    fn take(snapshotter: &Snapshotter) -> Self {
        let mut out = Self::default();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let name = key.key().name().to_owned();
            let mut labels: Vec<_> = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            match (key.kind(), value) {
                (MetricKind::Counter, DebugValue::Counter(v)) => {
                    *out.counters.entry((name, labels)).or_default() += v;
                }
                (MetricKind::Gauge, DebugValue::Gauge(v)) => {
                    *out.gauges.entry(name).or_default() += v.into_inner();
                }
                (MetricKind::Histogram, DebugValue::Histogram(v)) => out
                    .histograms
                    .entry((name, labels))
                    .or_default()
                    .extend(v.into_iter().map(|f| f.into_inner())),
                _ => unreachable!("a metric's kind and value always match"),
            }
        }
        out
    }

    fn matches(labels: &[(String, String)], want: &[(&str, &str)]) -> bool {
        want.iter()
            .all(|(k, v)| labels.iter().any(|(lk, lv)| lk == k && lv == v))
    }

    /// The sum of counter `name` over series whose labels include `want`.
    fn counter(&self, name: &str, want: &[(&str, &str)]) -> u64 {
        self.counters
            .iter()
            .filter(|((n, l), _)| n == name && Self::matches(l, want))
            .map(|(_, v)| v)
            .sum()
    }

    /// Samples of histogram `name` over series whose labels include `want`.
    fn histogram(&self, name: &str, want: &[(&str, &str)]) -> Vec<f64> {
        self.histograms
            .iter()
            .filter(|((n, l), _)| n == name && Self::matches(l, want))
            .flat_map(|(_, v)| v.iter().copied())
            .collect()
    }

    fn in_flight(&self) -> f64 {
        self.gauges.get(names::IN_FLIGHT).copied().unwrap_or(0.0)
    }

    fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut values: Vec<_> = self
            .counters
            .keys()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, l)| l.iter().filter(|(k, _)| k == label).map(|(_, v)| v.clone()))
            .collect();
        values.sort();
        values.dedup();
        values
    }
}

fn json(body: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("a valid response")
}

const ANSWER: &str = r#"{"id":"c1","object":"chat.completion","model":"gpt-4.1","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500}}"#;

fn request(model: Option<&str>) -> Request<String> {
    let mut req = Request::new(String::new());
    if let Some(model) = model {
        req.extensions_mut().insert(RequestModel(Arc::from(model)));
    }
    req
}

#[tokio::test(start_paused = true)]
async fn json_answer_counts_times_tokens_and_cost() {
    let recorder = DebuggingRecorder::new();
    let probe = Probe::new(&recorder);
    let _guard = metrics::set_default_local_recorder(&recorder);

    let svc = MetricsLayer::new().layer(service_fn(|_req: Request<String>| async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok::<_, BoxError>(json(ANSWER))
    }));
    let res = svc.oneshot(request(None)).await.unwrap();
    assert_eq!(probe.take().in_flight(), 1.0);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, ANSWER.as_bytes(), "the body passes unchanged");

    let m = probe.take();
    let labels = [
        ("model", "gpt-4.1"),
        ("status", "2xx"),
        ("cache", "none"),
        ("outcome", "completed"),
    ];
    assert_eq!(m.counter(names::REQUESTS, &labels), 1);
    assert_eq!(m.histogram(names::REQUEST_DURATION, &labels), vec![0.05]);
    assert_eq!(
        m.histogram(names::TIME_TO_FIRST_BYTE, &[("model", "gpt-4.1")]),
        vec![0.05]
    );
    let tokens = |kind, cache| m.counter(names::TOKENS, &[("kind", kind), ("cache", cache)]);
    assert_eq!(tokens("prompt", "miss"), 1000);
    assert_eq!(tokens("completion", "miss"), 500);
    assert_eq!(tokens("prompt", "hit"), 0);
    // 1,500 tokens of GPT-4.1 at $8 per million: $0.012.
    assert_eq!(m.counter(names::COST, &[("model", "gpt-4.1")]), 12_000);
    assert_eq!(m.counter(names::COST_SAVED, &[]), 0);
    assert_eq!(m.counter(names::ERRORS, &[]), 0);
    assert_eq!(
        m.counter(names::UPSTREAM_ATTEMPTS, &[]),
        0,
        "no RetryLayer, no Attempts"
    );
    assert_eq!(m.in_flight(), 0.0);
}

#[tokio::test]
async fn building_the_layer_describes_nothing() {
    let recorder = DebuggingRecorder::new();
    let probe = Probe::new(&recorder);
    let _guard = metrics::set_default_local_recorder(&recorder);

    let svc = MetricsLayer::new().layer(service_fn(|_req: Request<String>| async {
        Ok::<_, BoxError>(json(ANSWER))
    }));
    let res = svc.oneshot(request(None)).await.unwrap();
    res.into_body().collect().await.unwrap();

    let snapshot = probe.snapshotter.snapshot().into_vec();
    assert!(!snapshot.is_empty(), "the request was recorded");
    for (key, unit, help, _) in snapshot {
        assert!(unit.is_none() && help.is_none(), "{key:?} was described");
    }
}

#[tokio::test]
async fn request_model_wins_and_descriptions_are_registered() {
    let recorder = DebuggingRecorder::new();
    let probe = Probe::new(&recorder);
    let _guard = metrics::set_default_local_recorder(&recorder);
    crate::describe();

    let svc = MetricsLayer::new().layer(service_fn(|_req: Request<String>| async {
        Ok::<_, BoxError>(json(ANSWER))
    }));
    let res = svc.oneshot(request(Some("deepseek-v3.2"))).await.unwrap();
    res.into_body().collect().await.unwrap();

    let snapshot = probe.snapshotter.snapshot().into_vec();
    let (_, unit, help, _) = snapshot
        .iter()
        .find(|(k, ..)| k.key().name() == names::REQUEST_DURATION)
        .expect("duration recorded");
    assert_eq!(*unit, Some(metrics::Unit::Seconds));
    assert!(help.is_some());

    let mut m = Recorded::default();
    for (key, _, _, value) in snapshot {
        if let DebugValue::Counter(v) = value {
            let labels = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            m.counters.insert((key.key().name().to_owned(), labels), v);
        }
    }
    assert_eq!(m.label_values(names::REQUESTS, "model"), ["deepseek-v3.2"]);
    // Priced as the request's model: 1,500 tokens at $0.42 per million = 630 micro-USD.
    assert_eq!(m.counter(names::COST, &[("model", "deepseek-v3.2")]), 630);
}

/// A streamed body fed by the test, frame by frame.
type FrameStream = Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, BoxError>> + Send>>;

fn channel_body() -> (
    mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
    StreamBody<FrameStream>,
) {
    let (tx, rx) = mpsc::channel(8);
    let stream = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|f| (f, rx)) });
    (tx, StreamBody::new(Box::pin(stream)))
}

fn sse(data: &str) -> Result<Frame<Bytes>, BoxError> {
    Ok(Frame::data(holysheep_core::sse::encode_event(data)))
}

#[tokio::test(start_paused = true)]
async fn stream_times_first_and_last_byte_and_reads_final_usage() {
    let recorder = DebuggingRecorder::new();
    let probe = Probe::new(&recorder);
    let _guard = metrics::set_default_local_recorder(&recorder);

    let (tx, body) = channel_body();
    let body = std::sync::Mutex::new(Some(body));
    let svc = MetricsLayer::new().layer(service_fn(move |_req: Request<String>| {
        let body = body.lock().unwrap().take().expect("called once");
        async move {
            Ok::<_, BoxError>(
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(body)
                    .unwrap(),
            )
        }
    }));
    let mut body = svc.oneshot(request(None)).await.unwrap().into_body();

    tokio::time::sleep(Duration::from_millis(20)).await;
    tx.send(sse(
        r#"{"model":"claude-sonnet-4.5","choices":[{"delta":{"content":"He"}}],"usage":null}"#,
    ))
    .await
    .unwrap();
    assert!(body.frame().await.unwrap().unwrap().is_data());
    tokio::time::sleep(Duration::from_millis(30)).await;
    tx.send(sse(
        r#"{"model":"claude-sonnet-4.5","choices":[{"delta":{"content":"llo"}}],"usage":null}"#,
    ))
    .await
    .unwrap();
    tx.send(sse(r#"{"model":"claude-sonnet-4.5","choices":[],"usage":{"prompt_tokens":40,"completion_tokens":60,"total_tokens":100}}"#))
        .await
        .unwrap();
    tx.send(Ok(Frame::data(Bytes::from_static(
        holysheep_core::sse::DONE_EVENT,
    ))))
    .await
    .unwrap();
    assert_eq!(
        probe.take().counter(names::REQUESTS, &[]),
        0,
        "not yet ended"
    );
    drop(tx);
    while let Some(frame) = body.frame().await {
        frame.unwrap();
    }

    let m = probe.take();
    let model = ("model", "claude-sonnet-4.5");
    assert_eq!(
        m.counter(names::REQUESTS, &[model, ("outcome", "completed")]),
        1
    );
    assert_eq!(m.histogram(names::TIME_TO_FIRST_BYTE, &[model]), vec![0.02]);
    assert_eq!(m.histogram(names::REQUEST_DURATION, &[model]), vec![0.05]);
    assert_eq!(m.counter(names::TOKENS, &[model, ("kind", "prompt")]), 40);
    assert_eq!(
        m.counter(names::TOKENS, &[model, ("kind", "completion")]),
        60
    );
    // 100 tokens at $15 per million: 1,500 micro-USD.
    assert_eq!(m.counter(names::COST, &[model]), 1_500);
    assert_eq!(m.in_flight(), 0.0);
}

#[tokio::test(start_paused = true)]
async fn dropped_stream_ends_its_timer_once_as_cancelled() {
    let recorder = DebuggingRecorder::new();
    let probe = Probe::new(&recorder);
    let _guard = metrics::set_default_local_recorder(&recorder);

    let (tx, body) = channel_body();
    let body = std::sync::Mutex::new(Some(body));
    let svc = MetricsLayer::new().layer(service_fn(move |_req: Request<String>| {
        let body = body.lock().unwrap().take().expect("called once");
        async move {
            Ok::<_, BoxError>(
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(body)
                    .unwrap(),
            )
        }
    }));
    let mut body = svc
        .oneshot(request(Some("gpt-4.1")))
        .await
        .unwrap()
        .into_body();
    tx.send(sse(r#"{"choices":[{"delta":{"content":"He"}}]}"#))
        .await
        .unwrap();
    body.frame().await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(70)).await;
    assert_eq!(probe.take().in_flight(), 1.0);
    drop(body);
    // The sender outliving the body must not end anything a second time.
    tx.send(sse("{}")).await.unwrap_err();
    drop(tx);

    let m = probe.take();
    assert_eq!(m.counter(names::REQUESTS, &[]), 1);
    assert_eq!(
        m.counter(
            names::REQUESTS,
            &[("outcome", "cancelled"), ("status", "2xx")]
        ),
        1
    );
    assert_eq!(
        m.histogram(names::REQUEST_DURATION, &[("outcome", "cancelled")]),
        vec![0.07]
    );
    assert_eq!(m.histogram(names::TIME_TO_FIRST_BYTE, &[]), vec![0.0]);
    assert_eq!(m.counter(names::TOKENS, &[]), 0);
    assert_eq!(m.in_flight(), 0.0);
}

#[tokio::test(start_paused = true)]
async fn future_dropped_before_the_answer_is_cancelled_without_status() {
    let recorder = DebuggingRecorder::new();
    let probe = Probe::new(&recorder);
    let _guard = metrics::set_default_local_recorder(&recorder);

    let svc = MetricsLayer::new().layer(service_fn(|_req: Request<String>| async {
        std::future::pending::<Result<Response<Full<Bytes>>, BoxError>>().await
    }));
    let call = svc.oneshot(request(Some("gpt-4.1")));
    assert!(
        tokio::time::timeout(Duration::from_millis(30), call)
            .await
            .is_err()
    );

    let m = probe.take();
    let labels = [
        ("status", "none"),
        ("outcome", "cancelled"),
        ("model", "gpt-4.1"),
    ];
    assert_eq!(m.counter(names::REQUESTS, &labels), 1);
    assert_eq!(m.histogram(names::REQUEST_DURATION, &labels), vec![0.03]);
    assert_eq!(m.in_flight(), 0.0);
}

#[tokio::test]
async fn cache_hits_and_coalesced_count_as_saved() {
    let recorder = DebuggingRecorder::new();
    let probe = Probe::new(&recorder);
    let _guard = metrics::set_default_local_recorder(&recorder);

    let layer = MetricsLayer::new();
    for outcome in [
        CacheOutcome::Hit,
        CacheOutcome::Coalesced,
        CacheOutcome::Miss,
    ] {
        let svc = layer.layer(service_fn(move |_req: Request<String>| async move {
            let mut res = json(ANSWER);
            res.extensions_mut().insert(outcome);
            res.extensions_mut()
                .insert(RequestModel(Arc::from("gpt-4.1")));
            Ok::<_, BoxError>(res)
        }));
        let res = svc.oneshot(request(None)).await.unwrap();
        res.into_body().collect().await.unwrap();
    }

    let m = probe.take();
    for cache in ["hit", "coalesced", "miss"] {
        assert_eq!(
            m.counter(names::REQUESTS, &[("cache", cache)]),
            1,
            "{cache}"
        );
    }
    // Two answers cost nothing upstream; their tokens are labelled apart.
    assert_eq!(
        m.counter(names::TOKENS, &[("cache", "hit"), ("kind", "prompt")]),
        2000
    );
    assert_eq!(
        m.counter(names::TOKENS, &[("cache", "miss"), ("kind", "prompt")]),
        1000
    );
    assert_eq!(
        m.counter(names::COST_SAVED, &[("model", "gpt-4.1")]),
        24_000
    );
    assert_eq!(m.counter(names::COST, &[("model", "gpt-4.1")]), 12_000);
}

#[tokio::test]
async fn attempts_and_retries_from_the_extension() {
    let recorder = DebuggingRecorder::new();
    let probe = Probe::new(&recorder);
    let _guard = metrics::set_default_local_recorder(&recorder);

    let layer = MetricsLayer::new();
    for attempts in [1, 3] {
        let svc = layer.layer(service_fn(move |_req: Request<String>| async move {
            let mut res = json(ANSWER);
            res.extensions_mut().insert(Attempts(attempts));
            Ok::<_, BoxError>(res)
        }));
        let res = svc.oneshot(request(None)).await.unwrap();
        res.into_body().collect().await.unwrap();
    }

    let m = probe.take();
    assert_eq!(
        m.counter(names::UPSTREAM_ATTEMPTS, &[("model", "gpt-4.1")]),
        4
    );
    assert_eq!(m.counter(names::RETRIES, &[("model", "gpt-4.1")]), 2);
}

#[tokio::test(start_paused = true)]
async fn failed_calls_are_counted_timed_and_classified() {
    let recorder = DebuggingRecorder::new();
    let probe = Probe::new(&recorder);
    let _guard = metrics::set_default_local_recorder(&recorder);

    // No registration: the layers' own errors are known to the default classification.
    let layer = MetricsLayer::new();
    let errors: [fn() -> BoxError; 5] = [
        || io::Error::from(io::ErrorKind::TimedOut).into(),
        || io::Error::from(io::ErrorKind::ConnectionRefused).into(),
        || Overloaded::new(Duration::from_secs(1)).into(),
        || DeadlineExceeded::new(Duration::from_secs(60)).into(),
        || "something else".into(),
    ];
    for error in errors {
        let svc = layer.layer(service_fn(move |_req: Request<String>| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Err::<Response<Full<Bytes>>, BoxError>(error())
        }));
        assert!(svc.oneshot(request(Some("gpt-4.1"))).await.is_err());
    }

    let m = probe.take();
    let labels = [("status", "error"), ("outcome", "error"), ("cache", "none")];
    assert_eq!(m.counter(names::REQUESTS, &labels), 5);
    assert_eq!(m.histogram(names::REQUEST_DURATION, &labels), vec![0.01; 5]);
    assert!(m.histogram(names::TIME_TO_FIRST_BYTE, &[]).is_empty());
    for class in ["timeout", "connect", "overload", "deadline", "other"] {
        assert_eq!(m.counter(names::ERRORS, &[("class", class)]), 1, "{class}");
    }
    assert_eq!(m.counter(names::SHED, &[("model", "gpt-4.1")]), 1);
    assert_eq!(m.in_flight(), 0.0);
}

#[tokio::test]
async fn server_error_answers_are_a_status_not_an_error() {
    let recorder = DebuggingRecorder::new();
    let probe = Probe::new(&recorder);
    let _guard = metrics::set_default_local_recorder(&recorder);

    let svc = MetricsLayer::new().layer(service_fn(|_req: Request<String>| async {
        let body = holysheep_core::error::ErrorBody::new("upstream down", "server_error");
        let res = body.into_response(StatusCode::BAD_GATEWAY).map(Full::new);
        Ok::<_, BoxError>(res)
    }));
    let res = svc.oneshot(request(Some("gpt-4.1"))).await.unwrap();
    res.into_body().collect().await.unwrap();

    let m = probe.take();
    assert_eq!(
        m.counter(
            names::REQUESTS,
            &[("status", "5xx"), ("outcome", "completed")]
        ),
        1
    );
    assert_eq!(m.counter(names::ERRORS, &[]), 0);
    assert_eq!(m.counter(names::TOKENS, &[]), 0);
}

#[tokio::test]
async fn body_failure_mid_stream_is_an_error_of_its_class() {
    let recorder = DebuggingRecorder::new();
    let probe = Probe::new(&recorder);
    let _guard = metrics::set_default_local_recorder(&recorder);

    let (tx, body) = channel_body();
    let body = std::sync::Mutex::new(Some(body));
    let svc = MetricsLayer::new().layer(service_fn(move |_req: Request<String>| {
        let body = body.lock().unwrap().take().expect("called once");
        async move { Ok::<_, Infallible>(Response::new(body)) }
    }));
    let mut body = svc.oneshot(request(None)).await.unwrap().into_body();
    tx.send(Ok(Frame::data(Bytes::from_static(b"partial"))))
        .await
        .unwrap();
    tx.send(Err(io::Error::from(io::ErrorKind::ConnectionReset).into()))
        .await
        .unwrap();
    assert!(body.frame().await.unwrap().is_ok());
    assert!(body.frame().await.unwrap().is_err());
    drop(body);

    let m = probe.take();
    assert_eq!(
        m.counter(
            names::REQUESTS,
            &[
                ("status", "2xx"),
                ("outcome", "error"),
                ("model", "unknown")
            ]
        ),
        1
    );
    assert_eq!(m.counter(names::ERRORS, &[("class", "connect")]), 1);
    assert_eq!(m.counter(names::SHED, &[]), 0);
    assert_eq!(m.in_flight(), 0.0);
}

#[tokio::test]
async fn sized_bodies_end_at_their_last_frame_and_empty_ones_at_once() {
    let recorder = DebuggingRecorder::new();
    let probe = Probe::new(&recorder);
    let _guard = metrics::set_default_local_recorder(&recorder);

    let svc = MetricsLayer::new().layer(service_fn(|_req: Request<String>| async {
        Ok::<_, BoxError>(json(ANSWER))
    }));
    let mut body = svc.oneshot(request(None)).await.unwrap().into_body();
    // hyper stops after the frame that makes `is_end_stream()` true; it never polls `None`.
    body.frame().await.unwrap().unwrap();
    assert!(body.is_end_stream());
    let m = probe.take();
    assert_eq!(m.counter(names::REQUESTS, &[("outcome", "completed")]), 1);
    assert_eq!(m.counter(names::TOKENS, &[("kind", "completion")]), 500);
    drop(body);

    let svc = MetricsLayer::new().layer(service_fn(|_req: Request<String>| async {
        Ok::<_, BoxError>(Response::new(Empty::<Bytes>::new()))
    }));
    let res = svc.oneshot(request(None)).await.unwrap();
    let m = probe.take();
    assert_eq!(m.counter(names::REQUESTS, &[("outcome", "completed")]), 1);
    assert!(m.histogram(names::TIME_TO_FIRST_BYTE, &[]).is_empty());
    drop(res);
    assert_eq!(probe.take().counter(names::REQUESTS, &[]), 0);
}

#[tokio::test]
async fn unknown_models_fold_into_other_past_the_bound() {
    let recorder = DebuggingRecorder::new();
    let probe = Probe::new(&recorder);
    let _guard = metrics::set_default_local_recorder(&recorder);

    let layer = MetricsLayer::new().max_models(2);
    let svc = layer.layer(service_fn(|_req: Request<String>| async {
        Ok::<_, BoxError>(Response::new(Empty::<Bytes>::new()))
    }));
    for model in [
        "m-1",
        "m-2",
        "m-3",
        "m-4",
        "m-1",
        "gpt-4.1",
        "deepseek-v3.2",
    ] {
        svc.clone().oneshot(request(Some(model))).await.unwrap();
    }

    let m = probe.take();
    assert_eq!(
        m.label_values(names::REQUESTS, "model"),
        ["deepseek-v3.2", "gpt-4.1", "m-1", "m-2", "other"]
    );
    assert_eq!(m.counter(names::REQUESTS, &[("model", "other")]), 2);
    assert_eq!(m.counter(names::REQUESTS, &[("model", "m-1")]), 2);
}

#[tokio::test]
async fn one_layer_is_one_set_of_model_labels() {
    let recorder = DebuggingRecorder::new();
    let probe = Probe::new(&recorder);
    let _guard = metrics::set_default_local_recorder(&recorder);

    let empty = || {
        service_fn(|_req: Request<String>| async {
            Ok::<_, BoxError>(Response::new(Empty::<Bytes>::new()))
        })
    };
    let layer = MetricsLayer::new();
    // A clone made before the setter shares the state, built from `layer`'s configuration.
    let earlier = layer.clone();
    let layer = layer.max_models(1);
    let first = layer.layer(empty());
    let second = earlier.layer(empty());
    first.oneshot(request(Some("m-1"))).await.unwrap();
    second.oneshot(request(Some("m-2"))).await.unwrap();
    // A setter after the state exists changes nothing of it.
    let late = layer.max_models(100).layer(empty());
    late.oneshot(request(Some("m-3"))).await.unwrap();
    // Another `new` has labels of its own.
    let other = MetricsLayer::new().max_models(1).layer(empty());
    other.oneshot(request(Some("m-4"))).await.unwrap();

    let m = probe.take();
    assert_eq!(
        m.label_values(names::REQUESTS, "model"),
        ["m-1", "m-4", "other"]
    );
    assert_eq!(m.counter(names::REQUESTS, &[("model", "other")]), 2);
}

#[tokio::test]
async fn non_openai_bodies_pass_untouched() {
    let recorder = DebuggingRecorder::new();
    let probe = Probe::new(&recorder);
    let _guard = metrics::set_default_local_recorder(&recorder);

    let svc = MetricsLayer::new().layer(service_fn(|_req: Request<String>| async {
        Ok::<_, Infallible>(
            Response::builder()
                .header("content-type", "text/plain")
                .body(Full::new(Bytes::from_static(
                    br#"{"usage":{"prompt_tokens":1}}"#,
                )))
                .unwrap(),
        )
    }));
    let res = svc.oneshot(request(None)).await.unwrap();
    res.into_body().collect().await.unwrap();

    let m = probe.take();
    assert_eq!(m.counter(names::REQUESTS, &[("model", "unknown")]), 1);
    assert_eq!(m.counter(names::TOKENS, &[]), 0);
}

#[cfg(feature = "prometheus")]
#[tokio::test]
async fn prometheus_latency_metrics_are_histograms() {
    let recorder = crate::prometheus::builder().unwrap().build_recorder();
    let handle = recorder.handle();
    let _guard = metrics::set_default_local_recorder(&recorder);
    crate::describe();

    let svc = MetricsLayer::new().layer(service_fn(|_req: Request<String>| async {
        Ok::<_, BoxError>(json(ANSWER))
    }));
    let res = svc.oneshot(request(None)).await.unwrap();
    res.into_body().collect().await.unwrap();

    let text = handle.render();
    assert!(
        text.contains("# TYPE holysheep_request_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains("holysheep_request_duration_seconds_bucket{"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE holysheep_time_to_first_byte_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE holysheep_cost_microusd_total counter"),
        "{text}"
    );
    assert!(
        text.contains("holysheep_cost_microusd_total{model=\"gpt-4.1\",tenant=\"none\"} 12000"),
        "{text}"
    );
    assert!(text.contains("# HELP holysheep_requests_total"), "{text}");
}

/// A chat answer with prompt-cache and reasoning details.
const DETAILED: &str = r#"{"model":"gpt-4.1","choices":[],"usage":{"prompt_tokens":1000000,"completion_tokens":1000000,
    "prompt_tokens_details":{"cached_tokens":600000},"completion_tokens_details":{"reasoning_tokens":250000}}}"#;

#[tokio::test]
async fn cached_tokens_are_priced_at_the_cached_rate_and_counted_once() {
    let recorder = DebuggingRecorder::new();
    let probe = Probe::new(&recorder);
    let _guard = metrics::set_default_local_recorder(&recorder);

    let prices = holysheep_core::price::PriceTable::empty().with_price(
        "gpt-4.1",
        holysheep_core::price::ModelPrice::new(2.0, 8.0)
            .cached_input(0.5)
            .reasoning(10.0),
    );
    let svc =
        MetricsLayer::new()
            .price_table(prices)
            .layer(service_fn(|_req: Request<String>| async {
                Ok::<_, BoxError>(json(DETAILED))
            }));
    let res = svc.oneshot(request(None)).await.unwrap();
    res.into_body().collect().await.unwrap();

    let m = probe.take();
    // 0.4 M × $2 + 0.6 M × $0.5 + 0.75 M × $8 + 0.25 M × $10 = $9.60
    assert_eq!(m.counter(names::COST, &[("model", "gpt-4.1")]), 9_600_000);
    // The details are parts of the totals, never added to them.
    assert_eq!(m.counter(names::TOKENS, &[("kind", "prompt")]), 1_000_000);
    assert_eq!(
        m.counter(names::TOKENS, &[("kind", "completion")]),
        1_000_000
    );
    assert_eq!(
        m.counter(names::CACHED_PROMPT_TOKENS, &[("cache", "miss")]),
        600_000
    );
    assert_eq!(
        m.counter(names::REASONING_TOKENS, &[("cache", "miss")]),
        250_000
    );
}

#[tokio::test]
async fn embeddings_are_priced() {
    let recorder = DebuggingRecorder::new();
    let probe = Probe::new(&recorder);
    let _guard = metrics::set_default_local_recorder(&recorder);

    let prices = holysheep_core::price::PriceTable::default().with_price(
        "text-embedding-3-small",
        holysheep_core::price::ModelPrice::new(0.02, 0.0),
    );
    let layer = MetricsLayer::new()
        .price_table(prices)
        .max_body_capture(4096);
    // One small answer, and a batch far past the capture limit (usage comes last).
    let mut big = String::from(r#"{"object":"list","data":["#);
    for i in 0..500 {
        big.push_str(&format!(
            r#"{{"object":"embedding","index":{i},"embedding":[0.25,0.5]}},"#
        ));
    }
    big.push_str(r#"{"object":"embedding","index":500,"embedding":[1.0]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":50000000,"total_tokens":50000000}}"#);
    for body in [
        r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":50000000,"total_tokens":50000000}}"#.to_owned(),
        big,
    ] {
        let svc = layer.layer(service_fn(move |_req: Request<String>| {
            let body = body.clone();
            async move { Ok::<_, BoxError>(json(&body)) }
        }));
        let mut req = request(Some("text-embedding-3-small"));
        *req.uri_mut() = "/v1/embeddings".parse().unwrap();
        let res = svc.oneshot(req).await.unwrap();
        res.into_body().collect().await.unwrap();
    }
    let m = probe.take();
    // 50 M tokens at $0.02 per million: $1, twice.
    assert_eq!(
        m.counter(names::COST, &[("model", "text-embedding-3-small")]),
        2_000_000
    );
    assert_eq!(m.counter(names::TOKENS, &[("kind", "prompt")]), 100_000_000);
}

#[tokio::test]
async fn cost_and_savings_per_tenant_split_by_how_the_cache_saved() {
    let recorder = DebuggingRecorder::new();
    let probe = Probe::new(&recorder);
    let _guard = metrics::set_default_local_recorder(&recorder);

    let layer = MetricsLayer::new().max_tenants(2);
    let cases: [(Option<&str>, Option<CacheOutcome>, bool); 7] = [
        (Some("acme"), Some(CacheOutcome::Miss), false),
        (Some("acme"), Some(CacheOutcome::Hit), false),
        (Some("acme"), Some(CacheOutcome::Hit), true),
        (Some("globex"), Some(CacheOutcome::Coalesced), false),
        (Some("initech"), None, false),
        (None, Some(CacheOutcome::Bypass), false),
        (Some("globex"), Some(CacheOutcome::Hit), false),
    ];
    for (tenant, outcome, semantic) in cases {
        let svc = layer.layer(service_fn(move |_req: Request<String>| async move {
            let mut res = json(ANSWER);
            if let Some(outcome) = outcome {
                res.extensions_mut().insert(outcome);
            }
            if semantic {
                res.extensions_mut()
                    .insert(SemanticHit { similarity: 0.97 });
            }
            Ok::<_, BoxError>(res)
        }));
        let mut req = request(None);
        if let Some(tenant) = tenant {
            req.extensions_mut().insert(Namespace(Arc::from(tenant)));
        }
        let res = svc.oneshot(req).await.unwrap();
        res.into_body().collect().await.unwrap();
    }
    let m = probe.take();
    let cost = |tenant| m.counter(names::COST, &[("model", "gpt-4.1"), ("tenant", tenant)]);
    let saved = |tenant, via| {
        m.counter(
            names::COST_SAVED,
            &[("model", "gpt-4.1"), ("tenant", tenant), ("via", via)],
        )
    };
    // $0.012 per answer.
    assert_eq!(cost("acme"), 12_000);
    assert_eq!(saved("acme", "exact"), 12_000);
    assert_eq!(saved("acme", "semantic"), 12_000);
    assert_eq!(saved("globex", "coalesced"), 12_000);
    assert_eq!(saved("globex", "exact"), 12_000);
    // Past the bound of two tenants; and a request without one.
    assert_eq!(cost("other"), 12_000);
    assert_eq!(cost("none"), 12_000);
    assert_eq!(
        m.label_values(names::COST, "tenant"),
        vec!["acme", "none", "other"]
    );
}

#[tokio::test(start_paused = true)]
async fn genai_metric_names_are_opt_in() {
    let recorder = DebuggingRecorder::new();
    let probe = Probe::new(&recorder);
    let _guard = metrics::set_default_local_recorder(&recorder);

    let answer = |_req: Request<String>| async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok::<_, BoxError>(json(ANSWER))
    };
    let chat = || {
        let mut req = request(Some("gpt-4.1"));
        *req.uri_mut() = "/v1/chat/completions".parse().unwrap();
        req
    };
    let res = MetricsLayer::new()
        .layer(service_fn(answer))
        .oneshot(chat())
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    assert!(
        probe
            .take()
            .histogram(names::GENAI_OPERATION_DURATION, &[])
            .is_empty()
    );

    let res = MetricsLayer::new()
        .genai_metrics(true)
        .layer(service_fn(answer))
        .oneshot(chat())
        .await
        .unwrap();
    res.into_body().collect().await.unwrap();
    let m = probe.take();
    let want = [
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.request.model", "gpt-4.1"),
    ];
    assert_eq!(
        m.histogram(names::GENAI_OPERATION_DURATION, &want),
        vec![0.02]
    );
    let tokens = |kind| {
        m.histogram(
            names::GENAI_TOKEN_USAGE,
            &[
                ("gen_ai.token.type", kind),
                ("gen_ai.operation.name", "chat"),
            ],
        )
    };
    assert_eq!(tokens("input"), vec![1000.0]);
    assert_eq!(tokens("output"), vec![500.0]);
    // Not a stream: no time to first chunk.
    assert!(
        m.histogram(names::GENAI_TIME_TO_FIRST_CHUNK, &[])
            .is_empty()
    );
}

/// One span a subscriber saw: name, fields as text, parent name.
type SeenSpan = (String, BTreeMap<String, String>, Option<String>);

/// Every span a subscriber saw.
#[derive(Clone, Default)]
struct SpanLog(Arc<std::sync::Mutex<Vec<SeenSpan>>>);

struct FieldText<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for FieldText<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S> tracing_subscriber::Layer<S> for SpanLog
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut FieldText(&mut fields));
        let span = ctx.span(id).expect("a new span");
        let parent = span.parent().map(|p| p.name().to_owned());
        let mut log = self.0.lock().unwrap();
        fields.insert("#".into(), log.len().to_string());
        span.extensions_mut().insert(log.len());
        log.push((attrs.metadata().name().to_owned(), fields, parent));
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let span = ctx.span(id).expect("a known span");
        let index = *span.extensions().get::<usize>().expect("indexed");
        values.record(&mut FieldText(&mut self.0.lock().unwrap()[index].1));
    }
}

#[tokio::test]
async fn a_request_span_with_genai_fields_and_a_numbered_child_per_attempt() {
    use tracing_subscriber::layer::SubscriberExt;

    let log = SpanLog::default();
    let subscriber = tracing_subscriber::registry().with(log.clone());
    let _default = tracing::subscriber::set_default(subscriber);

    // The scenario runs twice. tracing caches each call site's interest process-wide, and another test's thread that
    // registers a call site while this subscriber is being set can leave it cached as "never"
    // for it. The first run registers every call site the scenario uses, the rebuild
    // recomputes their interest with this subscriber in place, and the second run is checked.
    let scenario = || async {
        // Two attempts, as a retry layer makes them: the first answers 503, the second the answer.
        let attempts = crate::AttemptTraceLayer::new()
            .server("api.holysheep.ai", Some(443))
            .layer(service_fn(|req: Request<String>| async move {
                let first = req.headers().get("x-first").is_some();
                let mut res = if first {
                    json(r#"{"error":{}}"#)
                } else {
                    json(DETAILED)
                };
                if first {
                    *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                }
                Ok::<_, BoxError>(res)
            }));
        let retrying = service_fn(move |req: Request<String>| {
            let attempts = attempts.clone();
            async move {
                let mut first = req.clone();
                first.headers_mut().insert("x-first", "1".parse().unwrap());
                let failed = attempts.clone().oneshot(first).await?;
                failed.into_body().collect().await?;
                let mut res = attempts.oneshot(req).await?;
                res.extensions_mut().insert(Attempts(2));
                res.extensions_mut().insert(CacheOutcome::Miss);
                Ok::<_, BoxError>(res)
            }
        });
        let svc = MetricsLayer::new()
            .server("api.holysheep.ai", Some(443))
            .layer(retrying);
        let mut req = request(Some("gpt-4.1"));
        *req.uri_mut() = "/v1/chat/completions".parse().unwrap();
        req.body_mut().push_str("a secret prompt");
        req.extensions_mut().insert(Namespace(Arc::from("acme")));
        let res = svc.oneshot(req).await.unwrap();
        res.into_body().collect().await.unwrap();
    };
    scenario().await;
    tracing::callsite::rebuild_interest_cache();
    log.0.lock().unwrap().clear();
    scenario().await;

    let spans = log.0.lock().unwrap().clone();
    let (name, f, parent) = &spans[0];
    assert_eq!((name.as_str(), parent), ("gen_ai", &None));
    for (key, want) in [
        ("otel.name", "chat gpt-4.1"),
        ("otel.kind", "client"),
        ("gen_ai.operation.name", "chat"),
        ("gen_ai.request.model", "gpt-4.1"),
        ("gen_ai.response.model", "gpt-4.1"),
        ("gen_ai.usage.input_tokens", "1000000"),
        ("gen_ai.usage.output_tokens", "1000000"),
        ("gen_ai.usage.cache_read.input_tokens", "600000"),
        ("holysheep.usage.reasoning_tokens", "250000"),
        ("server.address", "api.holysheep.ai"),
        ("server.port", "443"),
        ("http.response.status_code", "200"),
        ("holysheep.tenant", "acme"),
        ("holysheep.cache", "miss"),
        ("holysheep.attempts", "2"),
        ("holysheep.outcome", "completed"),
    ] {
        assert_eq!(f.get(key).map(String::as_str), Some(want), "{key}: {f:?}");
    }
    assert!(!f.contains_key("error.type"), "{f:?}");
    let attempt_spans: Vec<_> = spans.iter().filter(|(n, ..)| n == "upstream").collect();
    assert_eq!(attempt_spans.len(), 2);
    for (i, (_, f, parent)) in attempt_spans.iter().enumerate() {
        assert_eq!(parent.as_deref(), Some("gen_ai"));
        assert_eq!(f["holysheep.attempt"], (i + 1).to_string());
        assert_eq!(f["server.address"], "api.holysheep.ai");
        assert_eq!(f["url.path"], "/v1/chat/completions");
    }
    assert_eq!(attempt_spans[0].1["http.response.status_code"], "503");
    assert_eq!(attempt_spans[0].1["error.type"], "503");
    assert_eq!(attempt_spans[1].1["http.request.resend_count"], "1");
    assert!(!attempt_spans[0].1.contains_key("http.request.resend_count"));
    // No prompt or answer text in any span.
    for (_, f, _) in &spans {
        assert!(f.values().all(|v| !v.contains("secret prompt")), "{f:?}");
    }
}
