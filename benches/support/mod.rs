//! What the layer benches share: the mock upstream's answer, served at once, and one request
//! driven to the end of its body without a runtime.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::sync::LazyLock;

use bytes::Bytes;
use futures_util::FutureExt;
use holysheep_testkit::{chat_body, mock_answer};
use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tower::Service;

/// The mock upstream's answer to one question, usage included.
pub(crate) static ANSWER: LazyLock<Bytes> = LazyLock::new(|| {
    mock_answer(&chat_body(
        "gpt-4.1",
        "Why does connection pooling cut latency?",
    ))
    .to_json()
});

/// The inner service: [`ANSWER`] as JSON, ready at once.
pub(crate) fn answer(_req: Request<()>) -> Ready<Result<Response<Full<Bytes>>, Infallible>> {
    ready(Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(ANSWER.clone()))
        .expect("a valid response")))
}

/// One request: call, then read the body to its end as a server would.
pub(crate) fn one<S, B>(svc: &mut S, req: Request<()>)
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible>,
    B: Body + Unpin,
    B::Error: std::fmt::Debug,
{
    let Some(Ok(res)) = svc.call(req).now_or_never() else {
        unreachable!("the inner service answers at once")
    };
    let mut body = res.into_body();
    while let Some(Some(frame)) = body.frame().now_or_never() {
        black_box(frame.expect("an infallible body"));
    }
}
