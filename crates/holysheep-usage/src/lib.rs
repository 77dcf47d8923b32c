//! `IncludeUsageLayer`: every streamed request reports its token usage to the layers that count
//! it, and a client that did not ask for usage never sees it.
//!
//! An OpenAI-compatible upstream reports the tokens of a streamed answer only when the request
//! says `stream_options.include_usage: true`. Most clients do not, so a stream looks free to
//! whatever counts spend: the metrics, a quota, a cost report. This layer asks for usage on
//! every streamed `POST …/chat/completions` and `…/completions` request, and for a client that
//! did not ask, takes it back out of the answer: the usage-only chunk is dropped and the
//! `"usage":null` member OpenAI adds to every other chunk is cut out, every other byte kept as
//! the upstream sent it. The stream that client sees is the one it would have got without the
//! layer.
//!
//! # Where it goes
//!
//! **Outermost**, above everything that counts tokens or keeps answers:
//!
//! ```text
//! IncludeUsageLayer → MetricsLayer → (QuotaLayer) → CacheLayer → RetryLayer → PoolLimitLayer → client
//! ```
//!
//! So every layer below sees full streams with their usage, and needs no code of its own for
//! it; and the cache stores each stream with its usage chunk and serves askers and non-askers
//! from one entry (its key leaves `stream_options` out: it only frames the answer), this layer
//! taking the chunk out again for those who did not ask. `holysheep::Stack` puts it there.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use holysheep_usage::IncludeUsageLayer;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let upstream = service_fn(|req: Request<Full<Bytes>>| async move {
//!     let body = req.into_body().collect().await?.to_bytes();
//!     // The layer asked for usage on the client's behalf.
//!     assert!(body.starts_with(br#"{"stream_options":{"include_usage":true},"#));
//!     let stream = concat!(
//!         "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
//!         "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1}}\n\n",
//!         "data: [DONE]\n\n",
//!     );
//!     Ok::<_, std::convert::Infallible>(
//!         Response::builder()
//!             .header("content-type", "text/event-stream")
//!             .body(Full::new(Bytes::from(stream)))
//!             .unwrap(),
//!     )
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(IncludeUsageLayer::new())
//!     // .layer(MetricsLayer::new()) and the rest: they see the usage chunk.
//!     .service(upstream);
//!
//! let request = Request::post("/v1/chat/completions")
//!     .body(Full::new(Bytes::from(r#"{"model":"gpt-4.1","stream":true,"messages":[]}"#)))?;
//! let answer = svc.oneshot(request).await?.into_body().collect().await?.to_bytes();
//! // The client did not ask: no usage in what it gets.
//! assert_eq!(
//!     answer,
//!     "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n"
//! );
//! # Ok(())
//! # }
//! ```
//!
//! # What is changed, exactly
//!
//! - Requests: only a `POST` to a path ending in `/completions` whose JSON body has
//!   `"stream": true`. `stream_options` is added, or its `include_usage` set to `true`, by an
//!   edit in place: the rest of the body keeps its bytes. A client that set `include_usage:
//!   true` itself, and every other request, is passed on untouched.
//! - Answers: only a `200` `text/event-stream` answer to a request the layer changed. Each event
//!   whose one `data:` line is a JSON object loses its top-level `usage` member (with the comma
//!   that joined it); an event whose `choices` is `[]` and whose `usage` is not `null` (the
//!   usage-only chunk) is dropped. Comments, `[DONE]`, other fields and events pass as they
//!   are. An event is held back until it is whole (events are small); one longer than
//!   [`max_event_bytes`](IncludeUsageLayer::max_event_bytes) makes the rest of its stream pass
//!   unchanged.
//! - Providers that put usage on the last content chunk instead of a chunk of its own get that
//!   member cut out the same way.
//!
//! The request body is read whole before the inner service is called, and reaches it as
//! `Full<Bytes>`.

mod json;
mod request;
mod service;
mod strip;

#[cfg(test)]
mod tests;

pub use service::{IncludeUsage, IncludeUsageLayer, ResponseBody, ResponseFuture};

/// The error type of the layer: the inner service's error or the request body's, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
