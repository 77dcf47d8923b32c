//! A bare hyper proxy in front of the mock: the floor any HTTP gateway pays.
//!
//! hyper-util's auto connection builder (HTTP/1.1 or h2) over a loopback `TcpListener`, each
//! request handed as it came (headers and streaming body, no parsing) to a [`HolySheepClient`]
//! with no layers, the gateway's `/v1` prefix stripped as the gateway strips it, and the
//! upstream's response body streamed back frame by frame. What the gateway adds on top of this
//! (routing, middleware, validation, the layer stack) is the gateway's own cost.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use holysheep::client::{HolySheepClient, ResponseBody};
use holysheep_core::BoxError;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

/// What the proxy answers: the upstream's body as it streams, or an empty error answer.
type ProxyBody = Either<ResponseBody, Empty<Bytes>>;

/// A running proxy; stops (and closes its connections) when shut down or dropped.
pub(crate) struct ProxyHandle {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl ProxyHandle {
    /// Binds `127.0.0.1:0` and serves through `client`.
    pub(crate) async fn start(client: HolySheepClient) -> Result<Self, BoxError> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(accept(listener, client));
        Ok(ProxyHandle { addr, task })
    }

    /// The address it listens on.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        // The accept task owns the connection tasks: aborting it drops them all.
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, client: HolySheepClient) {
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Reap finished connections so the set does not grow with the run.
        while connections.try_join_next().is_some() {}
        // As any proxy tuned for small answers does (and as the harness's clients do).
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        connections.spawn(async move {
            let service =
                hyper::service::service_fn(move |request| forward(client.clone(), request));
            // A connection error ends this connection only.
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Strips `/v1` and hands the request, body unread, to the client.
async fn forward(
    client: HolySheepClient,
    request: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let (mut parts, body) = request.into_parts();
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let stripped = match target.strip_prefix("/v1") {
        Some(rest) if rest.starts_with('/') => rest,
        Some(rest) if rest.starts_with('?') || rest.is_empty() => "/",
        _ => target,
    };
    parts.uri = match Uri::try_from(stripped) {
        Ok(uri) => uri,
        Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
    };
    // The client strips the caller's connection headers, `Host` and `Authorization` itself.
    match client.oneshot(Request::from_parts(parts, body)).await {
        Ok(response) => Ok(response.map(Either::Left)),
        Err(_) => Ok(status(StatusCode::BAD_GATEWAY)),
    }
}

fn status(code: StatusCode) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Empty::new()));
    *response.status_mut() = code;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use holysheep_mock::{MockConfig, MockServer};

    use crate::driver::Target;
    use crate::targets::{HttpTarget, UPSTREAM_KEY};

    #[tokio::test]
    async fn forwards_to_the_upstream_with_v1_stripped() {
        let mock = MockServer::start(MockConfig::default().api_key(UPSTREAM_KEY))
            .await
            .expect("mock starts");
        let client = HolySheepClient::builder()
            .base_url(mock.base_url())
            .api_key(UPSTREAM_KEY)
            .build()
            .expect("client builds");
        let proxy = ProxyHandle::start(client).await.expect("proxy starts");
        let target = HttpTarget::pooled(&format!("http://{}/v1/chat/completions", proxy.addr()))
            .expect("url parses");
        let body = crate::workload::body_for(1, 7);
        let outcome = target.call(body, true).await;
        assert_eq!(outcome.status, Some(200));
        let answer = outcome.answer.expect("a completion came back");
        assert!(!answer.id.is_empty());
        assert_eq!(mock.stats().requests(), 1);

        // Unknown routes reach the upstream as they are, and its answer comes back.
        let missing = HttpTarget::pooled(&format!("http://{}/v1/nope", proxy.addr()))
            .expect("url parses")
            .call(Bytes::from_static(b"{}"), false)
            .await;
        assert_eq!(missing.status, Some(404));
        drop(proxy);
        mock.shutdown().await;
    }
}
