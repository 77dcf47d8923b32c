//! A fake OpenAI-compatible upstream for tests, benches and demos.
//!
//! `holysheep-mock` is the HolySheep API as the layers see it, on loopback: a hyper server
//! (HTTP/1.1 and cleartext HTTP/2 on one port) that answers `POST /v1/chat/completions` (JSON,
//! or Server-Sent Events with `"stream": true`), `POST /v1/embeddings` and `GET /v1/models`,
//! checks the bearer key, and can be slow, flaky or stingy on demand — at a fixed rate, with a
//! seedable random generator, or exactly for the next N requests — while counting everything it
//! sees.
//!
//! Answers are deterministic: the same model and messages always get the same text and the same
//! token counts ([`expected_content`], [`expected_usage`]), so a test can compare what came
//! through a cache or a retry with what the upstream would have said. Each answer still gets a
//! fresh `id`, so a test can tell a cached answer from a new one. [`ChatAnswer`] renders an
//! answer (the mock's, or any text) as completion JSON or as stream chunks, for tests and benches
//! that need the shapes without a server.
//!
//! # Example
//!
//! Start a mock on an ephemeral port and ask it one question:
//!
//! ```
//! use bytes::Bytes;
//! use holysheep_mock::{MockConfig, MockServer};
//! use http_body_util::{BodyExt, Full};
//! use hyper_util::{client::legacy::Client, rt::TokioExecutor};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let mock = MockServer::start(MockConfig::default().api_key("sk-upstream")).await?;
//!
//! let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
//! let req = http::Request::post(mock.url("/chat/completions"))
//!     .header("authorization", "Bearer sk-upstream")
//!     .header("content-type", "application/json")
//!     .body(Full::from(
//!         r#"{"model":"gpt-4.1","messages":[{"role":"user","content":"hello"}]}"#,
//!     ))?;
//! let res = client.request(req).await?;
//! assert_eq!(res.status(), 200);
//!
//! let body = res.into_body().collect().await?.to_bytes();
//! let answer: serde_json::Value = serde_json::from_slice(&body)?;
//! assert_eq!(answer["object"], "chat.completion");
//! assert_eq!(answer["choices"][0]["finish_reason"], "stop");
//! assert_eq!(mock.stats().chat_requests(), 1);
//! assert_eq!(
//!     mock.stats().last_request().unwrap().authorization(),
//!     Some("Bearer sk-upstream")
//! );
//!
//! // Faults on demand, mid-test: the next request gets a 503.
//! mock.fail_next(1, http::StatusCode::SERVICE_UNAVAILABLE);
//! let req = http::Request::get(mock.url("/models"))
//!     .header("authorization", "Bearer sk-upstream")
//!     .body(Full::default())?;
//! assert_eq!(client.request(req).await?.status(), 503);
//! mock.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # What happens to a request
//!
//! 1. It is counted (path, in flight) and recorded with its headers and body
//!    ([`Stats::last_request`]).
//! 2. If it is the first request on its TCP connection, it waits
//!    [`cold_penalty`](MockConfig::cold_penalty).
//! 3. The key is checked: a configured [`api_key`](MockConfig::api_key) must come as
//!    `Authorization: Bearer <key>`, or the answer is a 401.
//! 4. It waits the configured [`latency`](MockConfig::latency).
//! 5. A fault may replace the answer: forced ones first ([`MockServer::reset_next`], then
//!    [`MockServer::fail_next`]), then random ones by rate (reset, 429, 500/502/503).
//! 6. The route answers; a streamed chat answer may be cut off
//!    ([`truncate_rate`](MockConfig::truncate_rate), [`MockServer::truncate_next`]).
//!
//! Every response carries `x-mock-connection: <n>`, the number of the TCP connection it came on,
//! so a test can see connection reuse. Unknown routes get a 404 and malformed bodies a 400, both
//! with OpenAI-style error bodies.
//!
//! The `mock_upstream` example of the root package runs the same server as a binary.

mod answer;
mod body;
mod config;
mod conn;
mod embedding;
mod faults;
mod handler;
mod server;
mod stats;

pub use answer::{ChatAnswer, expected_content, expected_usage};
pub use config::{DEFAULT_MODELS, Latency, MockConfig};
pub use embedding::{EmbeddingMode, word_overlap_embedding};
pub use server::MockServer;
pub use stats::{RecordedRequest, Stats};

/// The name of the response header that carries the number of the TCP connection a response
/// came on (1 for the server's first connection).
pub const CONNECTION_HEADER: &str = handler::CONNECTION_HEADER;
