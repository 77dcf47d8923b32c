//! `MetricsLayer`, `RetryLayer` and `PoolLimitLayer` around a tonic client `Channel`, against a
//! tonic-health server on loopback: the layers are plain tower middleware over
//! `http::Request<B>`, so a gRPC client composes them like any HTTP client.
//!
//! The stack is the recipe of the retry crate's docs: `BufferRequestLayer` collects the (small,
//! unary) request once into `Full<Bytes>` above the retry layer, which replays it, and a
//! `map_request` below rebuilds a tonic body per attempt; `GrpcClassify` retries trailers-only
//! `UNAVAILABLE` answers, which are HTTP 200s.
#![cfg(all(feature = "pool-limit", feature = "retry", feature = "metrics"))]

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use holysheep_core::signal::Attempts;
use holysheep_metrics::MetricsLayer;
use holysheep_pool_limit::PoolLimitLayer;
use holysheep_retry::{BufferRequestLayer, GrpcClassify, RetryLayer};
use http::{Request, Response};
use http_body_util::Full;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::body::Body as GrpcBody;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus as Wire;
use tonic_health::pb::health_client::HealthClient;
use tower::util::BoxCloneService;
use tower::{BoxError, Service, ServiceBuilder};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What the server side saw: calls, the most at once, and how many to fail first.
#[derive(Debug, Default)]
struct ServerLog {
    calls: AtomicUsize,
    now: AtomicUsize,
    max: AtomicUsize,
    fail_first: AtomicUsize,
    hold_ms: AtomicU64,
}

/// Server-side middleware: counts calls and concurrency, holds each call a little, and answers
/// the first `fail_first` calls with a trailers-only gRPC `UNAVAILABLE`.
#[derive(Clone)]
struct Observed<S> {
    inner: S,
    log: Arc<ServerLog>,
}

impl<S> Service<Request<GrpcBody>> for Observed<S>
where
    S: Service<Request<GrpcBody>, Response = Response<GrpcBody>> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response<GrpcBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<GrpcBody>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<GrpcBody>) -> Self::Future {
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        let log = Arc::clone(&self.log);
        Box::pin(async move {
            let call = log.calls.fetch_add(1, Ordering::SeqCst);
            let now = log.now.fetch_add(1, Ordering::SeqCst) + 1;
            log.max.fetch_max(now, Ordering::SeqCst);
            let hold = log.hold_ms.load(Ordering::SeqCst);
            if hold > 0 {
                tokio::time::sleep(Duration::from_millis(hold)).await;
            }
            let res = if call < log.fail_first.load(Ordering::SeqCst) {
                Ok(tonic::Status::unavailable("warming up").into_http())
            } else {
                ready.call(req).await
            };
            log.now.fetch_sub(1, Ordering::SeqCst);
            res
        })
    }
}

/// A tonic-health server on an ephemeral loopback port, stopped when dropped.
struct HealthServer {
    addr: SocketAddr,
    log: Arc<ServerLog>,
    reporter: tonic_health::server::HealthReporter,
    _stop: oneshot::Sender<()>,
}

async fn start_server() -> HealthServer {
    let (reporter, health) = tonic_health::server::health_reporter();
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let log = Arc::new(ServerLog::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let layer_log = Arc::clone(&log);
    let server = Server::builder()
        .layer(tower::layer::layer_fn(move |inner| Observed {
            inner,
            log: Arc::clone(&layer_log),
        }))
        .add_service(health)
        .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
            let _ = stopped.await;
        });
    tokio::spawn(server);
    HealthServer {
        addr,
        log,
        reporter,
        _stop: stop,
    }
}

async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid endpoint")
        .connect()
        .await
        .expect("connects over loopback")
}

type GrpcStack = BoxCloneService<Request<GrpcBody>, Response<GrpcBody>, BoxError>;

/// Metrics → buffer → Retry → PoolLimit → tonic `Channel`, boxed to one nameable type.
fn layered(channel: Channel, pool: PoolLimitLayer) -> GrpcStack {
    let svc = ServiceBuilder::new()
        .map_response(|res: Response<_>| res.map(GrpcBody::new))
        .layer(MetricsLayer::new())
        .layer(BufferRequestLayer::new(64 * 1024))
        .layer(
            RetryLayer::new()
                .classify(GrpcClassify)
                .max_retries(3)
                .backoff(Duration::from_millis(1), Duration::from_millis(10))
                .deadline(Duration::from_secs(10)),
        )
        .layer(pool)
        .map_request(|req: Request<Full<Bytes>>| req.map(GrpcBody::new))
        .service(channel);
    BoxCloneService::new(svc)
}

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}

