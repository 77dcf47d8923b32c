//! `RetryLayer`: retries transient failures of an HTTP service with exponential backoff and full
//! jitter, honours `Retry-After`, keeps one deadline across all attempts, and spends a retry
//! budget shared by every clone so an outage cannot multiply the load on the upstream.
//!
//! It works on any `http::Request<B>` whose body is `Clone` (buffered JSON such as `Bytes`), so
//! it wraps the HolySheep client as well as axum or tonic services; [`BufferRequestLayer`]
//! buffers a streaming body for it. It is built on [`tower::retry::Policy`] and
//! [`tower::retry::budget::TpsBudget`].
//!
//! What is retried is decided by a [`Classify`] implementation. [`DefaultClassify`] retries
//! what `holysheep-core`'s one classification of failures calls transient: connect faults and
//! timeouts before any answer ([`ErrorClass`](holysheep_core::error::ErrorClass)), and the
//! answers `408`, `429`, `500`, `502`, `503`, `504` and other server errors
//! ([`AnswerClass`](holysheep_core::error::AnswerClass)). [`GrpcClassify`] retries gRPC calls
//! only when the server turned them away. Once a response is returned it is final, so a stream
//! that fails midway is never replayed. Errors that are not transient (such as the pool
//! limit's [`Overloaded`](holysheep_core::error::Overloaded) shed) are returned at once.
//!
//! Each response carries [`Attempts`](holysheep_core::signal::Attempts) in its extensions
//! (`Attempts(1)` when the first try answered), and optionally an `x-holysheep-attempts` header.
//! When the deadline passes with an attempt in flight, the call fails with
//! [`DeadlineExceeded`]; see [`is_deadline`].
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use holysheep_core::signal::Attempts;
//! use holysheep_retry::RetryLayer;
//! use http::{Request, Response, StatusCode};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), holysheep_core::BoxError> {
//! let upstream = service_fn(|_req: Request<Bytes>| async {
//!     Ok::<_, std::io::Error>(Response::new(Bytes::from_static(b"{}")))
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(
//!         RetryLayer::new()
//!             .max_retries(2)
//!             .deadline(Duration::from_secs(30)),
//!     )
//!     .service(upstream);
//!
//! let res = svc.oneshot(Request::new(Bytes::from_static(b"{}"))).await?;
//! assert_eq!(res.status(), StatusCode::OK);
//! assert_eq!(res.extensions().get::<Attempts>(), Some(&Attempts(1)));
//! # Ok(())
//! # }
//! ```
//!
//! # gRPC and tonic
//!
//! A tonic client `Channel` is a tower service over `http::Request<tonic::body::Body>`, so the
//! HolySheep layers wrap it like any HTTP client. Two things differ, and this crate has one
//! piece for each:
//!
//! - tonic's request body streams, and a retry replays the request: [`BufferRequestLayer`],
//!   above the retry layer, collects each (unary) request into a `Full<Bytes>` up to a bound,
//!   and a `map_request` below it turns that back into a tonic body for every attempt;
//! - a gRPC failure is usually an HTTP `200` whose `grpc-status` says what went wrong, and a
//!   gRPC method may not be safe to run twice: [`GrpcClassify`] retries trailers-only
//!   `UNAVAILABLE` and `RESOURCE_EXHAUSTED` answers (the server turned the call away) and
//!   transport faults, nothing else.
//!
//! ```
//! # // Stands in for `tonic::body::Body`, so this example builds without tonic.
//! # mod tonic {
//! #     pub mod body {
//! #         use std::pin::Pin;
//! #         use std::task::{Context, Poll};
//! #         use bytes::Bytes;
//! #         use http_body::Frame;
//! #         use http_body_util::{BodyExt, combinators::UnsyncBoxBody};
//! #         use tower::BoxError;
//! #         pub struct Body(UnsyncBoxBody<Bytes, BoxError>);
//! #         impl Body {
//! #             pub fn new<B>(body: B) -> Self
//! #             where
//! #                 B: http_body::Body<Data = Bytes> + Send + 'static,
//! #                 B::Error: Into<BoxError>,
//! #             {
//! #                 Self(body.map_err(Into::into).boxed_unsync())
//! #             }
//! #         }
//! #         impl http_body::Body for Body {
//! #             type Data = Bytes;
//! #             type Error = BoxError;
//! #             fn poll_frame(
//! #                 mut self: Pin<&mut Self>,
//! #                 cx: &mut Context<'_>,
//! #             ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
//! #                 Pin::new(&mut self.0).poll_frame(cx)
//! #             }
//! #         }
//! #     }
//! # }
//! use std::time::Duration;
//! use bytes::Bytes;
//! use holysheep_retry::{BufferRequestLayer, GrpcClassify, RetryLayer};
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! // In an app: `let channel = Endpoint::from_static("http://[::1]:50051").connect().await?;`
//! let channel = service_fn(|_req: Request<tonic::body::Body>| async {
//!     Ok::<_, tower::BoxError>(Response::new(Full::new(Bytes::from_static(b"answer"))))
//! });
//! let svc = ServiceBuilder::new()
//!     // .layer(MetricsLayer::new()) here counts every call once, retries included.
//!     .layer(BufferRequestLayer::new(64 * 1024))
//!     .layer(
//!         RetryLayer::new()
//!             .classify(GrpcClassify)
//!             .deadline(Duration::from_secs(10)),
//!     )
//!     // .layer(PoolLimitLayer::new(100, 100)) here bounds the calls on the channel.
//!     .map_request(|r: Request<Full<Bytes>>| r.map(tonic::body::Body::new))
//!     .service(channel);
//! // `HealthClient::new(svc)` (any generated tonic client) now calls through the layers.
//!
//! let call = Request::new(tonic::body::Body::new(Full::new(Bytes::from_static(b"ping"))));
//! let res = svc.oneshot(call).await?;
//! assert_eq!(res.status(), 200);
//! # Ok(())
//! # }
//! ```

pub mod buffer;
mod classify;
pub mod error;
pub mod future;
mod layer;
mod policy;
mod service;

pub use buffer::{BufferRequest, BufferRequestLayer};
pub use classify::{Classify, DefaultClassify, GrpcClassify};
pub use error::{DeadlineExceeded, is_deadline};
pub use layer::RetryLayer;
pub use policy::{ATTEMPTS_HEADER, RetryPolicy};
pub use service::Retry;
/// The budget type [`RetryLayer::shared_budget`] takes, re-exported from tower.
pub use tower::retry::budget::TpsBudget;

#[cfg(test)]
mod tests;
