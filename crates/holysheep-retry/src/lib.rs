//! `RetryLayer`: retries transient failures of an HTTP service with exponential backoff and full
//! jitter, honours `Retry-After`, keeps one deadline across all attempts, and spends a retry
//! budget shared by every clone so an outage cannot multiply the load on the upstream.
//!
//! It works on any `http::Request<B>` whose body is `Clone` (buffered JSON such as `Bytes`), so
//! it wraps the HolySheep client as well as axum or tonic services. It is built on
//! [`tower::retry::Policy`] and [`tower::retry::budget::TpsBudget`].
//!
//! What is retried is decided by a [`Classify`] implementation; [`DefaultClassify`] retries
//! connect faults and timeouts before any answer, and the statuses 408, 429, 500, 502, 503 and
//! 504. Once a response is returned it is final, so a stream that fails midway is never
//! replayed. Errors the classifier does not recognise (such as the pool limit's `Overloaded`
//! shed) are returned at once.
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

mod classify;
pub mod error;
pub mod future;
mod layer;
mod policy;
mod service;

pub use classify::{Classify, DefaultClassify};
pub use error::{DeadlineExceeded, is_deadline};
pub use layer::RetryLayer;
pub use policy::{ATTEMPTS_HEADER, RetryPolicy};
pub use service::Retry;
/// The budget type [`RetryLayer::shared_budget`] takes, re-exported from tower.
pub use tower::retry::budget::TpsBudget;

#[cfg(test)]
mod tests;
