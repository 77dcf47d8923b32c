//! `MetricsLayer` above the layers that fail on their own, with a real Prometheus recorder:
//! a pool limit's shed and a retry deadline are counted under their own class with no setup,
//! as `/metrics` shows them.
#![cfg(all(feature = "pool-limit", feature = "retry", feature = "metrics"))]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use holysheep_core::BoxError;
use holysheep_core::signal::RequestModel;
use holysheep_metrics::MetricsLayer;
use holysheep_metrics::prometheus;
use holysheep_pool_limit::PoolLimitLayer;
use holysheep_retry::RetryLayer;
use http::{Request, Response};
use http_body_util::Full;
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// Runs `test` on a current-thread runtime with a Prometheus recorder of its own (the layers
/// record on this thread), and returns what `/metrics` would show.
fn with_prometheus<F: Future<Output = ()>>(test: impl FnOnce() -> F) -> String {
    let recorder = prometheus::builder()
        .expect("valid buckets")
        .build_recorder();
    let handle = recorder.handle();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    metrics::with_local_recorder(&recorder, || runtime.block_on(test()));
    handle.render()
}

/// The value of the one series of `name` whose labels include every one of `labels`.
fn value(text: &str, name: &str, labels: &[&str]) -> Option<u64> {
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

fn request() -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(Bytes::from_static(b"{}")));
    req.extensions_mut()
        .insert(RequestModel(Arc::from("gpt-4.1")));
    req
}

fn answer() -> Response<Full<Bytes>> {
    Response::new(Full::new(Bytes::from_static(b"{}")))
}

#[test]
fn a_shed_is_counted_as_shed_and_overload_by_default() {
    let text = with_prometheus(|| async {
        // No registration of any error type: the shed is known by the default classifier.
        let svc = ServiceBuilder::new()
            .layer(MetricsLayer::new())
            .layer(PoolLimitLayer::new(1, 1).queue_timeout(Duration::ZERO))
            .service(service_fn(|_req: Request<Full<Bytes>>| async {
                Ok::<_, BoxError>(answer())
            }));
        // The first answer's unread body holds the only slot.
        let held = svc.clone().oneshot(request()).await.expect("a free slot");
        for _ in 0..2 {
            let err = svc.clone().oneshot(request()).await.unwrap_err();
            assert!(holysheep_pool_limit::is_overloaded(&*err), "{err}");
        }
        drop(held);
    });

    assert_eq!(
        value(&text, "holysheep_shed_total", &["model=\"gpt-4.1\""]),
        Some(2),
        "{text}"
    );
    assert_eq!(
        value(&text, "holysheep_errors_total", &["class=\"overload\""]),
        Some(2),
        "{text}"
    );
    assert_eq!(
        value(&text, "holysheep_errors_total", &["class=\"other\""]),
        None,
        "{text}"
    );
    assert_eq!(
        value(&text, "holysheep_requests_total", &["status=\"error\""]),
        Some(2),
        "{text}"
    );
}

#[test]
fn a_passed_retry_deadline_is_counted_as_deadline() {
    let text = with_prometheus(|| async {
        let svc = ServiceBuilder::new()
            .layer(MetricsLayer::new())
            .layer(RetryLayer::new().deadline(Duration::from_millis(20)))
            .service(service_fn(|_req: Request<Full<Bytes>>| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok::<_, BoxError>(answer())
            }));
        let err = svc.oneshot(request()).await.unwrap_err();
        assert!(holysheep_retry::is_deadline(&*err), "{err}");
    });

    assert_eq!(
        value(&text, "holysheep_errors_total", &["class=\"deadline\""]),
        Some(1),
        "{text}"
    );
    assert_eq!(value(&text, "holysheep_shed_total", &[]), None, "{text}");
}

/// Reads a whole body into bytes.
#[cfg(feature = "stack")]
async fn read<B>(res: Response<B>) -> Bytes
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    use http_body_util::BodyExt;
    res.into_body()
        .collect()
        .await
        .expect("a whole body")
        .to_bytes()
}

