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
