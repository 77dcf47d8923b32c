//! `PoolLimitLayer`: bounds in-flight upstream requests in total and per host (100 / 30, as the
//! reference Python client's pool does), lets a request wait briefly for a slot, then sheds it
//! with a typed [`Overloaded`] error instead of letting the queue, and the latency, grow without
//! bound.
//!
//! A request holds its slots until its response body ends ([`PermitBody`]), so a long
//! Server-Sent-Events stream counts as in flight for as long as it runs; the slots are freed at
//! the end of the stream, on a body error, or when the caller drops the response.
//!
//! Each response carries a [`PoolSlot`](holysheep_core::signal::PoolSlot) extension: a layer
//! above that reads a body on after its caller went away (`CacheLayer`, to store the answer)
//! learns from it whether other requests wait for a slot, and marks the slot as held for no
//! caller meanwhile, which [`PoolLimitHandle::detached`] and the gauge [`DETACHED_SLOTS`] count.
//!
//! It works on any `http::Request<B>`, so it wraps the HolySheep client as well as axum or
//! tonic services. Readiness is honest for callers that use backpressure, and calls made
//! without readiness still queue under the same bounds; see [`PoolLimit`]. A
//! [`PoolLimitHandle`] exposes the counters (in flight, queued, shed, current limit) for
//! metrics.
//!
//! A shed is the [`Overloaded`] error of `holysheep-core`, which the other layers know:
//! `MetricsLayer` counts it in `holysheep_shed_total` and
//! `holysheep_errors_total{class="overload"}` with no setup, `RetryLayer` does not retry it, and
//! [`error_response`](holysheep_core::error::error_response) answers it with `503` and
//! `Retry-After`.
//!
//! The layer is configuration plus one pool, created when the first service is built or the
//! first handle taken, and shared by everything built from the layer and its clones; see
//! [`PoolLimitLayer`](PoolLimitLayer#configuration-and-the-pool) for the exact rules.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use holysheep_pool_limit::PoolLimitLayer;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let upstream = service_fn(|_req: Request<Full<Bytes>>| async {
//!     Ok::<_, std::io::Error>(Response::new(Full::new(Bytes::from_static(b"{}"))))
//! });
//! let layer = PoolLimitLayer::new(100, 30).queue_timeout(Duration::from_secs(5));
//! let handle = layer.handle();
//! let svc = ServiceBuilder::new().layer(layer).service(upstream);
//!
//! let res = svc.oneshot(Request::new(Full::new(Bytes::new()))).await?;
//! assert_eq!(handle.in_flight(), 1); // the body is not read yet
//! let body = res.into_body().collect().await?.to_bytes();
//! assert_eq!(body, "{}");
//! assert_eq!(handle.in_flight(), 0);
//! # Ok(())
//! # }
//! ```
//!
//! # Adaptive limit
//!
//! A good cap is hard to guess: too high and a struggling upstream gets more load than it can
//! serve, too low and capacity is wasted. [`PoolLimitLayer::adaptive`] lets the total cap find
//! its level with [`Aimd`], the additive-increase / multiplicative-decrease rule of TCP
//! congestion control (RFC 5681) as Netflix's `concurrency-limits` applies it to requests:
//!
//! - it starts at the configured total cap, which stays its ceiling;
//! - an overload signal (an inner error such as a timeout or reset, an answer a retry would
//!   repeat by its [`AnswerClass`](holysheep_core::error::AnswerClass) — `429`, `503`, `5xx`,
//!   a gRPC `UNAVAILABLE` — or latency to the response head climbing past twice its long-term
//!   average, or past an optional fixed threshold) multiplies it by 0.9, once per congestion
//!   event;
//! - good answers add 1 per window of `limit` answers, down to a floor of 1 by default.
//!
//! Lowering never cuts a request off: free slots are withdrawn at once and the rest as their
//! requests end, so in flight falls to the new limit as it drains. [`PoolLimitHandle::limit`]
//! reports the limit in force. Only the total cap adapts; see [`Aimd`] for the per-host caveat
//! and every default. Without `adaptive` the pool pays nothing for it.
//!
//! ```
//! use std::time::Duration;
//! use holysheep_pool_limit::{Aimd, PoolLimitLayer};
//!
//! let layer = PoolLimitLayer::new(100, 100).adaptive(
//!     Aimd::default()
//!         .min_limit(4)
//!         .latency_threshold(Some(Duration::from_secs(30))),
//! );
//! let handle = layer.handle();
//! assert_eq!((handle.limit(), handle.max_limit()), (100, 100));
//! ```
//!

mod adaptive;
mod body;
pub mod error;
pub mod future;
mod layer;
mod service;
mod state;

pub use adaptive::Aimd;
pub use body::PermitBody;
pub use error::{Overloaded, is_overloaded};
pub use layer::PoolLimitLayer;
pub use service::PoolLimit;
pub use state::{DETACHED_SLOTS, PoolLimitHandle};

#[cfg(test)]
mod tests;
