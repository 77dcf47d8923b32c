use std::collections::VecDeque;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty, Full};
use tokio::time::Instant;
use tower::{BoxError, Service, ServiceExt, service_fn};
use tower_layer::Layer;
use tower_test::mock;

use crate::{Overloaded, PoolLimitLayer, is_overloaded};
use holysheep_core::error::find_in_chain;

type Res = Response<Full<Bytes>>;

fn upstream() -> impl Service<
    Request<()>,
    Response = Res,
    Error = Infallible,
    Future = impl Future<Output = Result<Res, Infallible>> + Send,
> + Clone
+ Send
+ Sync {
    service_fn(|_req: Request<()>| async {
        Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
    })
}

fn to(host: &str) -> Request<()> {
    Request::builder()
        .uri(format!("http://{host}/v1/chat/completions"))
        .body(())
        .unwrap()
}

fn shed_of(err: &BoxError) -> Overloaded {
    *find_in_chain::<Overloaded>(&**err).expect("an Overloaded shed")
}

#[tokio::test(start_paused = true)]
async fn the_slot_is_held_until_the_body_ends() {
    let layer = PoolLimitLayer::new(10, 5);
    let handle = layer.handle();
    let svc = layer.layer(upstream());

    let res = svc.clone().oneshot(to("a")).await.unwrap();
    assert_eq!(handle.in_flight(), 1);
    assert!(res.body().holds_permit());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "ok");
    assert_eq!(handle.in_flight(), 0);

    let res = svc.oneshot(to("a")).await.unwrap();
    assert_eq!(handle.in_flight(), 1);
    drop(res);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_empty_body_frees_its_slot_at_once() {
    let layer = PoolLimitLayer::new(1, 1);
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
    }));
    let res = svc.oneshot(to("a")).await.unwrap();
    assert!(!res.body().holds_permit());
    assert_eq!(handle.in_flight(), 0);
}

