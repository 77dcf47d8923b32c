//! The service: what reaches the inner service, and what reaches the client.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::stream;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use tower::{Layer, ServiceExt, service_fn};

use crate::{BoxError, IncludeUsageLayer};

const WITH: &[&str] = &[
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
    "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\ndata: [DONE]\n\n",
];
const WITHOUT: &str = concat!(
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
    "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n",
    "data: [DONE]\n\n",
);

type Seen = Arc<Mutex<Vec<Bytes>>>;

/// The upstream's body: frames given up front.
type Frames = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BoxError>>>>;

/// An upstream that records request bodies and streams `WITH` (split mid-event) when asked
/// for usage, JSON otherwise.
fn upstream(
    seen: Seen,
    status: StatusCode,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<Frames>,
    Error = BoxError,
    Future = impl Send,
> + Clone {
    service_fn(move |req: Request<Full<Bytes>>| {
        let seen = seen.clone();
        async move {
            let body = req.into_body().collect().await?.to_bytes();
            seen.lock().unwrap().push(body.clone());
            let streamed = body.windows(14).any(|w| w == b"\"stream\":true,")
                || body.ends_with(b"\"stream\":true}");
            let (ct, frames): (_, Vec<Result<Frame<Bytes>, BoxError>>) = if streamed {
                let joined = WITH.concat();
                let (a, b) = joined.split_at(30);
                (
                    "text/event-stream",
                    vec![
                        Ok(Frame::data(Bytes::from(a.to_owned()))),
                        Ok(Frame::data(Bytes::from(b.to_owned()))),
                    ],
                )
            } else {
                (
                    "application/json",
                    vec![Ok(Frame::data(Bytes::from_static(b"{\"usage\":null}")))],
                )
            };
            Ok::<_, BoxError>(
                Response::builder()
                    .status(status)
                    .header("content-type", ct)
                    .body(StreamBody::new(stream::iter(frames)))?,
            )
        }
    })
}

async fn call(path: &str, body: &str, status: StatusCode) -> (Bytes, Bytes) {
    let seen = Seen::default();
    let svc = IncludeUsageLayer::new().layer(upstream(seen.clone(), status));
    let req = Request::post(path)
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let answer = svc
        .oneshot(req)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let sent = seen.lock().unwrap().pop().unwrap();
    (sent, answer)
}

#[tokio::test]
async fn a_client_that_did_not_ask_gets_the_stream_without_usage() {
    let (sent, answer) = call(
        "/v1/chat/completions",
        r#"{"model":"m","stream":true}"#,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        sent,
        r#"{"stream_options":{"include_usage":true},"model":"m","stream":true}"#
    );
    assert_eq!(answer, WITHOUT);
}

#[tokio::test]
async fn a_client_that_asked_gets_every_byte() {
    let body = r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#;
    let (sent, answer) = call("/chat/completions", body, StatusCode::OK).await;
    assert_eq!(sent, body);
    assert_eq!(answer, WITH.concat());
}

#[tokio::test]
async fn other_requests_and_answers_pass_untouched() {
    // Not streamed, another endpoint, not POST-able paths: nothing changes either way.
    let (sent, answer) = call("/v1/chat/completions", r#"{"model":"m"}"#, StatusCode::OK).await;
    assert_eq!(sent, r#"{"model":"m"}"#);
    assert_eq!(answer, "{\"usage\":null}");
    let (sent, _) = call("/v1/embeddings", r#"{"stream":true}"#, StatusCode::OK).await;
    assert_eq!(sent, r#"{"stream":true}"#);
    // An error status is the upstream's to tell, unchanged.
    let (_, answer) = call(
        "/v1/chat/completions",
        r#"{"stream":true}"#,
        StatusCode::TOO_MANY_REQUESTS,
    )
    .await;
    assert_eq!(answer, WITH.concat());
}

#[tokio::test]
async fn a_declared_content_length_follows_the_edit() {
    let svc = IncludeUsageLayer::new().layer(service_fn(|req: Request<Full<Bytes>>| async move {
        let declared = req.headers()["content-length"]
            .to_str()
            .unwrap()
            .parse::<usize>()
            .unwrap();
        let body = req.into_body().collect().await?.to_bytes();
        assert_eq!(declared, body.len());
        Ok::<_, BoxError>(Response::new(Full::new(Bytes::new())))
    }));
    let body = r#"{"model":"m","stream":true}"#;
    let req = Request::post("/v1/chat/completions")
        .header("content-length", body.len())
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    svc.oneshot(req).await.unwrap();
}

#[tokio::test]
async fn a_failing_request_body_is_an_error() {
    let seen = Seen::default();
    let svc = IncludeUsageLayer::new().layer(upstream(seen.clone(), StatusCode::OK));
    let body = StreamBody::new(stream::iter(vec![Err::<Frame<Bytes>, BoxError>(
        "cut".into(),
    )]));
    let err = svc
        .oneshot(Request::post("/v1/chat/completions").body(body).unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "cut");
    assert!(seen.lock().unwrap().is_empty(), "nothing went upstream");
}