/// `expected` with the mock's answer id and time replaced by those of `got` (each answer has
/// its own), so the rest can be compared byte for byte.
#[cfg(feature = "stack")]
fn renamed(expected: &[u8], got: &[u8]) -> Vec<u8> {
    let first = |body: &[u8]| holysheep_testkit::sse_chunks(body).0.remove(0);
    let (want, have) = (first(expected), first(got));
    String::from_utf8_lossy(expected)
        .replace(want["id"].as_str().unwrap(), have["id"].as_str().unwrap())
        .replace(
            &format!("\"created\":{}", want["created"]),
            &format!("\"created\":{}", have["created"]),
        )
        .into_bytes()
}

#[cfg(feature = "stack")]
#[test]
fn a_stream_without_include_usage_is_counted_and_reaches_the_client_unchanged() {
    use holysheep::Stack;
    use holysheep_mock::MockConfig;
    use holysheep_testkit::{
        UPSTREAM_KEY, chat_body, chat_request, expected_usage, sse_chunks, start_mock,
        upstream_builder, upstream_client,
    };

    let mut body = chat_body(
        "gpt-4.1",
        "count the tokens of a stream nobody asked usage for",
    );
    body["stream"] = serde_json::Value::Bool(true);
    let usage = expected_usage(&body);
    let text = with_prometheus(|| async {
        let mock = start_mock(MockConfig::new().api_key(UPSTREAM_KEY).stream_chunks(4)).await;
        // What the upstream sends a client that did not ask, with nothing in between.
        let direct = read(
            upstream_client(&mock)
                .oneshot(chat_request(&body))
                .await
                .unwrap(),
        )
        .await;
        let (chunks, done) = sse_chunks(&direct);
        assert!(
            done && chunks.iter().all(|c| c.get("usage").is_none()),
            "{direct:?}"
        );

        let stack = Stack::builder()
            .client(upstream_builder(&mock))
            .build()
            .unwrap();
        for cache in ["MISS", "HIT"] {
            let res = stack.clone().oneshot(chat_request(&body)).await.unwrap();
            assert_eq!(res.headers()["x-cache"], cache);
            let got = read(res).await;
            assert_eq!(got, renamed(&direct, &got), "byte for byte, {cache}");
            // The entry is written by a task once the stream has ended.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A client that asks gets the usage chunk, from the same entry.
        let mut asking = body.clone();
        asking["stream_options"] = serde_json::json!({"include_usage": true});
        let res = stack.clone().oneshot(chat_request(&asking)).await.unwrap();
        assert_eq!(res.headers()["x-cache"], "HIT");
        let (chunks, _) = sse_chunks(&read(res).await);
        let last = chunks.last().expect("chunks");
        assert_eq!(last["usage"]["prompt_tokens"], usage.prompt_tokens);
        mock.shutdown().await;
    });

    let tokens = |kind: &str, cache: &str| {
        value(
            &text,
            "holysheep_tokens_total",
            &[&format!("kind=\"{kind}\""), &format!("cache=\"{cache}\"")],
        )
    };
    assert_eq!(
        tokens("prompt", "miss"),
        Some(usage.prompt_tokens),
        "{text}"
    );
    assert_eq!(
        tokens("completion", "miss"),
        Some(usage.completion_tokens),
        "{text}"
    );
    assert_eq!(
        tokens("prompt", "hit"),
        Some(2 * usage.prompt_tokens),
        "{text}"
    );
    // GPT-4.1 at $8 per million tokens, in micro-dollars.
    let micro = 8 * (usage.prompt_tokens + usage.completion_tokens);
    assert_eq!(
        value(
            &text,
            "holysheep_cost_microusd_total",
            &["model=\"gpt-4.1\"", "tenant=\"none\""]
        ),
        Some(micro),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "holysheep_cost_saved_microusd_total",
            &["model=\"gpt-4.1\"", "via=\"exact\""]
        ),
        Some(2 * micro),
        "{text}"
    );
}
