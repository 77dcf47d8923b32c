//! `CacheLayer` with readers that stop reading (issue 11, item 2) and callers that hang up on a
//! stream that never ends (issue 11, item 3), over `service_fn` upstreams that count what was
//! read from them.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use holysheep_cache::{CacheLayer, MemoryStore};
use holysheep_pool_limit::PoolLimitLayer;
use holysheep_testkit::{chat_request, stream_body, wait_until};
use http::{Request, Response};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use tower::{Layer, ServiceExt, service_fn};

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// One SSE event of about `size` bytes.
fn event(size: usize) -> Bytes {
    Bytes::from(format!("data: {}\n\n", "x".repeat(size.saturating_sub(8))))
}

/// A streamed answer of `chunks` events of 1 KiB, counting in `pulled` the bytes read from it.
fn counted(chunks: usize, pulled: &Arc<AtomicUsize>) -> Response<Body> {
    let pulled = Arc::clone(pulled);
    let frames = futures_util::stream::iter(0..chunks).map(move |_| {
        let chunk = event(1024);
        pulled.fetch_add(chunk.len(), Ordering::SeqCst);
        Ok::<_, Infallible>(Frame::data(chunk))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(StreamBody::new(frames).boxed_unsync())
        .expect("a valid response")
}

/// Waits until `pulled` stops growing (it is read in a task), and returns it.
async fn settled(pulled: &AtomicUsize) -> usize {
    let mut last = usize::MAX;
    loop {
        let now = pulled.load(Ordering::SeqCst);
        if now == last {
            return now;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

const READ_AHEAD: usize = 16 << 10;
const ENTRY: usize = 64 << 10;
const ANSWER_CHUNKS: usize = 4096;

/// A cache with small bounds over an upstream that answers `ANSWER_CHUNKS` KiB, counting in
/// `pulled` what was read from it.
fn bounded_cache(
    pulled: &Arc<AtomicUsize>,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<holysheep_cache::ResponseBody>,
    Error = holysheep_core::BoxError,
> + Clone {
    let pulled = Arc::clone(pulled);
    let upstream = service_fn(move |_req: Request<Full<Bytes>>| {
        let pulled = Arc::clone(&pulled);
        async move { Ok::<_, Infallible>(counted(ANSWER_CHUNKS, &pulled)) }
    });
    CacheLayer::new(MemoryStore::new(16 << 20))
        .read_ahead(READ_AHEAD)
        .max_entry_bytes(ENTRY)
        .layer(upstream)
}

/// A caller that reads nothing holds the upstream read to the read-ahead bound: the rest of
/// the answer is not buffered for it. When it reads, it gets all of it.
#[tokio::test]
async fn a_caller_that_stops_reading_holds_the_upstream_read() {
    let pulled = Arc::new(AtomicUsize::new(0));
    let svc = bounded_cache(&pulled);
    let body = stream_body("gpt-4.1", "read nothing", false);
    let res = svc.oneshot(chat_request(&body)).await.expect("answered");
    let held = settled(&pulled).await;
    assert!(
        held <= READ_AHEAD + 2 * 1024,
        "{held} bytes read for a caller that read nothing (bound {READ_AHEAD})"
    );
    let all = res.into_body().collect().await.expect("whole").to_bytes();
    assert_eq!(all.len(), ANSWER_CHUNKS * 1024);
    assert_eq!(pulled.load(Ordering::SeqCst), all.len());
}

/// A coalesced follower that reads nothing holds the shared upstream read too, once the answer
/// is past the entry bound: the answer is not kept for it. When it reads, both get all of it.
#[tokio::test]
async fn a_follower_that_stops_reading_holds_the_shared_read() {
    let pulled = Arc::new(AtomicUsize::new(0));
    let svc = bounded_cache(&pulled);
    let body = stream_body("gpt-4.1", "follow and stall", false);
    let leader = svc
        .clone()
        .oneshot(chat_request(&body))
        .await
        .expect("answered");
    let follower = svc.oneshot(chat_request(&body)).await.expect("answered");
    assert_eq!(follower.headers()["x-cache"], "HIT", "a coalesced follower");
    let leader =
        tokio::spawn(async move { leader.into_body().collect().await.map(|b| b.to_bytes()) });
    let held = settled(&pulled).await;
    assert!(
        held <= ENTRY + READ_AHEAD + 2 * 1024,
        "{held} bytes read while a follower read nothing"
    );
    let follower = follower
        .into_body()
        .collect()
        .await
        .expect("whole")
        .to_bytes();
    let leader = leader.await.unwrap().expect("whole");
    assert_eq!(follower.len(), ANSWER_CHUNKS * 1024);
    assert_eq!(leader, follower);
}

/// An upstream that streams for ever, one event every 5 ms, counting its calls.
fn endless(
    calls: &Arc<AtomicUsize>,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    let calls = Arc::clone(calls);
    service_fn(move |_req: Request<Full<Bytes>>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let frames = futures_util::stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Some((Ok::<_, Infallible>(Frame::data(event(100))), ()))
            });
            Ok(Response::builder()
                .header("content-type", "text/event-stream")
                .body(StreamBody::new(frames).boxed_unsync())
                .expect("a valid response"))
        }
    })
}

/// Callers that hang up on a never-ending stream: the answer is read on for the cache only
/// while no other request waits for the pool slot it holds, and only within the finish budget;
/// meanwhile the slot shows as detached.
#[tokio::test]
async fn an_abandoned_stream_gives_its_slot_back() {
    let calls = Arc::new(AtomicUsize::new(0));
    let pool = PoolLimitLayer::new(1, 1).queue_timeout(Duration::from_secs(3));
    let handle = pool.handle();
    let svc = CacheLayer::new(MemoryStore::new(16 << 20))
        .finish_budget(Duration::from_millis(300), 1 << 20)
        .layer(pool.layer(endless(&calls)));

    // A caller reads one event and hangs up: the answer is read on for the cache, its slot
    // held for no caller.
    let first = svc
        .clone()
        .oneshot(chat_request(&stream_body("gpt-4.1", "first", false)))
        .await
        .expect("answered");
    let mut first = first.into_body();
    first.frame().await.expect("a first event").expect("data");
    drop(first);
    assert!(
        wait_until(Duration::from_secs(5), || handle.detached() == 1).await,
        "the slot shows as detached"
    );
    assert_eq!(handle.in_flight(), 1);

    // Another request waits for the only slot: it gets it, instead of a shed.
    let second = svc
        .clone()
        .oneshot(chat_request(&stream_body("gpt-4.1", "second", false)))
        .await
        .expect("the waiting request got the slot");
    let mut second = second.into_body();
    second.frame().await.expect("a first event").expect("data");
    assert_eq!(handle.shed_total(), 0);
    assert_eq!(handle.detached(), 0);

    // Its caller hangs up too, and nobody waits: the budget ends the read, and the slot is free.
    drop(second);
    assert!(
        wait_until(Duration::from_secs(5), || handle.in_flight() == 0).await,
        "the finish budget ended the read ({} in flight, {} detached)",
        handle.in_flight(),
        handle.detached()
    );
    assert_eq!(handle.detached(), 0);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// The gauge the pool limit sets is the one the metrics crate describes.
#[test]
fn the_detached_gauge_has_one_name() {
    assert_eq!(
        holysheep_pool_limit::DETACHED_SLOTS,
        holysheep_metrics::names::POOL_DETACHED_SLOTS
    );
}
