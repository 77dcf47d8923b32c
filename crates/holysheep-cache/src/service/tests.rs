//! Unit tests of `Cache` over `service_fn` inners.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use holysheep_core::BoxError;
use holysheep_core::signal::{CacheOutcome, Namespace, RequestModel};
use holysheep_testkit::{
    ChatAnswer, chat_body, json_request, stream_body, stream_events, wait_until, with_header,
};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore, mpsc};
use tower::{Layer, Service, ServiceExt, service_fn};

use crate::entry::{Entry, EntryBody};
use crate::store::DownStore;
use crate::{Cache, CacheLayer, CoalesceError, DefaultKeyPolicy, MemoryStore, ParsedBody};

type TestBody = UnsyncBoxBody<Bytes, BoxError>;
type Inner = tower::util::BoxCloneService<Request<Full<Bytes>>, Response<TestBody>, BoxError>;

const PATH: &str = "/v1/chat/completions";

/// The inner upstream's answer of `text`, as the mock upstream renders answers.
fn answer(text: &str) -> ChatAnswer {
    ChatAnswer::new("m", text).id("chatcmpl-1").created(1)
}

fn completion(text: &str) -> Value {
    serde_json::from_slice(&answer(text).to_json()).expect("completion JSON")
}

/// `text` streamed in up to three content chunks, then `[DONE]`.
fn stream_chunks(text: &str) -> Vec<Bytes> {
    stream_events(&answer(text), 3, false)
}

fn full(body: Bytes) -> TestBody {
    Full::new(body).map_err(|e| match e {}).boxed_unsync()
}

fn json_response(status: StatusCode, body: Value) -> Response<TestBody> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(full(Bytes::from(body.to_string())))
        .unwrap()
}

/// A streamed response fed by the returned sender.
fn channel_response() -> (
    mpsc::UnboundedSender<Result<Bytes, BoxError>>,
    Response<TestBody>,
) {
    let (tx, rx) = mpsc::unbounded_channel::<Result<Bytes, BoxError>>();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item.map(Frame::data), rx))
    });
    let res = Response::builder()
        .header("content-type", "text/event-stream")
        .body(StreamBody::new(stream).boxed_unsync())
        .unwrap();
    (tx, res)
}

fn sse_response(chunks: Vec<Bytes>) -> Response<TestBody> {
    let (tx, res) = channel_response();
    for c in chunks {
        tx.send(Ok(c)).unwrap();
    }
    res
}

/// An inner service counting its calls, answering with `answer(call index, request body)`.
fn counting<F>(calls: &Arc<AtomicUsize>, answer: F) -> Inner
where
    F: Fn(usize, Value) -> Response<TestBody> + Clone + Send + Sync + 'static,
{
    let calls = Arc::clone(calls);
    tower::util::BoxCloneService::new(service_fn(move |req: Request<Full<Bytes>>| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let answer = answer.clone();
        async move {
            let bytes = req.into_body().collect().await?.to_bytes();
            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            Ok::<_, BoxError>(answer(n, body))
        }
    }))
}

fn request(body: &Value) -> Request<Full<Bytes>> {
    json_request(Method::POST, PATH, None, body.to_string())
}

fn chat(prompt: &str) -> Value {
    chat_body("m", prompt)
}

fn chat_stream(prompt: &str, include_usage: bool) -> Value {
    stream_body("m", prompt, include_usage)
}

struct Reply {
    status: StatusCode,
    x_cache: String,
    cache_status: String,
    content_type: String,
    outcome: Option<CacheOutcome>,
    model: Option<RequestModel>,
    body: Bytes,
}

/// Calls the cache in a task of its own. Spawning the call itself (not an `async` block that
/// awaits it) keeps rustc's higher-ranked `Send` inference away from the `Into<BoxError>` bounds
/// of a `BoxError`-typed inner service (rust-lang/rust#110338).
fn call(
    cache: &Cache<Inner>,
    req: Request<Full<Bytes>>,
) -> impl std::future::Future<Output = Result<Response<crate::ResponseBody>, BoxError>> + Send + 'static
{
    let task = tokio::spawn(cache.clone().oneshot(req));
    async move { task.await.map_err(BoxError::from)? }
}

fn send(
    cache: &Cache<Inner>,
    req: Request<Full<Bytes>>,
) -> impl std::future::Future<Output = Reply> + Send + 'static {
    let call = call(cache, req);
    async move {
        let res = call.await.expect("answered");
        let reply = holysheep_testkit::Reply::from_response(res).await;
        let header = |name| reply.header(name).unwrap_or_default().to_owned();
        Reply {
            status: reply.status,
            x_cache: header("x-cache"),
            cache_status: header("cache-status"),
            content_type: header("content-type"),
            outcome: reply.extensions.get::<CacheOutcome>().copied(),
            model: reply.extensions.get::<RequestModel>().cloned(),
            body: reply.body,
        }
    }
}

/// Waits until every flight is gone (entries are written before their flight leaves).
async fn settle(cache: &Cache<Inner>) {
    let settled = wait_until(Duration::from_secs(2), || cache.in_flight() == 0).await;
    assert!(
        settled,
        "a flight never ended: {} in flight",
        cache.in_flight()
    );
    // One more turn for a put without a registration.
    tokio::time::sleep(Duration::from_millis(2)).await;
}

fn layer() -> CacheLayer {
    CacheLayer::new(MemoryStore::new(16 << 20))
}

async fn stored(cache: &Cache<Inner>, body: &Value) -> Option<Bytes> {
    let key = DefaultKeyPolicy::new()
        .key(&crate::KeyRequest {
            path: PATH,
            upstream: CacheLayer::DEFAULT_UPSTREAM,
            namespace: None,
            body: &ParsedBody::from_value(body.clone()),
        })
        .unwrap();
    cache.store().get(key.as_str()).await.unwrap()
}

use crate::KeyPolicy;