#[tokio::test]
async fn the_health_check_answers_through_the_layers() {
    let server = start_server().await;
    server
        .reporter
        .set_service_status("holysheep.Upstream", ServingStatus::NotServing)
        .await;
    let pool = PoolLimitLayer::new(4, 4);
    let handle = pool.handle();
    let mut client = HealthClient::new(layered(channel(server.addr).await, pool));

    let res = client.check(check("")).await.expect("SERVING");
    assert_eq!(res.extensions().get::<Attempts>(), Some(&Attempts(1)));
    assert_eq!(res.into_inner().status(), Wire::Serving);
    let res = client
        .check(check("holysheep.Upstream"))
        .await
        .expect("an answer");
    assert_eq!(res.into_inner().status(), Wire::NotServing);
    // gRPC errors pass through as gRPC errors, not retried (NOT_FOUND is final).
    let err = client.check(check("no.such.Service")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    assert_eq!(server.log.calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        handle.in_flight(),
        0,
        "every slot is back once the answers are read"
    );
}

#[tokio::test]
async fn transient_unavailable_answers_are_retried() {
    let server = start_server().await;
    server.log.fail_first.store(2, Ordering::SeqCst);
    let mut client = HealthClient::new(layered(
        channel(server.addr).await,
        PoolLimitLayer::new(4, 4),
    ));

    let res = client
        .check(check(""))
        .await
        .expect("SERVING after retries");
    assert_eq!(res.extensions().get::<Attempts>(), Some(&Attempts(3)));
    assert_eq!(res.into_inner().status(), Wire::Serving);
    assert_eq!(
        server.log.calls.load(Ordering::SeqCst),
        3,
        "two failures, one success"
    );

    // More failures than retries: the caller sees the gRPC status of the last attempt.
    server.log.calls.store(0, Ordering::SeqCst);
    server.log.fail_first.store(10, Ordering::SeqCst);
    let err = client.check(check("")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(
        server.log.calls.load(Ordering::SeqCst),
        4,
        "one try and three retries"
    );
}

#[tokio::test]
async fn the_pool_limit_bounds_concurrent_calls() {
    let server = start_server().await;
    server.log.hold_ms.store(30, Ordering::SeqCst);
    let pool = PoolLimitLayer::new(2, 2).queue_timeout(Duration::from_secs(10));
    let handle = pool.handle();
    let client = HealthClient::new(layered(channel(server.addr).await, pool));

    // Ten calls at once, driven together on this task.
    let calls = (0..10).map(|_| {
        let mut client = client.clone();
        async move { client.check(check("")).await }
    });
    for res in futures_util::future::join_all(calls).await {
        assert_eq!(res.expect("SERVING").into_inner().status(), Wire::Serving);
    }
    let max = server.log.max.load(Ordering::SeqCst);
    assert!((1..=2).contains(&max), "{max} calls at once on the server");
    assert_eq!(server.log.calls.load(Ordering::SeqCst), 10);
    assert_eq!(handle.shed_total(), 0);
    assert_eq!(handle.in_flight(), 0);
}

/// A recorder that keeps counters by name and labels, for this test only.
#[derive(Default)]
struct Counters(Mutex<HashMap<String, Arc<AtomicU64>>>);

impl Counters {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        let map = self.0.lock().expect("not poisoned");
        map.iter()
            .filter(|(key, _)| {
                key.split('{').next() == Some(name)
                    && labels
                        .iter()
                        .all(|(k, v)| key.contains(&format!("{k}=\"{v}\"")))
            })
            .map(|(_, value)| value.load(Ordering::SeqCst))
            .sum()
    }
}

impl Recorder for Counters {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}=\"{}\"", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        let mut map = self.0.lock().expect("not poisoned");
        Counter::from_arc(Arc::clone(map.entry(name).or_default()))
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

// Current-thread runtime: the layers record on this thread, where the local recorder is set.
#[tokio::test(flavor = "current_thread")]
async fn metrics_count_the_grpc_calls_and_their_retries() {
    let counters = Counters::default();
    let _guard = metrics::set_default_local_recorder(&counters);
    let server = start_server().await;
    server.log.fail_first.store(1, Ordering::SeqCst);
    let mut client = HealthClient::new(layered(
        channel(server.addr).await,
        PoolLimitLayer::new(4, 4),
    ));

    for _ in 0..2 {
        let res = client.check(check("")).await.expect("SERVING");
        assert_eq!(res.into_inner().status(), Wire::Serving);
    }
    let completed = [("status", "2xx"), ("outcome", "completed")];
    assert_eq!(counters.get("holysheep_requests_total", &completed), 2);
    assert_eq!(counters.get("holysheep_requests_total", &[]), 2);
    // The first call needed a retry; the attempts counter saw three upstream calls.
    assert_eq!(counters.get("holysheep_upstream_attempts_total", &[]), 3);
    assert_eq!(counters.get("holysheep_retries_total", &[]), 1);
}
