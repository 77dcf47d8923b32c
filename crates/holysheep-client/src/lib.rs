//! A pooled HTTP client for HolySheep's OpenAI-compatible API, as a [`tower::Service`]:
//! the innermost service that the HolySheep layers (cache, retry, pool limit, metrics) wrap.
//!
//! [`HolySheepClient`] fixes the latency problems of calling an LLM API at volume from the
//! client side: connections are pooled and kept alive (no new TCP and TLS handshake per
//! call), DNS answers are cached, and TCP is tuned for small requests and streamed answers.
//! It adds the base URL and the `Authorization: Bearer <key>` header to every request, so
//! layers above can work on plain `/chat/completions` requests.
//!
//! - **Requests**: `http::Request<B>` for any body `B`; the URI's path and query are joined
//!   onto the base URL's path (`/chat/completions` →
//!   `https://api.holysheep.ai/v1/chat/completions`, see [`Builder::base_url`]).
//! - **Responses**: `http::Response<`[`ResponseBody`]`>`, streamed frame by frame, so
//!   Server-Sent Events arrive as the upstream sends them. Non-2xx statuses are responses,
//!   not errors.
//! - **Errors**: [`Error`], with `is_connect()`, `is_timeout()`, `is_request()`, `is_body()`
//!   and an intact `source()` chain down to `std::io::Error` and `hyper::Error`.
//! - **Timeouts**: connect 10 s, response headers 60 s, body reads 50 s between frames.
//! - **Secrets**: the key is a sensitive header value and never appears in `Debug`, logs or
//!   errors.
//!
//! hyper-util's pool does not cap the number of connections; the caps (100 in total, 30 per
//! host) belong to `PoolLimitLayer` in the `holysheep-pool-limit` crate, placed in front.
//!
//! # Example
//!
//! ```no_run
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use holysheep_client::HolySheepClient;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! // Reads HOLYSHEEP_API_KEY (and HOLYSHEEP_BASE_URL, if set).
//! let client = HolySheepClient::from_env()?;
//!
//! let service = ServiceBuilder::new()
//!     .concurrency_limit(100)
//!     .service(client);
//!
//! let request = http::Request::post("/chat/completions")
//!     .header("content-type", "application/json")
//!     .body(Full::new(Bytes::from_static(
//!         br#"{"model":"gpt-4.1","messages":[{"role":"user","content":"Hello"}]}"#,
//!     )))?;
//!
//! let response = service.oneshot(request).await?;
//! println!("status: {}", response.status());
//! let body = response.into_body().collect().await?.to_bytes();
//! println!("{}", String::from_utf8_lossy(&body));
//! # Ok(())
//! # }
//! ```

mod base_url;
mod body;
mod builder;
mod connect;
mod dns;
mod error;
mod future;
mod service;

pub use body::ResponseBody;
pub use builder::{API_KEY_ENV, BASE_URL_ENV, Builder, DEFAULT_BASE_URL};
pub use error::Error;
pub use future::ResponseFuture;
pub use service::HolySheepClient;
