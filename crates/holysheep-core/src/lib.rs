//! Shared ground for the HolySheep tower layers: OpenAI-compatible wire types, an incremental
//! Server-Sent-Events parser, the error vocabulary of the layers and its OpenAI-style HTTP
//! answers, token usage and a model price table (loadable from a price file), the small extension
//! types the layers leave on requests and responses for each other, and the hop-by-hop header
//! rule ([`hop_by_hop`]) that everything forwarding a message applies.
//!
//! Nothing here is a layer; each layer lives in its own crate (`holysheep-cache`,
//! `holysheep-pool-limit`, `holysheep-retry`, `holysheep-metrics`) and reads only what it needs.
//! They agree on failures through [`error`]: a shed is an [`Overloaded`](error::Overloaded), a
//! passed deadline a [`DeadlineExceeded`](error::DeadlineExceeded), and every error or answer
//! has one [`ErrorClass`](error::ErrorClass) or [`AnswerClass`](error::AnswerClass) for all
//! of them.
//!
//! # Example
//!
//! The last step of a gateway built with `ServiceBuilder`: a failed call becomes the
//! OpenAI-style answer for its kind of failure, here a shed request that is told when to come
//! back.
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use holysheep_core::BoxError;
//! use holysheep_core::error::{ErrorBody, ErrorClass, Overloaded, error_response};
//! use http::{Request, Response, StatusCode};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let svc = ServiceBuilder::new()
//!     .map_result(|result: Result<Response<Bytes>, BoxError>| {
//!         Ok::<_, BoxError>(result.unwrap_or_else(|error| error_response(&*error)))
//!     })
//!     // In a real stack: the layers and the client. Here, a pool that sheds everything.
//!     .service(service_fn(|_req: Request<Bytes>| async {
//!         Err::<Response<Bytes>, BoxError>(Overloaded::new(Duration::from_secs(2)).into())
//!     }));
//!
//! let res = svc.oneshot(Request::new(Bytes::new())).await?;
//! assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
//! assert_eq!(res.headers()["retry-after"], "2");
//! assert_eq!(res.extensions().get::<ErrorClass>(), Some(&ErrorClass::Overload));
//! let parsed: ErrorBody = serde_json::from_slice(res.body())?;
//! assert_eq!(parsed.error.code.as_deref(), Some("overloaded"));
//! # Ok(())
//! # }
//! ```

pub mod chat;
pub mod error;
pub mod hop_by_hop;
pub mod price;
pub mod signal;
pub mod sse;
pub mod usage;

/// The boxed error type the layers use where they add failures of their own.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// HolySheep's OpenAI-compatible API: the default upstream base URL of the client, and the
/// upstream the cache hashes into keys unless told another.
pub const DEFAULT_BASE_URL: &str = "https://api.holysheep.ai/v1";
