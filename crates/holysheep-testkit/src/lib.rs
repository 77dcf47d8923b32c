//! Test support shared by the HolySheep crates' tests, benches and the load harness.
//!
//! Not published: every crate of the workspace may dev-depend on it, so it depends on none of
//! the layer crates (cache, retry, pool limit, metrics) nor on the root package, only on
//! `holysheep-core`, `holysheep-client` and `holysheep-mock`.
//!
//! - [`redis`]: a throwaway `redis-server` on a free loopback port, or a Redis Cluster, killed on
//!   drop (`REDIS_URL` names an existing server instead).
//! - Chat fixtures: request bodies ([`chat_body`], [`stream_body`]), requests
//!   ([`chat_request`], [`json_request`]), what the mock answers them with
//!   ([`expected_content`], [`expected_usage`], [`mock_answer`]), and answers with any text as
//!   completion JSON or stream chunks ([`ChatAnswer`], the mock's own generator, and
//!   [`stream_events`]).
//! - SSE readers: [`read_sse`], [`sse_chunks`], [`stream_content`].
//! - HTTP: the mock upstream ([`start_mock`]) and a client for it ([`upstream_client`]), a plain
//!   hyper-util client ([`http_client`], [`post_json`], [`post_chat`], [`send`]), [`Reply`], a
//!   whole answer read into memory, and [`wait_until`] for what a test can only poll.
//!
//! # Example
//!
//! A mock upstream on loopback, asked once as JSON and once as a stream:
//!
//! ```
//! use holysheep_testkit::{
//!     MockConfig, UPSTREAM_KEY, chat_body, expected_content, post_chat, sse_chunks, start_mock,
//!     stream_body,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mock = start_mock(MockConfig::default().api_key(UPSTREAM_KEY)).await;
//!
//! let body = chat_body("gpt-4.1", "How do I keep connections warm?");
//! let reply = post_chat(&mock.base_url(), Some(UPSTREAM_KEY), &body).await;
//! assert_eq!(reply.status, 200);
//! assert_eq!(reply.content(), expected_content(&body));
//!
//! let streamed = stream_body("gpt-4.1", "How do I keep connections warm?", true);
//! let reply = post_chat(&mock.base_url(), Some(UPSTREAM_KEY), &streamed).await;
//! let (chunks, done) = sse_chunks(&reply.body);
//! assert!(done && chunks.len() > 1);
//! assert_eq!(reply.content(), expected_content(&body));
//! mock.shutdown().await;
//! # }
//! ```
//!
//! A Redis of its own for one test, gone when dropped:
//!
//! ```
//! use holysheep_testkit::redis::RedisServer;
//!
//! let server = RedisServer::from_env_or_start().expect("redis-server on PATH, or REDIS_URL");
//! assert!(server.url().starts_with("redis://"));
//! ```

mod chat;
mod client;
pub mod redis;
mod sse;
mod wait;

pub use chat::{chat_body, expected_content, expected_usage, mock_answer, stream_body};
pub use client::{
    Reply, TestClient, UPSTREAM_KEY, chat_request, http_client, io_error_kinds, json_request,
    post_chat, post_json, post_json_with, send, start_mock, upstream_builder, upstream_client,
    with_header,
};
pub use holysheep_mock::{ChatAnswer, MockConfig, MockServer};
pub use sse::{read_sse, sse_chunks, stream_content, stream_events};
pub use wait::wait_until;