#[tokio::test]
async fn hit_after_miss() {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = layer().layer(counting(&calls, |_, _| {
        json_response(StatusCode::OK, completion("hello"))
    }));
    let miss = send(&cache, request(&chat("hi"))).await;
    assert_eq!(miss.x_cache, "MISS");
    assert_eq!(miss.cache_status, "holysheep; fwd=miss; stored");
    assert_eq!(miss.outcome, Some(CacheOutcome::Miss));
    assert_eq!(miss.model.as_ref().map(RequestModel::as_str), Some("m"));
    settle(&cache).await;
    let hit = send(&cache, request(&chat("hi"))).await;
    assert_eq!(hit.x_cache, "HIT");
    assert_eq!(hit.cache_status, "holysheep; hit");
    assert_eq!(hit.outcome, Some(CacheOutcome::Hit));
    assert_eq!(hit.content_type, "application/json");
    assert_eq!(hit.body, miss.body);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Another prompt is another key.
    send(&cache, request(&chat("other"))).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// The inner answer of a router's fallback: another model served the request.
fn fallback_response(text: &str) -> Response<TestBody> {
    let mut res = json_response(StatusCode::OK, completion(text));
    res.extensions_mut()
        .insert(holysheep_core::signal::Fallback {
            from: Arc::from("m"),
            to: Arc::from("cheaper"),
        });
    res
}

#[tokio::test]
async fn a_fallback_answer_is_not_stored_unless_configured() {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = layer().layer(counting(&calls, |_, _| fallback_response("from another")));
    let first = send(&cache, request(&chat("hi"))).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.x_cache, "MISS");
    assert_eq!(first.cache_status, "holysheep; fwd=miss; detail=fallback");
    settle(&cache).await;
    assert_eq!(stored(&cache, &chat("hi")).await, None);
    let second = send(&cache, request(&chat("hi"))).await;
    assert_eq!(second.x_cache, "MISS");
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    let calls = Arc::new(AtomicUsize::new(0));
    let cache = layer()
        .cache_fallbacks(true)
        .layer(counting(&calls, |_, _| fallback_response("from another")));
    let first = send(&cache, request(&chat("hi"))).await;
    assert_eq!(first.cache_status, "holysheep; fwd=miss; stored");
    settle(&cache).await;
    let hit = send(&cache, request(&chat("hi"))).await;
    assert_eq!(hit.x_cache, "HIT");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn request_model_extension_wins() {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = layer().layer(counting(&calls, |_, _| {
        json_response(StatusCode::OK, completion("x"))
    }));
    let mut req = request(&chat("hi"));
    req.extensions_mut()
        .insert(RequestModel(Arc::from("gateway-model")));
    let reply = send(&cache, req).await;
    assert_eq!(reply.model.unwrap().as_str(), "gateway-model");
}

#[tokio::test]
async fn stream_recorded_then_replayed_and_converted() {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = layer().layer(counting(&calls, |_, _| {
        sse_response(stream_events(&answer("Hello"), 3, true))
    }));
    let miss = send(&cache, request(&chat_stream("hi", true))).await;
    assert_eq!(miss.cache_status, "holysheep; fwd=miss");
    assert_eq!(miss.content_type, "text/event-stream");
    settle(&cache).await;

    let hit = send(&cache, request(&chat_stream("hi", true))).await;
    assert_eq!(hit.x_cache, "HIT");
    assert_eq!(hit.body, miss.body, "a stored stream replays byte for byte");
    assert_eq!(hit.content_type, "text/event-stream");

    let as_json = send(&cache, request(&chat("hi"))).await;
    assert_eq!(as_json.x_cache, "HIT");
    assert_eq!(as_json.content_type, "application/json");
    let v: Value = serde_json::from_slice(&as_json.body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"], completion("Hello")["usage"]);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// Issue 18, item 4: a hit converted to the other shape carries everything the request asked
/// for, or is a miss whose answer replaces the entry.
#[tokio::test]
async fn conversions_never_drop_what_the_request_asked_for() {
    // A stream recorded without a usage chunk cannot give a JSON answer (which carries usage),
    // nor a stream with a usage chunk.
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = layer().layer(counting(&calls, |_, body| {
        if body.get("stream").is_some() {
            let usage = body["stream_options"]["include_usage"] == true;
            sse_response(stream_events(&answer("Hello"), 3, usage))
        } else {
            json_response(StatusCode::OK, completion("Hello"))
        }
    }));
    send(&cache, request(&chat_stream("hi", false))).await;
    settle(&cache).await;
    let with_usage = send(&cache, request(&chat_stream("hi", true))).await;
    assert_eq!(with_usage.x_cache, "MISS", "no usage chunk to give");
    assert!(String::from_utf8_lossy(&with_usage.body).contains("total_tokens"));
    settle(&cache).await;
    // That answer replaced the entry: now both shapes are whole.
    let as_json = send(&cache, request(&chat("hi"))).await;
    assert_eq!(as_json.x_cache, "HIT");
    let v: Value = serde_json::from_slice(&as_json.body).unwrap();
    assert_eq!(v["usage"], completion("Hello")["usage"]);
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    let calls = Arc::new(AtomicUsize::new(0));
    let cache = layer().layer(counting(&calls, |_, body| {
        if body.get("stream").is_some() {
            sse_response(stream_chunks("Hello"))
        } else {
            json_response(StatusCode::OK, completion("Hello"))
        }
    }));
    send(&cache, request(&chat_stream("hi", false))).await;
    settle(&cache).await;
    let as_json = send(&cache, request(&chat("hi"))).await;
    assert_eq!(
        as_json.x_cache, "MISS",
        "a JSON answer without usage is poorer"
    );
    let v: Value = serde_json::from_slice(&as_json.body).unwrap();
    assert!(v["usage"]["total_tokens"].as_u64().is_some());
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // A JSON answer without usage cannot give a usage chunk.
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = layer().layer(counting(&calls, |_, _| {
        let mut body = completion("Hello");
        body.as_object_mut().unwrap().remove("usage");
        json_response(StatusCode::OK, body)
    }));
    send(&cache, request(&chat("hi"))).await;
    settle(&cache).await;
    assert_eq!(
        send(&cache, request(&chat_stream("hi", false)))
            .await
            .x_cache,
        "HIT"
    );
    assert_eq!(
        send(&cache, request(&chat_stream("hi", true)))
            .await
            .x_cache,
        "MISS"
    );
}

/// Issue 18, item 4: `logprobs` (which the request keys on) survive both conversions.
#[tokio::test]
async fn logprobs_survive_conversion_both_ways() {
    let token = |t: &str| json!({"token": t, "logprob": -0.5, "bytes": null, "top_logprobs": []});
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = layer().layer(counting(&calls, move |_, _| {
        let mut body = completion("Hi there");
        body["choices"][0]["logprobs"] =
            json!({"content": [token("Hi"), token(" there")], "refusal": null});
        json_response(StatusCode::OK, body)
    }));
    let mut plain = chat("hi");
    plain["logprobs"] = json!(true);
    send(&cache, request(&plain)).await;
    settle(&cache).await;
    let mut streamed = plain.clone();
    streamed["stream"] = json!(true);
    let hit = send(&cache, request(&streamed)).await;
    assert_eq!(hit.x_cache, "HIT");
    let (chunks, done) = holysheep_testkit::sse_chunks(&hit.body);
    assert!(done);
    let tokens: Vec<Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array().cloned())
        .flatten()
        .collect();
    assert_eq!(tokens, vec![token("Hi"), token(" there")]);

    // And a stream with logprobs in its chunks, as one JSON.
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = layer().layer(counting(&calls, move |_, _| {
        let events: Vec<Bytes> = answer("Hi there")
            .to_events(2, true)
            .into_iter()
            .map(|event| {
                let text = String::from_utf8(event.to_vec()).unwrap();
                let Some(data) = text.strip_prefix("data: ") else {
                    return event;
                };
                let mut chunk: Value = serde_json::from_str(data.trim()).unwrap();
                if let Some(content) = chunk["choices"][0]["delta"]["content"].as_str() {
                    chunk["choices"][0]["logprobs"] = json!({"content": [token(content)]});
                }
                Bytes::from(format!("data: {chunk}\n\n"))
            })
            .chain([Bytes::from_static(b"data: [DONE]\n\n")])
            .collect();
        sse_response(events)
    }));
    send(&cache, request(&streamed)).await;
    settle(&cache).await;
    let hit = send(&cache, request(&plain)).await;
    assert_eq!(hit.x_cache, "HIT");
    let v: Value = serde_json::from_slice(&hit.body).unwrap();
    let content: Vec<String> = v["choices"][0]["logprobs"]["content"]
        .as_array()
        .expect("logprobs kept")
        .iter()
        .map(|t| t["token"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(content.concat(), "Hi there");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn json_entry_served_as_stream() {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = layer().layer(counting(&calls, |_, _| {
        json_response(StatusCode::OK, completion("Hi there"))
    }));
    send(&cache, request(&chat("hi"))).await;
    settle(&cache).await;
    let hit = send(&cache, request(&chat_stream("hi", true))).await;
    assert_eq!(hit.x_cache, "HIT");
    assert_eq!(hit.content_type, "text/event-stream");
    let text = String::from_utf8(hit.body.to_vec()).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(text.contains("\"content\":\"Hi there\""));
    let total = &completion("Hi there")["usage"]["total_tokens"];
    assert!(
        text.contains(&format!("\"total_tokens\":{total}")),
        "usage chunk when asked: {text}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn incomplete_streams_and_errors_are_not_cached() {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = layer().layer(counting(&calls, |n, _| match n {
        // Cut: no finish chunk, no [DONE].
        0 => sse_response(stream_chunks("cut short")[..2].to_vec()),
        // Upstream body error mid-stream.
        1 => {
            let (tx, res) = channel_response();
            tx.send(Ok(stream_chunks("a")[0].clone())).unwrap();
            tx.send(Err("connection reset".into())).unwrap();
            res
        }
        2 => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": {"message": "boom"}}),
        ),
        _ => json_response(
            StatusCode::OK,
            json!({"object": "chat.completion", "choices": []}),
        ),
    }));
    let cut = send(&cache, request(&chat_stream("hi", false))).await;
    assert_eq!(cut.x_cache, "MISS");
    settle(&cache).await;
    let res = cache
        .clone()
        .oneshot(request(&chat_stream("hi", false)))
        .await
        .unwrap();
    assert!(
        res.into_body().collect().await.is_err(),
        "the body error reaches the client"
    );
    settle(&cache).await;
    let err = send(&cache, request(&chat_stream("hi", false))).await;
    assert_eq!(err.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(err.cache_status, "holysheep; fwd=miss; fwd-status=500");
    settle(&cache).await;
    let empty = send(&cache, request(&chat_stream("hi", false))).await;
    assert_eq!(empty.cache_status, "holysheep; fwd=miss");
    settle(&cache).await;
    send(&cache, request(&chat_stream("hi", false))).await;
    assert_eq!(calls.load(Ordering::SeqCst), 5, "nothing was cached");
}

#[tokio::test]
async fn cache_control() {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = layer().layer(counting(&calls, |n, _| {
        json_response(StatusCode::OK, completion(&format!("answer {n}")))
    }));
    let body = chat("hi");

    let r = send(
        &cache,
        with_header(request(&body), "cache-control", "no-store"),
    )
    .await;
    assert_eq!(
        (r.x_cache.as_str(), r.cache_status.as_str()),
        ("BYPASS", "holysheep; fwd=bypass")
    );
    assert_eq!(r.outcome, Some(CacheOutcome::Bypass));
    settle(&cache).await;
    assert!(
        stored(&cache, &body).await.is_none(),
        "no-store writes nothing"
    );

    send(&cache, request(&body)).await; // answer 1 stored
    settle(&cache).await;
    let r = send(
        &cache,
        with_header(request(&body), "cache-control", "no-store"),
    )
    .await;
    assert!(
        String::from_utf8_lossy(&r.body).contains("answer 2"),
        "no-store does not read"
    );

    let r = send(
        &cache,
        with_header(request(&body), "cache-control", "no-cache"),
    )
    .await;
    assert_eq!(r.cache_status, "holysheep; fwd=request; stored");
    assert_eq!(r.x_cache, "MISS");
    assert!(String::from_utf8_lossy(&r.body).contains("answer 3"));
    settle(&cache).await;
    let r = send(&cache, request(&body)).await;
    assert!(
        String::from_utf8_lossy(&r.body).contains("answer 3"),
        "no-cache refreshed the entry"
    );

    let r = send(
        &cache,
        with_header(request(&body), "cache-control", "max-age=0"),
    )
    .await;
    assert_eq!(r.cache_status, "holysheep; fwd=request; stored");
    settle(&cache).await;
    let r = send(
        &cache,
        with_header(request(&body), "cache-control", "max-age=60"),
    )
    .await;
    assert_eq!(r.x_cache, "HIT", "a fresh entry is young enough");
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn max_age_rejects_an_old_entry() {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = layer().layer(counting(&calls, |_, _| {
        json_response(StatusCode::OK, completion("new"))
    }));
    let body = chat("hi");
    let key = DefaultKeyPolicy::new()
        .key(&crate::KeyRequest {
            path: PATH,
            upstream: CacheLayer::DEFAULT_UPSTREAM,
            namespace: None,
            body: &ParsedBody::from_value(body.clone()),
        })
        .unwrap();
    let old = Entry::json(
        Bytes::from(completion("old").to_string()),
        http::HeaderValue::from_static("application/json"),
    )
    .stored_at(crate::entry::now_secs() - 100);
    cache
        .store()
        .put(key.as_str(), old.encode(), Duration::from_secs(60))
        .await
        .unwrap();
    let r = send(
        &cache,
        with_header(request(&body), "cache-control", "max-age=50"),
    )
    .await;
    assert_eq!(r.cache_status, "holysheep; fwd=stale; stored");
    assert!(String::from_utf8_lossy(&r.body).contains("new"));
    let r = send(
        &cache,
        with_header(request(&body), "cache-control", "max-age=500"),
    )
    .await;
    assert_eq!(r.x_cache, "HIT");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn bypasses() {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = layer().layer(counting(&calls, |_, _| {
        json_response(StatusCode::OK, completion("x"))
    }));
    let get = Request::get("/v1/models")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = send(&cache, get).await;
    assert_eq!(
        (r.x_cache.as_str(), r.cache_status.as_str()),
        ("BYPASS", "holysheep; fwd=method")
    );
    for body in [&b"not json"[..], b"[1,2]", b"{\"messages\":[]}"] {
        let req = Request::post(PATH)
            .body(Full::new(Bytes::copy_from_slice(body)))
            .unwrap();
        assert_eq!(
            send(&cache, req).await.cache_status,
            "holysheep; fwd=bypass"
        );
    }
    let req = Request::post("/v1/models")
        .body(Full::new(Bytes::from(chat("x").to_string())))
        .unwrap();
    assert_eq!(send(&cache, req).await.x_cache, "BYPASS");
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn oversize_answers_pass_through_uncached() {
    let calls = Arc::new(AtomicUsize::new(0));
    let big = "x".repeat(4096);
    let cache = layer()
        .max_entry_bytes(1024)
        .layer(counting(&calls, move |_, body| {
            if body.get("stream").is_some() {
                sse_response(stream_chunks(&big))
            } else {
                json_response(StatusCode::OK, completion(&big))
            }
        }));
    for body in [chat("hi"), chat_stream("hi", false)] {
        let r = send(&cache, request(&body)).await;
        assert!(r.body.len() > 4096, "the whole answer reaches the client");
        assert_eq!(r.cache_status, "holysheep; fwd=miss");
        settle(&cache).await;
    }
    send(&cache, request(&chat("hi"))).await;
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn tenants_are_isolated() {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = layer().layer(counting(&calls, |_, _| {
        json_response(StatusCode::OK, completion("x"))
    }));
    let tenant = |name: &str| {
        let mut req = request(&chat("hi"));
        req.extensions_mut().insert(Namespace(Arc::from(name)));
        req
    };
    send(&cache, tenant("a")).await;
    settle(&cache).await;
    assert_eq!(send(&cache, tenant("b")).await.x_cache, "MISS");
    settle(&cache).await;
    assert_eq!(send(&cache, tenant("a")).await.x_cache, "HIT");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// Issue 11, item 10: the query string goes upstream, so it is part of the key.
#[tokio::test]
async fn query_strings_are_keyed() {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = layer().layer(counting(&calls, |_, _| {
        json_response(StatusCode::OK, completion("x"))
    }));
    let at = |target: &str| json_request(Method::POST, target, None, chat("hi").to_string());
    for (target, x_cache) in [
        ("/v1/chat/completions?a=1", "MISS"),
        ("/v1/chat/completions?a=2", "MISS"),
        ("/v1/chat/completions", "MISS"),
        ("/v1/chat/completions?a=1", "HIT"),
        ("/v1/chat/completions?", "HIT"),
    ] {
        assert_eq!(send(&cache, at(target)).await.x_cache, x_cache, "{target}");
        settle(&cache).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    // The reference Python client sends no query: with one, its scheme gives way to the
    // canonical one, which keys the query.
    let cache = layer()
        .key_policy(DefaultKeyPolicy::python_compat())
        .layer(counting(&calls, |_, _| {
            json_response(StatusCode::OK, completion("x"))
        }));
    send(&cache, at("/v1/chat/completions?a=1")).await;
    settle(&cache).await;
    assert_eq!(
        send(&cache, at("/v1/chat/completions?a=2")).await.x_cache,
        "MISS"
    );
}

#[tokio::test]
async fn a_failing_store_is_a_miss() {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = CacheLayer::new(DownStore).layer(counting(&calls, |_, _| {
        json_response(StatusCode::OK, completion("x"))
    }));
    for _ in 0..3 {
        let r = send(&cache, request(&chat("hi"))).await;
        assert_eq!((r.status, r.x_cache.as_str()), (StatusCode::OK, "MISS"));
        settle(&cache).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn python_compat_scheme_stores_plain_completion_json() {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = layer()
        .key_policy(DefaultKeyPolicy::python_compat())
        .layer(counting(&calls, |_, _| {
            sse_response(stream_chunks("Hello"))
        }));
    let body = chat_stream("hi", false);
    send(&cache, request(&body)).await;
    settle(&cache).await;
    let key = DefaultKeyPolicy::python_compat()
        .key(&crate::KeyRequest {
            path: PATH,
            upstream: CacheLayer::DEFAULT_UPSTREAM,
            namespace: None,
            body: &ParsedBody::from_value(body.clone()),
        })
        .unwrap();
    let value = cache
        .store()
        .get(key.as_str())
        .await
        .unwrap()
        .expect("stored");
    let v: Value = serde_json::from_slice(&value).expect("plain JSON");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello");
    // And it serves both shapes.
    assert_eq!(send(&cache, request(&body)).await.x_cache, "HIT");
    assert_eq!(send(&cache, request(&chat("hi"))).await.x_cache, "HIT");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn stream_entries_keep_chunks() {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = layer().layer(counting(&calls, |_, _| {
        sse_response(stream_chunks("Hello"))
    }));
    let body = chat_stream("hi", false);
    send(&cache, request(&body)).await;
    settle(&cache).await;
    let entry = Entry::decode(stored(&cache, &body).await.unwrap()).unwrap();
    assert!(matches!(entry.body(), EntryBody::Stream { chunks, .. } if chunks.len() == 4));
}

#[tokio::test]
async fn cache_streams_off_stores_no_stream() {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = layer().cache_streams(false).layer(counting(&calls, |_, _| {
        sse_response(stream_chunks("Hello"))
    }));
    for _ in 0..2 {
        assert_eq!(
            send(&cache, request(&chat_stream("hi", false)))
                .await
                .x_cache,
            "MISS"
        );
        settle(&cache).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// An inner service that holds every call until `gate` has a permit for it.
fn gated(calls: &Arc<AtomicUsize>, gate: &Arc<Semaphore>, stream: bool) -> Inner {
    let calls = Arc::clone(calls);
    let gate = Arc::clone(gate);
    tower::util::BoxCloneService::new(service_fn(move |_req: Request<Full<Bytes>>| {
        calls.fetch_add(1, Ordering::SeqCst);
        let gate = Arc::clone(&gate);
        async move {
            gate.acquire().await.expect("gate open").forget();
            Ok::<_, BoxError>(if stream {
                sse_response(stream_events(&answer("shared"), 3, true))
            } else {
                json_response(StatusCode::OK, completion("shared"))
            })
        }
    }))
}

async fn wait_followers(cache: &Cache<Inner>, key_body: &Value, n: usize) {
    let key = DefaultKeyPolicy::new()
        .key(&crate::KeyRequest {
            path: PATH,
            upstream: CacheLayer::DEFAULT_UPSTREAM,
            namespace: None,
            body: &ParsedBody::from_value(key_body.clone()),
        })
        .unwrap();
    for _ in 0..5000 {
        let count = cache
            .shared
            .flights()
            .get(&key)
            .map(|f| f.state().followers);
        if count == Some(n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("followers never reached {n}");
}

#[tokio::test]
async fn concurrent_misses_share_one_call() {
    for stream in [false, true] {
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Semaphore::new(0));
        let cache = layer().layer(gated(&calls, &gate, stream));
        let body = if stream {
            chat_stream("hi", false)
        } else {
            chat("hi")
        };
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let cache = cache.clone();
                let body = body.clone();
                tokio::spawn(async move { send(&cache, request(&body)).await })
            })
            .collect();
        wait_followers(&cache, &body, 49).await;
        gate.add_permits(100);
        let mut replies = Vec::new();
        for t in tasks {
            replies.push(t.await.unwrap());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(
            replies
                .iter()
                .all(|r| r.body == replies[0].body && r.status == StatusCode::OK)
        );
        let collapsed = replies
            .iter()
            .filter(|r| r.outcome == Some(CacheOutcome::Coalesced))
            .count();
        assert_eq!(collapsed, 49);
        assert!(
            replies
                .iter()
                .filter(|r| r.outcome == Some(CacheOutcome::Coalesced))
                .all(|r| {
                    r.x_cache == "HIT" && r.cache_status == "holysheep; fwd=miss; collapsed"
                })
        );
        settle(&cache).await;
    }
}

#[tokio::test]
async fn followers_receive_chunks_live_and_survive_the_leader_leaving() {
    let calls = Arc::new(AtomicUsize::new(0));
    let senders = Arc::new(std::sync::Mutex::new(Vec::new()));
    let inner = {
        let senders = Arc::clone(&senders);
        counting(&calls, move |_, _| {
            let (tx, res) = channel_response();
            senders.lock().unwrap().push(tx);
            res
        })
    };
    let cache = layer().layer(inner);
    let body = chat_stream("hi", false);
    let leader = cache.clone().oneshot(request(&body)).await.unwrap();
    let follower = cache.clone().oneshot(request(&body)).await.unwrap();
    assert_eq!(follower.headers()["x-cache"], "HIT");
    let tx = senders.lock().unwrap().pop().unwrap();
    let chunks = stream_chunks("live");
    tx.send(Ok(chunks[0].clone())).unwrap();

    let mut follower = follower.into_body();
    let first = follower
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    assert_eq!(
        first, chunks[0],
        "the follower got a chunk before the stream ended"
    );

    // The leader's client goes away mid-stream.
    drop(leader);
    for c in &chunks[1..] {
        tx.send(Ok(c.clone())).unwrap();
    }
    drop(tx);
    let rest = follower.collect().await.unwrap().to_bytes();
    let whole: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
    assert_eq!([first.to_vec(), rest.to_vec()].concat(), whole);
    settle(&cache).await;
    assert!(
        stored(&cache, &body).await.is_some(),
        "the drained answer was stored"
    );
    assert_eq!(send(&cache, request(&body)).await.x_cache, "HIT");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn leader_client_gone_without_followers_still_stores() {
    let calls = Arc::new(AtomicUsize::new(0));
    let senders = Arc::new(std::sync::Mutex::new(Vec::new()));
    let inner = {
        let senders = Arc::clone(&senders);
        counting(&calls, move |_, _| {
            let (tx, res) = channel_response();
            senders.lock().unwrap().push(tx);
            res
        })
    };
    let cache = layer().layer(inner);
    let body = chat_stream("hi", false);
    let leader = cache.clone().oneshot(request(&body)).await.unwrap();
    let tx = senders.lock().unwrap().pop().unwrap();
    drop(leader);
    for c in stream_chunks("paid for") {
        tx.send(Ok(c)).unwrap();
    }
    drop(tx);
    settle(&cache).await;
    assert!(stored(&cache, &body).await.is_some());
}

#[tokio::test]
async fn leader_failure_reaches_followers_promptly() {
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Notify::new());
    let inner = {
        let calls = Arc::clone(&calls);
        let gate = Arc::clone(&gate);
        tower::util::BoxCloneService::new(service_fn(move |_req: Request<Full<Bytes>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let gate = Arc::clone(&gate);
            async move {
                gate.notified().await;
                Err::<Response<TestBody>, BoxError>("connection refused".into())
            }
        }))
    };
    let cache = layer().layer(inner);
    let body = chat("hi");
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let cache = cache.clone();
            let body = body.clone();
            tokio::spawn({
                let fut = call(&cache, request(&body));
                async move { fut.await.map(|_| ()) }
            })
        })
        .collect();
    wait_followers(&cache, &body, 9).await;
    gate.notify_one();
    let mut shared = 0;
    for t in tasks {
        let err = tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .unwrap()
            .unwrap()
            .unwrap_err();
        if let Some(e) = err.downcast_ref::<CoalesceError>() {
            assert!(e.is_leader_failed());
            assert_eq!(e.message(), "connection refused");
            shared += 1;
        }
    }
    assert_eq!(shared, 9);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.in_flight(), 0);
}

#[tokio::test]
async fn error_answers_are_shared_not_multiplied() {
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Notify::new());
    let inner = {
        let calls = Arc::clone(&calls);
        let gate = Arc::clone(&gate);
        tower::util::BoxCloneService::new(service_fn(move |_req: Request<Full<Bytes>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let gate = Arc::clone(&gate);
            async move {
                gate.notified().await;
                let (tx, mut res) = channel_response();
                *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                tx.send(Ok(Bytes::from_static(
                    b"{\"error\":{\"message\":\"slow down\"}}",
                )))
                .unwrap();
                Ok::<_, BoxError>(res)
            }
        }))
    };
    let cache = layer().layer(inner);
    let body = chat("hi");
    let tasks: Vec<_> = (0..5)
        .map(|_| {
            let cache = cache.clone();
            let body = body.clone();
            let fut = call(&cache, request(&body));
            tokio::spawn(async move {
                let res = fut.await.unwrap();
                let status = res.status();
                // The sender is dropped with the response future; read a first frame only.
                let mut body = res.into_body();
                let first = body
                    .frame()
                    .await
                    .and_then(|f| f.ok())
                    .and_then(|f| f.into_data().ok());
                (status, first)
            })
        })
        .collect();
    wait_followers(&cache, &body, 4).await;
    gate.notify_one();
    for t in tasks {
        let (status, first) = tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert!(first.is_some_and(|b| b.starts_with(b"{\"error\"")));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_cancelled_leader_hands_over_and_nothing_leaks() {
    let calls = Arc::new(AtomicUsize::new(0));
    let inner = {
        let calls = Arc::clone(&calls);
        tower::util::BoxCloneService::new(service_fn(move |_req: Request<Full<Bytes>>| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    // The first call never answers: its caller gives up.
                    std::future::pending::<()>().await;
                }
                Ok::<_, BoxError>(json_response(StatusCode::OK, completion("second")))
            }
        }))
    };
    let cache = layer().layer(inner);
    let body = chat("hi");
    let leader = tokio::spawn(cache.clone().oneshot(request(&body)));
    // Wait until the leader is in flight, then add followers.
    for _ in 0..1000 {
        if cache.in_flight() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let followers: Vec<_> = (0..3)
        .map(|_| {
            let cache = cache.clone();
            let body = body.clone();
            tokio::spawn(async move { send(&cache, request(&body)).await })
        })
        .collect();
    wait_followers(&cache, &body, 3).await;
    leader.abort();
    for f in followers {
        let r = tokio::time::timeout(Duration::from_secs(5), f)
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&r.body).contains("second"));
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "one follower took over, the rest followed it"
    );
    settle(&cache).await;
}

#[tokio::test]
async fn a_panicking_inner_leaves_no_stuck_key() {
    let calls = Arc::new(AtomicUsize::new(0));
    let inner = {
        let calls = Arc::clone(&calls);
        tower::util::BoxCloneService::new(service_fn(move |_req: Request<Full<Bytes>>| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                assert!(n != 0, "inner service bug");
                Ok::<_, BoxError>(json_response(StatusCode::OK, completion("ok")))
            }
        }))
    };
    let cache = layer().layer(inner);
    let body = chat("hi");
    let panicked = tokio::spawn(cache.clone().oneshot(request(&body))).await;
    assert!(panicked.unwrap_err().is_panic());
    assert_eq!(cache.in_flight(), 0);
    assert_eq!(send(&cache, request(&body)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn different_shapes_share_one_call() {
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let cache = layer().layer(gated(&calls, &gate, true));
    let stream_task = tokio::spawn({
        let cache = cache.clone();
        async move { send(&cache, request(&chat_stream("hi", false))).await }
    });
    wait_followers(&cache, &chat("hi"), 0).await;
    let json_task = tokio::spawn({
        let cache = cache.clone();
        async move { send(&cache, request(&chat("hi"))).await }
    });
    wait_followers(&cache, &chat("hi"), 1).await;
    gate.add_permits(100);
    let s = stream_task.await.unwrap();
    let j = json_task.await.unwrap();
    assert_eq!(s.content_type, "text/event-stream");
    assert_eq!(j.content_type, "application/json");
    assert_eq!(j.outcome, Some(CacheOutcome::Coalesced));
    let v: Value = serde_json::from_slice(&j.body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "shared");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn coalescing_off_calls_each_time() {
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(0));
    let cache = layer().coalesce(false).layer(gated(&calls, &gate, false));
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { send(&cache, request(&chat("hi"))).await })
        })
        .collect();
    for _ in 0..1000 {
        if calls.load(Ordering::SeqCst) == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(cache.in_flight(), 0);
    gate.add_permits(100);
    for t in tasks {
        assert_eq!(t.await.unwrap().x_cache, "MISS");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn poll_ready_does_not_wait_for_the_inner_service() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut cache = layer().layer(counting(&calls, |_, _| {
        json_response(StatusCode::OK, completion("x"))
    }));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(Service::<Request<Full<Bytes>>>::poll_ready(&mut cache, &mut cx).is_ready());
}

/// A memory store that says it is shared with others, as Redis is.
#[derive(Clone, Default)]
struct SharedMemory(MemoryStore);

impl crate::CacheStore for SharedMemory {
    fn get<'a>(
        &'a self,
        key: &'a str,
    ) -> crate::BoxFuture<'a, Result<Option<Bytes>, crate::StoreError>> {
        self.0.get(key)
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        ttl: Duration,
    ) -> crate::BoxFuture<'a, Result<(), crate::StoreError>> {
        self.0.put(key, value, ttl)
    }

    fn kind(&self) -> &'static str {
        "shared-memory"
    }

    fn ping(&self) -> crate::BoxFuture<'_, Result<(), crate::StoreError>> {
        self.0.ping()
    }
}

fn key_of(body: &Value) -> String {
    DefaultKeyPolicy::new()
        .key(&crate::KeyRequest {
            path: PATH,
            upstream: CacheLayer::DEFAULT_UPSTREAM,
            namespace: None,
            body: &ParsedBody::from_value(body.clone()),
        })
        .unwrap()
        .as_str()
        .to_owned()
}

/// Issue 11, item 7: what another writer put at a real key is served only if it is a good
/// answer, with the route's content type; anything else is a counted miss whose answer
/// replaces it.
#[tokio::test]
async fn entries_read_from_a_shared_store_are_checked() {
    use crate::CacheStore;
    let good = Bytes::from(completion("fresh").to_string());
    let html = HeaderValue::from_static("text/html");
    let poisoned: Vec<(&str, Bytes)> = vec![
        (
            "an error",
            Bytes::from_static(b"{\"error\":{\"message\":\"poisoned\"}}"),
        ),
        ("not JSON", Bytes::from_static(b"{this is not json")),
        (
            "HTML in an envelope",
            Entry::json(
                Bytes::from_static(b"<script>alert(1)</script>"),
                html.clone(),
            )
            .encode(),
        ),
        (
            "a stream of nothing",
            Entry::stream(
                Vec::new(),
                false,
                HeaderValue::from_static("text/event-stream"),
            )
            .encode(),
        ),
        (
            "a stream that lies about usage",
            Entry::stream(
                stream_chunks("x"),
                true,
                HeaderValue::from_static("text/event-stream"),
            )
            .encode(),
        ),
        (
            "an unknown format",
            Bytes::from_static(b"HSC\x01\x09garbage"),
        ),
    ];
    for (i, (what, value)) in poisoned.into_iter().enumerate() {
        let store = SharedMemory::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let cache = CacheLayer::new(store.clone()).layer(counting(&calls, |_, _| {
            json_response(StatusCode::OK, completion("fresh"))
        }));
        let body = chat(&format!("poisoned {i}"));
        store
            .put(&key_of(&body), value, Duration::from_secs(60))
            .await
            .unwrap();
        let r = send(&cache, request(&body)).await;
        assert_eq!(
            (r.x_cache.as_str(), r.status),
            ("MISS", StatusCode::OK),
            "{what}"
        );
        assert_eq!(r.body, good, "{what}");
        assert_eq!(cache.invalid_entries(), 1, "{what}: counted");
        settle(&cache).await;
        let again = send(&cache, request(&body)).await;
        assert_eq!(again.x_cache, "HIT", "{what}: the fresh answer replaced it");
        assert_eq!(again.body, good);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    // A good answer in an envelope that names another content type is served as JSON.
    let store = SharedMemory::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = CacheLayer::new(store.clone()).layer(counting(&calls, |_, _| {
        json_response(StatusCode::OK, completion("fresh"))
    }));
    let body = chat("html type");
    store
        .put(
            &key_of(&body),
            Entry::json(good.clone(), html).encode(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let r = send(&cache, request(&body)).await;
    assert_eq!(
        (r.x_cache.as_str(), r.content_type.as_str()),
        ("HIT", "application/json")
    );
    assert_eq!(cache.invalid_entries(), 0);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

/// Starts `n` identical requests against `cache` (shaped by `body_of(i)`), waits until all but
/// the leader follow it, then opens `gate`; the replies, in order.
async fn group(
    cache: &Cache<Inner>,
    gate: &Notify,
    n: usize,
    body_of: impl Fn(usize) -> Value,
) -> Vec<Result<Response<crate::ResponseBody>, BoxError>> {
    let tasks: Vec<_> = (0..n).map(|i| call(cache, request(&body_of(i)))).collect();
    let tasks: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
    wait_followers(cache, &chat("hi"), n - 1).await;
    gate.notify_one();
    let mut out = Vec::new();
    for task in tasks {
        out.push(
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("nobody hangs")
                .unwrap(),
        );
    }
    out
}

/// Every other request of a group asks for a stream.
fn half_streamed(i: usize) -> Value {
    if i.is_multiple_of(2) {
        chat("hi")
    } else {
        chat_stream("hi", false)
    }
}

/// An inner service whose calls wait for `gate`, then answer with `answer(request body)`.
fn held<F>(calls: &Arc<AtomicUsize>, gate: &Arc<Notify>, answer: F) -> Inner
where
    F: Fn(Value) -> Result<Response<TestBody>, BoxError> + Clone + Send + Sync + 'static,
{
    let calls = Arc::clone(calls);
    let gate = Arc::clone(gate);
    tower::util::BoxCloneService::new(service_fn(move |req: Request<Full<Bytes>>| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let gate = Arc::clone(&gate);
        let answer = answer.clone();
        async move {
            if n == 0 {
                gate.notified().await;
            }
            let bytes = req.into_body().collect().await?.to_bytes();
            answer(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
        }
    }))
}

/// Issue 18, item 5: followers fail as their leader does: a shed is a 503 with `Retry-After`
/// for all, a timeout a 504 for all.
#[tokio::test]
async fn followers_fail_as_their_leader_does() {
    use holysheep_core::error::{Overloaded, error_response};
    let cases: [(fn() -> BoxError, StatusCode); 2] = [
        (
            || Overloaded::new(Duration::from_secs(2)).into(),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            || std::io::Error::from(std::io::ErrorKind::TimedOut).into(),
            StatusCode::GATEWAY_TIMEOUT,
        ),
    ];
    for (error, status) in cases {
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Notify::new());
        let cache = layer().layer(held(&calls, &gate, move |_| Err(error())));
        let replies = group(&cache, &gate, 10, |_| chat("hi")).await;
        for reply in replies {
            let error = reply.expect_err("the call failed");
            let res = error_response(&*error);
            assert_eq!(res.status(), status, "{error}");
            if status == StatusCode::SERVICE_UNAVAILABLE {
                assert_eq!(res.headers()["retry-after"], "2");
            }
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

/// Issue 18, item 5: a JSON answer the upstream cut is a failure for the leader and every
/// follower, never a `200` with part of a body.
#[tokio::test]
async fn a_cut_json_answer_is_a_failure_for_all() {
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Notify::new());
    let whole = completion("a long answer that the upstream cuts").to_string();
    let cache = layer().layer(held(&calls, &gate, move |_| {
        let (tx, mut res) = channel_response();
        res.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        res.headers_mut()
            .insert("content-length", HeaderValue::from(whole.len()));
        tx.send(Ok(Bytes::copy_from_slice(&whole.as_bytes()[..20])))
            .unwrap();
        tx.send(Err(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )
        .into()))
            .unwrap();
        Ok(res)
    }));
    let replies = group(&cache, &gate, 10, half_streamed).await;
    for reply in replies {
        let error = reply.expect_err("no head for a cut JSON answer");
        assert_eq!(
            holysheep_core::error::ErrorClass::of(&*error),
            holysheep_core::error::ErrorClass::Connect,
            "{error}"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// Issue 18, item 3: an answer that cannot be stored (too large, or not a good answer) costs
/// at most one more upstream call per shape for the whole group of identical requests.
#[tokio::test]
async fn an_unstorable_answer_costs_one_more_call_per_shape() {
    let big = "x".repeat(4096);
    type Answer = fn(&str, Value) -> Response<TestBody>;
    let answers: [(&str, Answer); 2] = [
        ("too large", |text, body| {
            if body.get("stream").is_some() {
                sse_response(stream_chunks(text))
            } else {
                json_response(StatusCode::OK, completion(text))
            }
        }),
        ("not a good answer", |_, body| {
            if body.get("stream").is_some() {
                sse_response(vec![Bytes::from_static(b"data: {\"choices\":[]}\n\n")])
            } else {
                json_response(
                    StatusCode::OK,
                    json!({"object": "chat.completion", "choices": []}),
                )
            }
        }),
    ];
    for (what, answer) in answers {
        let calls = Arc::new(AtomicUsize::new(0));
        let gate = Arc::new(Notify::new());
        let text = big.clone();
        let cache = layer()
            .max_entry_bytes(1024)
            .layer(held(&calls, &gate, move |body| Ok(answer(&text, body))));
        let replies = group(&cache, &gate, 60, half_streamed).await;
        for reply in replies {
            let res = reply.expect("answered");
            assert_eq!(res.status(), StatusCode::OK, "{what}");
            res.into_body().collect().await.expect("a whole body");
        }
        assert!(
            calls.load(Ordering::SeqCst) <= 2,
            "{what}: {} upstream calls for 60 requests of two shapes",
            calls.load(Ordering::SeqCst)
        );
        settle(&cache).await;
    }
}

/// Issue 18, item 3: followers of another shape that an answer cannot serve share one new
/// call, and get the whole answer from it.
#[tokio::test]
async fn other_shapes_share_the_call_made_for_them() {
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Notify::new());
    // A stream without a usage chunk cannot become a JSON answer (which carries usage).
    let cache = layer().layer(held(&calls, &gate, |body| {
        Ok(if body.get("stream").is_some() {
            sse_response(stream_chunks("shared"))
        } else {
            json_response(StatusCode::OK, completion("shared"))
        })
    }));
    let replies = group(&cache, &gate, 20, |i| {
        if i == 0 {
            chat_stream("hi", false)
        } else {
            chat("hi")
        }
    })
    .await;
    for (i, reply) in replies.into_iter().enumerate() {
        let res = reply.expect("answered");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        if i > 0 {
            let v: Value = serde_json::from_slice(&body).expect("one JSON");
            assert_eq!(v["choices"][0]["message"]["content"], "shared");
            assert!(v["usage"]["total_tokens"].as_u64().is_some());
        }
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the stream, and one for the JSON ones"
    );
}
