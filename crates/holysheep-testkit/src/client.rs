//! HTTP helpers: the mock upstream on loopback, a plain client, requests with JSON bodies, and
//! [`Reply`], a whole answer read into memory.

use std::error::Error;
use std::fmt::Display;
use std::io;

use bytes::Bytes;
use holysheep_client::HolySheepClient;
use holysheep_core::error::{ErrorBody, chain};
use holysheep_mock::{MockConfig, MockServer};
use http::{Extensions, HeaderMap, Method, Request, Response, StatusCode, header};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::sse::{sse_chunks, stream_content};

/// The key tests configure the mock upstream with, and the clients of [`upstream_client`] send.
pub const UPSTREAM_KEY: &str = "sk-upstream-test";

/// Starts a mock upstream on an ephemeral loopback port.
pub async fn start_mock(cfg: MockConfig) -> MockServer {
    MockServer::start(cfg)
        .await
        .expect("the mock upstream starts on loopback")
}

/// A `HolySheepClient` builder pointed at `mock` with [`UPSTREAM_KEY`], to adjust before
/// building.
pub fn upstream_builder(mock: &MockServer) -> holysheep_client::Builder {
    HolySheepClient::builder()
        .base_url(mock.base_url())
        .api_key(UPSTREAM_KEY)
}

/// A `HolySheepClient` pointed at `mock` with [`UPSTREAM_KEY`]: the inner service layer tests
/// wrap.
pub fn upstream_client(mock: &MockServer) -> HolySheepClient {
    upstream_builder(mock)
        .build()
        .expect("a client for the mock upstream")
}

/// A plain pooled HTTP/1.1 client, with no layers.
pub type TestClient = Client<HttpConnector, Full<Bytes>>;

/// A new plain client (its own connection pool).
pub fn http_client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A request with a JSON body (`content-type: application/json`), sending
/// `Authorization: Bearer <key>` when a key is given. `uri` may be relative, as a layer sees
/// requests, or absolute, as a plain client sends them.
pub fn json_request(
    method: Method,
    uri: &str,
    key: Option<&str>,
    body: impl Into<Bytes>,
) -> Request<Full<Bytes>> {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(key) = key {
        req = req.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    req.body(Full::new(body.into()))
        .unwrap_or_else(|e| panic!("a valid request to {uri}: {e}"))
}

/// A `POST /chat/completions` request with a JSON body, relative as a gateway hands it to the
/// client (which adds the base URL and the key).
pub fn chat_request(body: &Value) -> Request<Full<Bytes>> {
    json_request(Method::POST, "/chat/completions", None, body.to_string())
}

/// `req` with header `name` set to `value` (replacing any value it had).
pub fn with_header<B>(mut req: Request<B>, name: &'static str, value: &'static str) -> Request<B> {
    req.headers_mut()
        .insert(name, http::HeaderValue::from_static(value));
    req
}

/// Sends `req` on `client` and reads the whole answer.
pub async fn send(client: &TestClient, req: Request<Full<Bytes>>) -> Reply {
    let res = client
        .request(req)
        .await
        .expect("the request gets an answer");
    Reply::from_response(res).await
}

/// POSTs `body` as JSON to `url` with a new client, sending `Authorization: Bearer <key>` when
/// a key is given, and reads the whole answer.
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
    send(
        client,
        json_request(Method::POST, url, key, body.to_string()),
    )
    .await
}

/// POSTs a chat request to `{base_url}/chat/completions`.
pub async fn post_chat(base_url: &str, key: Option<&str>, body: &Value) -> Reply {
    post_json(&format!("{base_url}/chat/completions"), key, body).await
}

/// A whole HTTP answer: status, headers, extensions and the collected body.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The response extensions (what the layers attached: cache outcome, attempts, …).
    pub extensions: Extensions,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// Reads a response to its end; panics when the body fails.
    pub async fn from_response<B>(res: Response<B>) -> Self
    where
        B: Body,
        B::Error: Display,
    {
        let (parts, body) = res.into_parts();
        let body = match body.collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) => panic!("the whole body arrives, but: {e}"),
        };
        Self {
            status: parts.status,
            headers: parts.headers,
            extensions: parts.extensions,
            body,
        }
    }

    /// The body as JSON; panics with the body text when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The body as an OpenAI-style error; panics with the body text when it is not one.
    pub fn error(&self) -> ErrorBody {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not an error body ({e}): {}", self.text()))
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header as text.
    pub fn header(&self, name: impl header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The content of a chat answer: `choices[0].message.content` of a JSON answer, or the
    /// joined `delta.content` of a streamed one.
    pub fn content(&self) -> String {
        if self
            .header(header::CONTENT_TYPE)
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

/// The kinds of every `io::Error` in `error`'s source [`chain`], outermost first.
pub fn io_error_kinds(error: &(dyn Error + 'static)) -> Vec<io::ErrorKind> {
    chain(error)
        .filter_map(|e| e.downcast_ref::<io::Error>())
        .map(io::Error::kind)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::{chat_body, expected_content, stream_body};

    #[tokio::test]
    async fn requests_carry_the_key_and_replies_read_whole() {
        let mock = start_mock(MockConfig::default().api_key(UPSTREAM_KEY)).await;
        let client = http_client();
        let models = json_request(Method::GET, &mock.url("/models"), Some(UPSTREAM_KEY), "");
        let listed = send(&client, with_header(models, "x-test", "1")).await;
        assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());
        assert_eq!(listed.json()["object"], "list");
        let seen = mock.stats().last_request().expect("recorded");
        assert_eq!(seen.headers["x-test"], "1");
        assert_eq!(seen.headers[header::CONTENT_TYPE], "application/json");

        let streamed = stream_body("gpt-4.1", "hello", false);
        let url = mock.url("/chat/completions");
        let reply = post_json_with(&client, &url, Some(UPSTREAM_KEY), &streamed).await;
        assert_eq!(reply.content(), expected_content(&streamed));

        let refused = post_json(&url, Some("sk-other"), &chat_body("gpt-4.1", "hello")).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            refused.error().error.code.as_deref(),
            Some("invalid_api_key")
        );
        mock.shutdown().await;
    }

    #[test]
    fn io_kinds_follow_the_source_chain() {
        #[derive(Debug)]
        struct Outer(io::Error);
        impl Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("outer")
            }
        }
        impl Error for Outer {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        let error = Outer(io::Error::from(io::ErrorKind::TimedOut));
        assert_eq!(io_error_kinds(&error), [io::ErrorKind::TimedOut]);
        assert!(io_error_kinds(&std::fmt::Error).is_empty());
    }
}
