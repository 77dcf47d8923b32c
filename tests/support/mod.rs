//! Helpers shared by the root integration tests: a mock upstream on loopback, a plain
//! hyper-util client, and small readers for JSON and SSE answers.
//!
//! Each test file uses a subset, hence the `dead_code` allowance (and `unreachable_pub`: the
//! items are `pub` for the test files, not for another crate). Add new shared helpers at the
//! end of this file rather than copying them into test files.
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use holysheep_core::sse::SseParser;
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

pub use holysheep_mock::{MockConfig, MockServer};

/// The key tests configure the mock upstream with.
pub const UPSTREAM_KEY: &str = "sk-upstream-test";

/// Starts a mock upstream on an ephemeral loopback port.
pub async fn start_mock(cfg: MockConfig) -> MockServer {
    MockServer::start(cfg)
        .await
        .expect("the mock upstream starts on loopback")
}

/// A plain pooled HTTP/1.1 client, with no layers.
pub type TestClient = Client<HttpConnector, Full<Bytes>>;

/// A new plain client (its own connection pool).
pub fn http_client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A non-streamed chat request body for one user message.
pub fn chat_body(model: &str, prompt: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": prompt}]})
}

/// A streamed chat request body for one user message, asking for usage in the last chunk.
pub fn stream_body(model: &str, prompt: &str) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": true,
        "stream_options": {"include_usage": true}
    })
}

/// A whole HTTP answer: status, headers and the collected body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON; panics with the body text when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The content of a chat answer: `choices[0].message.content` of a JSON answer, or the
    /// joined `delta.content` of a streamed one.
    pub fn content(&self) -> String {
        if self
            .header(header::CONTENT_TYPE.as_str())
            .is_some_and(|t| t.starts_with("text/event-stream"))
        {
            stream_content(&sse_chunks(&self.body).0)
        } else {
            self.json()["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }
    }
}

/// POSTs `body` as JSON to `url` with a new client, sending `Authorization: Bearer <key>` when
/// a key is given, and collects the answer.
pub async fn post_json(url: &str, key: Option<&str>, body: &Value) -> Reply {
    post_json_with(&http_client(), url, key, body).await
}

/// Like [`post_json`], on a given client (to share its connection pool).
pub async fn post_json_with(
    client: &TestClient,
    url: &str,
    key: Option<&str>,
    body: &Value,
) -> Reply {
    let mut req = Request::post(url).header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = key {
        req = req.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let req = req
        .body(Full::from(body.to_string()))
        .expect("a valid request");
    let res = client
        .request(req)
        .await
        .expect("the request gets an answer");
    let (parts, body) = res.into_parts();
    let body = body
        .collect()
        .await
        .expect("the whole body arrives")
        .to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// POSTs a chat request to `{base_url}/chat/completions`.
pub async fn post_chat(base_url: &str, key: Option<&str>, body: &Value) -> Reply {
    post_json(&format!("{base_url}/chat/completions"), key, body).await
}

/// The JSON chunks of an SSE body, and whether it ended with `data: [DONE]`.
pub fn sse_chunks(body: &[u8]) -> (Vec<Value>, bool) {
    let mut parser = SseParser::new();
    parser.push(body);
    let mut chunks = Vec::new();
    let mut done = false;
    while let Some(event) = parser.next_event() {
        if event.is_done() {
            done = true;
        } else {
            chunks.push(
                serde_json::from_str(&event.data)
                    .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {}", event.data)),
            );
        }
    }
    (chunks, done)
}

/// The joined `choices[0].delta.content` of streamed chunks.
pub fn stream_content(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

/// A `HolySheepClient` pointed at the mock upstream with the test key: the inner service the
/// layer tests wrap.
#[cfg(feature = "client")]
pub fn upstream_client(mock: &MockServer) -> holysheep_client::HolySheepClient {
    holysheep_client::HolySheepClient::builder()
        .base_url(mock.base_url())
        .api_key(UPSTREAM_KEY)
        .build()
        .expect("a client for the mock upstream")
}

/// A `POST /chat/completions` request with a JSON body, relative as the gateway sends it (the
/// client adds the base URL and the key).
pub fn chat_request(body: &Value) -> Request<Full<Bytes>> {
    Request::post("/chat/completions")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::from(body.to_string()))
        .expect("a valid request")
}
pub mod redis;
