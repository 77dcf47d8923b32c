//! `PoolLimitLayer`: bounds in-flight upstream requests in total and per host (the seed's 100 /
//! 30), lets a request wait briefly for a slot, then sheds it with a typed [`Overloaded`]
//! error instead of letting the queue, and the latency, grow without bound.
//!
//! A request holds its slots until its response body ends ([`PermitBody`]), so a long
//! Server-Sent-Events stream counts as in flight for as long as it runs; the slots are freed at
//! the end of the stream, on a body error, or when the caller drops the response.
//!
//! It works on any `http::Request<B>`, so it wraps the HolySheep client as well as axum or
//! tonic services. Readiness is honest for callers that use backpressure, and calls made
//! without readiness still queue under the same bounds; see [`PoolLimit`]. A
//! [`PoolLimitHandle`] exposes the counters (in flight, queued, shed) for metrics.
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

mod body;
pub mod error;
pub mod future;
mod layer;
mod service;
mod state;

pub use body::PermitBody;
pub use error::{Overloaded, is_overloaded};
pub use layer::PoolLimitLayer;
pub use service::PoolLimit;
pub use state::PoolLimitHandle;

#[cfg(test)]
mod tests;
