//! Shared ground for the HolySheep tower layers: OpenAI-compatible wire types, an incremental
//! Server-Sent-Events parser, OpenAI-style error bodies, a model price table, and the small
//! extension types the layers leave on requests and responses for each other.
//!
//! Nothing here is a layer; each layer lives in its own crate (`holysheep-cache`,
//! `holysheep-pool-limit`, `holysheep-retry`, `holysheep-metrics`) and reads only what it needs.
//!
//! # Example
//!
//! A service built with `ServiceBuilder` that answers with an OpenAI-style error and tells the
//! layers outside which model the request was for:
//!
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use holysheep_core::{error::ErrorBody, signal::RequestModel};
//! use http::{Request, Response, StatusCode};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), holysheep_core::BoxError> {
//! let svc = ServiceBuilder::new()
//!     .map_request(|mut req: Request<Bytes>| {
//!         req.extensions_mut().insert(RequestModel(Arc::from("gpt-4.1")));
//!         req
//!     })
//!     .service(service_fn(|_req: Request<Bytes>| async {
//!         let body = ErrorBody::new("the upstream is resting", "server_error");
//!         Ok::<Response<Bytes>, holysheep_core::BoxError>(
//!             body.into_response(StatusCode::SERVICE_UNAVAILABLE),
//!         )
//!     }));
//!
//! let res = svc.oneshot(Request::new(Bytes::new())).await?;
//! assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
//! let parsed: ErrorBody = serde_json::from_slice(res.body())?;
//! assert_eq!(parsed.error.r#type, "server_error");
//! # Ok(())
//! # }
//! ```

pub mod chat;
pub mod error;
pub mod price;
pub mod signal;
pub mod sse;

/// The boxed error type the layers use where they add failures of their own.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// HolySheep's OpenAI-compatible API: the default upstream base URL of the client, and the
/// upstream the cache hashes into keys unless told another.
pub const DEFAULT_BASE_URL: &str = "https://api.holysheep.ai/v1";