/// A body that yields the given chunks, then an optional error.
struct Chunks {
    chunks: VecDeque<&'static str>,
    fail: bool,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Poll::Ready(match self.chunks.pop_front() {
            Some(chunk) => Some(Ok(Frame::data(Bytes::from_static(chunk.as_bytes())))),
            None if self.fail => {
                self.fail = false;
                Some(Err(io::ErrorKind::ConnectionReset.into()))
            }
            None => None,
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_stream_holds_its_slot_chunk_by_chunk() {
    for fail in [false, true] {
        let layer = PoolLimitLayer::new(10, 5);
        let handle = layer.handle();
        let svc = layer.layer(service_fn(move |_req: Request<()>| async move {
            Ok::<_, Infallible>(Response::new(Chunks {
                chunks: ["data: 1\n\n", "data: 2\n\n"].into(),
                fail,
            }))
        }));
        let mut body = svc.oneshot(to("a")).await.unwrap().into_body();
        assert!(body.frame().await.unwrap().is_ok());
        assert!(body.frame().await.unwrap().is_ok());
        assert_eq!(handle.in_flight(), 1, "still streaming");
        let last = body.frame().await;
        assert_eq!(last.is_some(), fail);
        assert!(!body.holds_permit());
        assert_eq!(handle.in_flight(), 0);
    }
}

#[tokio::test(start_paused = true)]
async fn readiness_reflects_the_total_cap() {
    let (mock, mut handle) = mock::pair::<Request<()>, Res>();
    let layer = PoolLimitLayer::new(2, 2);
    let counters = layer.handle();
    let mut svc = layer.layer(mock);
    handle.allow(10);

    let mut first = svc.clone();
    first.ready().await.unwrap();
    let f1 = first.call(to("a"));
    let mut second = svc.clone();
    second.ready().await.unwrap();
    let f2 = second.call(to("a"));

    // The pool is full: not ready, and waiting in the queue.
    assert!(svc.ready().now_or_never().is_none());
    assert_eq!(counters.queued(), 1);

    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new(Full::new(Bytes::from_static(b"chunk"))));
    let (_, send2) = handle.next_request().await.unwrap();
    let res1 = f1.await.unwrap();
    assert!(
        svc.ready().now_or_never().is_none(),
        "the body still holds the slot"
    );
    drop(res1);
    svc.ready().await.unwrap();
    assert_eq!(counters.queued(), 0);
    drop(send2);
    drop(f2);
}

#[tokio::test(start_paused = true)]
async fn readiness_wait_is_bounded_and_then_sheds() {
    let layer = PoolLimitLayer::new(1, 1).queue_timeout(Duration::from_secs(2));
    let handle = layer.handle();
    let mut svc = layer.layer(upstream());
    let held = svc.clone().oneshot(to("a")).await.unwrap();

    let start = Instant::now();
    svc.ready().await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    let err = svc.call(to("a")).await.unwrap_err();
    assert!(!shed_of(&err).is_queue_full());
    assert_eq!(handle.shed_total(), 1);
    assert_eq!(handle.queued(), 0);
    drop(held);
    // The shed does not stick: the next call is served.
    svc.ready().await.unwrap();
    assert!(svc.call(to("a")).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_call_without_readiness_queues_then_runs() {
    let layer = PoolLimitLayer::new(1, 1);
    let handle = layer.handle();
    let mut svc = layer.layer(upstream());
    let held = svc.call(to("a")).await.unwrap();
    assert_eq!(handle.in_flight(), 1);

    let waiter = tokio::spawn(svc.call(to("a")));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiter.is_finished());
    assert_eq!(handle.queued(), 1);
    drop(held);
    let res = waiter.await.unwrap().unwrap();
    assert_eq!(handle.in_flight(), 1);
    assert_eq!(handle.queued(), 0);
    drop(res);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn queue_timeout_and_depth_shed() {
    let layer = PoolLimitLayer::new(1, 1)
        .queue_timeout(Duration::from_secs(3))
        .max_queue(1)
        .shed_retry_after(Duration::from_secs(7));
    let handle = layer.handle();
    let mut svc = layer.layer(upstream());
    let _held = svc.call(to("a")).await.unwrap();

    let start = Instant::now();
    let queued = tokio::spawn(svc.call(to("a")));
    tokio::task::yield_now().await;
    assert_eq!(handle.queued(), 1);

    // The queue is at its bound: shed at once.
    let err = svc.call(to("a")).await.unwrap_err();
    assert!(is_overloaded(&*err));
    let shed = shed_of(&err);
    assert!(shed.is_queue_full());
    assert_eq!(shed.retry_after(), Duration::from_secs(7));
    assert_eq!(start.elapsed(), Duration::ZERO);

    // The queued one gives up after the queue timeout.
    let err = queued.await.unwrap().unwrap_err();
    assert!(!shed_of(&err).is_queue_full());
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(handle.shed_total(), 2);
    assert_eq!(handle.queued(), 0);
}

#[tokio::test(start_paused = true)]
async fn readiness_and_host_waits_share_one_queue_timeout() {
    // Two caps to wait for: the total one in `poll_ready`, the host one in `call`. The wait for
    // both together is bounded by one queue timeout, not one each.
    let layer = PoolLimitLayer::new(2, 1).queue_timeout(Duration::from_secs(2));
    let handle = layer.handle();
    let mut svc = layer.layer(upstream());
    let host_a = svc.clone().oneshot(to("a")).await.unwrap();
    let host_b = svc.clone().oneshot(to("b")).await.unwrap();
    assert_eq!(handle.in_flight(), 2);

    let start = Instant::now();
    let release_b = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        drop(host_b);
    };
    let (ready, ()) = tokio::join!(svc.ready(), release_b);
    ready.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(1500),
        "waited for the total slot"
    );

    // Host "a" is still busy: the call waits only what is left of the timeout.
    let err = svc.call(to("a")).await.unwrap_err();
    assert!(!shed_of(&err).is_queue_full());
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(handle.in_flight(), 1);
    assert_eq!(handle.queued(), 0);
    drop(host_a);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_zero_queue_timeout_sheds_without_waiting() {
    let mut svc = PoolLimitLayer::new(1, 1)
        .queue_timeout(Duration::ZERO)
        .layer(upstream());
    let _held = svc.call(to("a")).await.unwrap();
    let err = svc.call(to("a")).await.unwrap_err();
    assert!(is_overloaded(&*err));
}

#[tokio::test(start_paused = true)]
async fn dropping_a_queued_call_leaves_the_queue() {
    let layer = PoolLimitLayer::new(1, 1);
    let handle = layer.handle();
    let mut svc = layer.layer(upstream());
    let _held = svc.call(to("a")).await.unwrap();
    let mut queued = Box::pin(svc.call(to("a")));
    assert!(queued.as_mut().now_or_never().is_none());
    assert_eq!(handle.queued(), 1);
    drop(queued);
    assert_eq!(handle.queued(), 0);
}

#[tokio::test(start_paused = true)]
async fn one_layer_is_one_pool_built_from_its_configuration() {
    let layer = PoolLimitLayer::new(1, 1);
    // A clone made before the setters shares the pool, which is built from the configuration
    // of whichever builds a service or takes a handle first: here `layer`'s.
    let earlier = layer.clone();
    let layer = layer
        .queue_timeout(Duration::ZERO)
        .shed_retry_after(Duration::from_secs(9));
    let mut first = layer.layer(upstream());
    let handle = earlier.handle();
    let mut second = earlier.layer(upstream());

    let _held = first.call(to("a")).await.unwrap();
    let err = second.call(to("a")).await.unwrap_err();
    assert_eq!(shed_of(&err).retry_after(), Duration::from_secs(9));
    assert_eq!((handle.in_flight(), handle.shed_total()), (1, 1));
    assert_eq!(layer.handle().shed_total(), 1, "every handle sees one pool");

    // A setter after the pool exists changes nothing of it.
    let late = layer.shed_retry_after(Duration::from_secs(1));
    let err = late.layer(upstream()).call(to("a")).await.unwrap_err();
    assert_eq!(shed_of(&err).retry_after(), Duration::from_secs(9));
    assert_eq!(handle.shed_total(), 2);

    // Another `new` is another pool.
    let other = PoolLimitLayer::new(1, 1);
    let _also_held = other.layer(upstream()).call(to("a")).await.unwrap();
    assert_eq!((handle.in_flight(), other.handle().in_flight()), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn hosts_are_limited_separately() {
    let layer = PoolLimitLayer::new(10, 1).queue_timeout(Duration::from_secs(1));
    let handle = layer.handle();
    assert_eq!(handle.per_host_limit(), Some(1));
    let mut svc = layer.layer(upstream());
    let _a = svc.call(to("a.example")).await.unwrap();
    // Another host, and a relative request with a Host header, each have their own bucket.
    let _b = svc.call(to("b.example")).await.unwrap();
    let relative = Request::builder()
        .uri("/v1/models")
        .header("host", "c.example")
        .body(())
        .unwrap();
    let _c = svc.call(relative).await.unwrap();
    // The same host waits, then is shed.
    let err = svc.call(to("a.example")).await.unwrap_err();
    assert!(is_overloaded(&*err));
    assert_eq!(handle.in_flight(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_key_fn_chooses_the_bucket() {
    let layer = PoolLimitLayer::new(10, 1)
        .queue_timeout(Duration::ZERO)
        .key_fn(|parts| {
            parts
                .headers
                .get("x-tenant")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        });
    let mut svc = layer.layer(upstream());
    let tenant = |t: &str| Request::builder().header("x-tenant", t).body(()).unwrap();
    let _one = svc.call(tenant("one")).await.unwrap();
    let _two = svc.call(tenant("two")).await.unwrap();
    assert!(svc.call(tenant("one")).await.is_err());
    // No key: the default bucket.
    let _none = svc.call(Request::new(())).await.unwrap();
    assert!(svc.call(Request::new(())).await.is_err());
}

#[tokio::test]
async fn concurrency_never_exceeds_the_cap() {
    let now = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let (n, m) = (now.clone(), max.clone());
    let inner = service_fn(move |_req: Request<()>| {
        let (n, m) = (n.clone(), m.clone());
        async move {
            let current = n.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(current, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(2)).await;
            n.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        }
    });
    let layer = PoolLimitLayer::new(5, 3);
    let handle = layer.handle();
    let svc = layer.layer(inner);
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let svc = svc.clone();
            let host = if i % 2 == 0 { "a" } else { "b" };
            tokio::spawn(async move { svc.oneshot(to(host)).await.map(drop) })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let max = max.load(Ordering::SeqCst);
    assert!((1..=5).contains(&max), "{max}");
    assert_eq!(handle.in_flight(), 0);
    assert_eq!(handle.shed_total(), 0);
}

#[tokio::test]
async fn inner_errors_pass_through_and_free_the_slot() {
    let layer = PoolLimitLayer::new(1, 1);
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|_req: Request<()>| async {
        Err::<Res, _>(io::Error::from(io::ErrorKind::ConnectionRefused))
    }));
    let err = svc.oneshot(to("a")).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<io::Error>().unwrap().kind(),
        io::ErrorKind::ConnectionRefused
    );
    assert_eq!(handle.in_flight(), 0);
}

#[test]
fn services_and_futures_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>(_: &T) {}
    fn assert_send<T: Send>(_: &T) {}
    let svc = PoolLimitLayer::default().layer(upstream());
    assert_send_sync(&svc);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let fut = svc.clone().oneshot(to("a"));
    assert_send(&fut);
}

mod adaptive {
    use super::*;
    use crate::Aimd;

    /// An upstream whose answer the request chooses: `x-status`, `x-grpc-status`,
    /// `x-delay-ms` (before the head), `x-error` (a transport error instead of an answer).
    fn scripted() -> impl Service<
        Request<()>,
        Response = Res,
        Error = io::Error,
        Future = impl Future<Output = Result<Res, io::Error>> + Send,
    > + Clone
    + Send {
        service_fn(|req: Request<()>| async move {
            let header = |name: &str| {
                req.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            if let Some(ms) = header("x-delay-ms") {
                tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
            }
            if header("x-error").is_some() {
                return Err(io::ErrorKind::ConnectionReset.into());
            }
            let mut res = Response::builder();
            if let Some(status) = header("x-status") {
                res = res.status(status.parse::<u16>().unwrap());
            }
            if let Some(code) = header("x-grpc-status") {
                res = res.header("grpc-status", code);
            }
            Ok(res.body(Full::new(Bytes::from_static(b"x"))).unwrap())
        })
    }

    fn with(headers: &[(&str, &str)]) -> Request<()> {
        let mut req = Request::builder().uri("http://up/v1/chat/completions");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.body(()).unwrap()
    }

    fn status(code: &str) -> Request<()> {
        with(&[("x-status", code)])
    }

    fn layer(max: usize, aimd: Aimd) -> PoolLimitLayer {
        PoolLimitLayer::new(max, max)
            .queue_timeout(Duration::ZERO)
            .adaptive(aimd)
    }

    /// Holds `n` slots with unread bodies, then checks the next call is shed: the semaphore,
    /// not just the reported number, has exactly `n` slots.
    async fn assert_capacity<S>(svc: &S, n: usize)
    where
        S: Service<
                Request<()>,
                Response = Response<crate::PermitBody<Full<Bytes>>>,
                Error = BoxError,
            > + Clone,
    {
        let mut held = Vec::new();
        for _ in 0..n {
            held.push(
                svc.clone()
                    .oneshot(status("200"))
                    .await
                    .expect("a free slot"),
            );
        }
        let err = svc.clone().oneshot(status("200")).await.unwrap_err();
        assert!(is_overloaded(&*err), "capacity above {n}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_fixed_limit_is_reported_as_configured() {
        let handle = PoolLimitLayer::new(7, 3).handle();
        assert_eq!((handle.limit(), handle.max_limit()), (7, 7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_of_503s_shrinks_to_min_and_successes_grow_back_to_max() {
        let layer = layer(10, Aimd::default().min_limit(2));
        let handle = layer.handle();
        let svc = layer.layer(scripted());
        assert_eq!(handle.limit(), 10);

        let mut seen = vec![handle.limit()];
        for _ in 0..30 {
            let res = svc.clone().oneshot(status("503")).await.unwrap();
            assert_eq!(res.status(), 503);
            drop(res);
            seen.push(handle.limit());
        }
        assert_eq!(&seen[..5], &[10, 9, 8, 7, 6], "10% per failure, floored");
        assert!(seen.windows(2).all(|w| w[1] <= w[0]));
        assert_eq!(handle.limit(), 2, "down to the minimum, not below");
        assert_capacity(&svc, 2).await;

        let mut seen = vec![handle.limit()];
        for _ in 0..100 {
            drop(svc.clone().oneshot(status("200")).await.unwrap());
            seen.push(handle.limit());
        }
        assert!(seen.windows(2).all(|w| w[1] >= w[0]));
        // +1 per window of successes: about n answers to go from n to n + 1.
        let reached = |n| seen.iter().position(|&l| l == n).unwrap();
        for n in 3..10 {
            let window = reached(n + 1) - reached(n);
            assert!((n - 1..=n + 1).contains(&window), "{n}: {window}");
        }
        assert_eq!(
            handle.limit(),
            10,
            "back at the configured cap, never above"
        );
        assert_capacity(&svc, 10).await;
    }

    #[tokio::test(start_paused = true)]
    async fn overload_signals_decrease_and_other_answers_do_not() {
        let overloaded = [
            status("429"),
            status("500"),
            status("503"),
            status("504"),
            with(&[("x-error", "1")]),
            with(&[("x-grpc-status", "14")]),
            with(&[("x-grpc-status", "8")]),
            with(&[("x-grpc-status", "4")]),
        ];
        for req in overloaded {
            let layer = layer(10, Aimd::default());
            let handle = layer.handle();
            let what = format!("{:?}", req.headers());
            let _ = layer.layer(scripted()).oneshot(req).await;
            assert_eq!(handle.limit(), 9, "{what}");
        }
        let fine = [
            status("200"),
            status("400"),
            status("404"),
            // The upstream does not do this at all: a refusal, not a sign of load.
            status("501"),
            with(&[("x-grpc-status", "0")]),
            with(&[("x-grpc-status", "5")]),
            with(&[("x-grpc-status", "12")]),
        ];
        for req in fine {
            let layer = layer(10, Aimd::default());
            let handle = layer.handle();
            let what = format!("{:?}", req.headers());
            drop(layer.layer(scripted()).oneshot(req).await.unwrap());
            assert_eq!(handle.limit(), 10, "{what}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_congestion_event_decreases_once() {
        let layer = layer(10, Aimd::default());
        let handle = layer.handle();
        let svc = layer.layer(scripted());
        let burst: Vec<_> = (0..10)
            .map(|_| {
                let req = with(&[("x-status", "503"), ("x-delay-ms", "1000")]);
                tokio::spawn(svc.clone().oneshot(req))
            })
            .collect();
        for call in burst {
            drop(call.await.unwrap().unwrap());
        }
        assert_eq!(handle.limit(), 9, "ten failures of one burst, one decrease");
        drop(svc.oneshot(status("503")).await.unwrap());
        assert_eq!(handle.limit(), 8, "a later failure is a new event");
    }

    #[tokio::test(start_paused = true)]
    async fn a_latency_climb_shrinks_the_limit() {
        let layer = layer(10, Aimd::default());
        let handle = layer.handle();
        let svc = layer.layer(scripted());
        let call = |ms: &'static str| svc.clone().oneshot(with(&[("x-delay-ms", ms)]));
        for _ in 0..30 {
            drop(call("100").await.unwrap());
        }
        // One long answer among many short ones passes.
        drop(call("250").await.unwrap());
        assert_eq!(handle.limit(), 10);
        for _ in 0..5 {
            drop(call("1000").await.unwrap());
        }
        let lowered = handle.limit();
        assert!(lowered < 10, "{lowered}");
        // Latency back to normal: the limit climbs again.
        for _ in 0..60 {
            drop(call("100").await.unwrap());
        }
        assert!(handle.limit() > lowered);
    }

    #[tokio::test(start_paused = true)]
    async fn an_absolute_threshold_counts_slow_answers_and_cancelled_calls() {
        let aimd = Aimd::default()
            .latency_tolerance(None)
            .latency_threshold(Some(Duration::from_millis(500)));
        let layer = layer(10, aimd);
        let handle = layer.handle();
        let svc = layer.layer(scripted());
        drop(
            svc.clone()
                .oneshot(with(&[("x-delay-ms", "400")]))
                .await
                .unwrap(),
        );
        assert_eq!(handle.limit(), 10);
        drop(
            svc.clone()
                .oneshot(with(&[("x-delay-ms", "600")]))
                .await
                .unwrap(),
        );
        assert_eq!(handle.limit(), 9);

        // A caller that gives up early says nothing about the upstream; one that waited past
        // the threshold does.
        let slow = || svc.clone().oneshot(with(&[("x-delay-ms", "5000")]));
        let early = tokio::time::timeout(Duration::from_millis(300), slow()).await;
        assert!(early.is_err());
        assert_eq!(handle.limit(), 9);
        let late = tokio::time::timeout(Duration::from_secs(1), slow()).await;
        assert!(late.is_err());
        assert_eq!(handle.limit(), 8);
        assert_eq!(handle.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_never_exceeds_a_shrunk_limit_once_drained() {
        // Only statuses here: the latency step from instant answers to 100 ms is not the point.
        let layer = PoolLimitLayer::new(10, 10).adaptive(Aimd::default().latency_tolerance(None));
        let handle = layer.handle();
        let svc = layer.layer(scripted());
        let no_slot = || svc.clone().ready_oneshot().now_or_never().is_none();
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(svc.clone().oneshot(status("200")).await.unwrap());
        }
        // Failures whose bodies are still held: the limit falls below what is in flight.
        for _ in 0..3 {
            held.push(svc.clone().oneshot(status("503")).await.unwrap());
        }
        assert_eq!((handle.in_flight(), handle.limit()), (8, 7));
        // No slot until in-flight is under the new limit.
        assert!(no_slot());
        held.pop();
        assert_eq!(handle.in_flight(), 7);
        assert!(no_slot());
        held.pop();
        assert!(!no_slot());
        held.clear();

        // Drained: however many call at once, at most the limit of the moment runs.
        let now = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let (n, m, h) = (now.clone(), max.clone(), handle.clone());
        let counted = layer.layer(service_fn(move |_req: Request<()>| {
            let (n, m, h) = (n.clone(), m.clone(), h.clone());
            async move {
                let current = n.fetch_add(1, Ordering::SeqCst) + 1;
                assert!(current <= h.limit(), "{current} > {}", h.limit());
                m.fetch_max(current, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                n.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
            }
        }));
        let limit_before = handle.limit();
        let calls: Vec<_> = (0..30)
            .map(|_| tokio::spawn(counted.clone().oneshot(status("200"))))
            .collect();
        for call in calls {
            drop(call.await.unwrap().unwrap());
        }
        let max = max.load(Ordering::SeqCst);
        // The inner checked each entry against the limit of its moment; the pool was used.
        assert!((limit_before..=handle.limit()).contains(&max), "{max}");
        assert!(handle.limit() > limit_before, "the successes raised it");
        assert_eq!(handle.shed_total(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn slots_reserved_by_readiness_and_dropped_unused_do_not_outlive_a_shrink() {
        let aimd = Aimd::default().decrease_factor(0.5).latency_tolerance(None);
        let layer = layer(4, aimd);
        let handle = layer.handle();
        let svc = layer.layer(scripted());
        let mut reserved = Vec::new();
        for _ in 0..3 {
            let mut one = svc.clone();
            one.ready().await.unwrap();
            reserved.push(one);
        }
        let failed = svc.clone().oneshot(status("503")).await.unwrap();
        assert_eq!(handle.limit(), 2);
        // Slots come back outside any request, then one with a request.
        reserved.clear();
        drop(failed);
        assert_capacity(&svc, 2).await;
        assert_eq!(handle.limit(), 2);
    }
}

/// Issue 11, item 3: every answer carries its slot; a layer above learns from it whether a
/// request waits for a slot, and a slot it marks detached is counted, in the handle and in the
/// gauge, until the mark is dropped.
#[tokio::test(start_paused = true)]
async fn responses_carry_their_slot_and_detached_slots_are_counted() {
    use holysheep_core::signal::PoolSlot;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let gauge = || {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .find(|(key, ..)| key.key().name() == crate::DETACHED_SLOTS)
            .map(|(.., value)| value)
    };
    let layer = PoolLimitLayer::new(1, 1).queue_timeout(Duration::from_secs(3));
    let handle = layer.handle();
    let mut svc = layer.layer(upstream());
    let held = svc.call(to("a")).await.unwrap();
    let slot = held
        .extensions()
        .get::<PoolSlot>()
        .cloned()
        .expect("the response says which slot it holds");
    assert!(!slot.is_contended());

    // The debugging recorder's snapshot drains a gauge: each read is the change since the last.
    metrics::with_local_recorder(&recorder, || {
        let detached = slot.detach();
        assert_eq!(handle.detached(), 1);
        assert_eq!(gauge(), Some(DebugValue::Gauge(1.0.into())));
        drop(detached);
        assert_eq!(handle.detached(), 0);
        assert_eq!(gauge(), Some(DebugValue::Gauge((-1.0).into())));
    });

    // Two pools (two deployments behind a router) add up in the one gauge.
    let other = PoolLimitLayer::new(1, 1);
    let mut other_svc = other.layer(upstream());
    let other_held = other_svc.call(to("b")).await.unwrap();
    let other_slot = other_held.extensions().get::<PoolSlot>().cloned().unwrap();
    metrics::with_local_recorder(&recorder, || {
        let first = slot.detach();
        let second = other_slot.detach();
        assert_eq!(gauge(), Some(DebugValue::Gauge(2.0.into())));
        drop(first);
        assert_eq!(gauge(), Some(DebugValue::Gauge((-1.0).into())));
        drop(second);
    });
    drop(other_held);

    let queued = tokio::spawn(svc.call(to("a")));
    tokio::task::yield_now().await;
    assert!(slot.is_contended(), "a request waits for the slot");
    drop(held);
    queued.await.unwrap().unwrap();
    assert!(!slot.is_contended());
}
