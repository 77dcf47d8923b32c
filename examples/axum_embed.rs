//! Your own axum app, with the HolySheep layers mounted on its own route.
//!
//! The gateway binary is one way to use the layers; this is the other: an application builds
//! the recommended stack (`holysheep::Stack`) around `HolySheepClient` and calls it from a
//! handler of its own. Here `GET /ask?q=...` turns a question into a chat completion request and answers
//! with plain text.
//!
//! ```text
//! cargo run --example axum_embed
//! curl 'http://127.0.0.1:3000/ask?q=What+is+a+tower+layer%3F'
//! curl 'http://127.0.0.1:3000/ask?q=What+is+a+tower+layer%3F'   # again: served from the cache
//! ```
//!
//! With `HOLYSHEEP_API_KEY` set it asks HolySheep (or `HOLYSHEEP_BASE_URL`). Without a key it
//! needs no network and no account: it starts the mock upstream from `holysheep-mock`
//! in-process and asks that, like the gateway's `--demo` mode. `LISTEN` changes the address
//! (default `127.0.0.1:3000`). `GET /metrics` shows what the layers measured, in Prometheus
//! text. Stop it with Ctrl-C.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use bytes::Bytes;
use holysheep::Stack;
use holysheep::cache::{CacheLayer, MemoryStore};
use holysheep::client::HolySheepClient;
use holysheep::retry::RetryLayer;
use holysheep_core::BoxError;
use holysheep_core::chat::ChatCompletion;
use holysheep_core::error::error_response;
use holysheep_core::signal::{CacheOutcome, RequestModel};
use holysheep_mock::{MockConfig, MockServer};
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use serde_json::json;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

/// The model `/ask` uses.
const MODEL: &str = "gpt-4.1";

/// The stack as the handler sees it: request in, buffered answer out.
type Llm = BoxCloneSyncService<http::Request<Full<Bytes>>, http::Response<Bytes>, BoxError>;

#[derive(Deserialize)]
struct Ask {
    q: String,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Without a key, a mock upstream in this process stands in for HolySheep.
    let api_key = std::env::var("HOLYSHEEP_API_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty());
    let (mock, base_url, key) = match api_key {
        Some(key) => {
            let base_url = std::env::var("HOLYSHEEP_BASE_URL")
                .ok()
                .filter(|u| !u.trim().is_empty())
                .unwrap_or_else(|| holysheep::client::DEFAULT_BASE_URL.to_owned());
            (None, base_url, key)
        }
        None => {
            let key = "sk-embed-demo".to_owned();
            let mock = MockServer::start(MockConfig::default().api_key(key.clone())).await?;
            let base_url = mock.base_url();
            (Some(mock), base_url, key)
        }
    };

    // The metrics go to a Prometheus recorder this app serves at /metrics.
    let prometheus = holysheep::metrics::prometheus::install()?;

    // The recommended stack, with this app's own cache size and TTL and fewer retries.
    let stack = Stack::builder()
        .client(
            HolySheepClient::builder()
                .base_url(base_url.clone())
                .api_key(key),
        )
        .cache(CacheLayer::new(MemoryStore::new(64 << 20)).ttl(Duration::from_secs(600)))
        .retry(RetryLayer::new().max_retries(2))
        .build()?;
    let llm: Llm = BoxCloneSyncService::new(ServiceExt::<http::Request<Full<Bytes>>>::and_then(
        stack,
        buffer_answer,
    ));

    let app = Router::new()
        .route("/ask", get(ask))
        .with_state(llm)
        .route("/metrics", get(move || async move { prometheus.render() }));

    let listen: SocketAddr = std::env::var("LISTEN")
        .ok()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 3000)));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    println!("asking {base_url}");
    println!("try: curl 'http://{addr}/ask?q=What+is+a+tower+layer%3F'");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    if let Some(mock) = mock {
        mock.shutdown().await;
    }
    Ok(())
}

/// Collects the answer's body; this app wants whole answers, not a stream.
async fn buffer_answer<B>(response: http::Response<B>) -> Result<http::Response<Bytes>, BoxError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.map_err(Into::into)?.to_bytes();
    Ok(http::Response::from_parts(parts, bytes))
}

/// `GET /ask?q=...`: one question, one answer as text.
async fn ask(State(llm): State<Llm>, Query(Ask { q }): Query<Ask>) -> (StatusCode, String) {
    let body = json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": q}],
        "temperature": 0,
    });
    let mut request = match http::Request::post("/chat/completions")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
    {
        Ok(request) => request,
        Err(error) => return (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()),
    };
    request
        .extensions_mut()
        .insert(RequestModel(std::sync::Arc::from(MODEL)));

    let response = match llm.oneshot(request).await {
        Ok(response) => response,
        // The same status and OpenAI-style body the gateway answers a failed call with.
        Err(error) => {
            let answer = error_response(&*error);
            let body = String::from_utf8_lossy(answer.body()).into_owned();
            return (answer.status(), body);
        }
    };
    if !response.status().is_success() {
        return (
            StatusCode::BAD_GATEWAY,
            format!(
                "upstream answered {}: {}",
                response.status(),
                String::from_utf8_lossy(response.body())
            ),
        );
    }
    let cache = response
        .extensions()
        .get::<CacheOutcome>()
        .map_or("none", |outcome| outcome.as_str());
    match serde_json::from_slice::<ChatCompletion>(response.body()) {
        Ok(completion) => {
            let text = completion
                .choices
                .first()
                .and_then(|choice| choice.message.text())
                .unwrap_or_default();
            (StatusCode::OK, format!("{text}\n(cache: {cache})\n"))
        }
        Err(error) => (
            StatusCode::BAD_GATEWAY,
            format!("the upstream's answer is not a chat completion: {error}"),
        ),
    }
}
