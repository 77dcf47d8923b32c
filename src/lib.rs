//! HolySheep tower gateway: tower middleware for calling OpenAI-compatible LLM APIs at volume.
//!
//! Each layer lives in its own crate and is re-exported here behind a cargo feature of the same
//! name (`client`, `cache`, `pool-limit`, `retry`, `metrics`, all on by default; `mock` and
//! `full` add the fake upstream):
//!
//! | module | crate | what it does |
//! |---|---|---|
//! | [`client`] | `holysheep-client` | `HolySheepClient`, the pooled upstream service |
//! | [`cache`] | `holysheep-cache` | `CacheLayer`: exact, streaming-native, coalescing cache |
//! | [`retry`] | `holysheep-retry` | `RetryLayer`: backoff, `Retry-After`, deadline, budget |
//! | [`pool_limit`] | `holysheep-pool-limit` | `PoolLimitLayer`: bounded in-flight calls, shedding |
//! | [`metrics`] | `holysheep-metrics` | `MetricsLayer`: latency, tokens, dollars, savings |
//! | [`core`] | `holysheep-core` | wire types, SSE parser, error vocabulary and answers, prices, signals |
//!
//! # Example
//!
//! The whole stack, in the order the design argues for, against the mock upstream:
//!
//! ```
//! use bytes::Bytes;
//! use http::Request;
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! use holysheep::cache::{CacheLayer, MemoryStore};
//! use holysheep::client::HolySheepClient;
//! use holysheep::metrics::MetricsLayer;
//! use holysheep::pool_limit::PoolLimitLayer;
//! use holysheep::retry::RetryLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), holysheep::core::BoxError> {
//! # let mock = holysheep_mock::MockServer::start(holysheep_mock::MockConfig::new().api_key("sk-test")).await?;
//! # let base_url = mock.base_url();
//! let client = HolySheepClient::builder()
//!     .base_url(base_url) // default: https://api.holysheep.ai/v1
//!     .api_key("sk-test")
//!     .build()?;
//!
//! let stack = ServiceBuilder::new()
//!     .layer(MetricsLayer::new()) // sees every request, hits too
//!     .layer(CacheLayer::new(MemoryStore::new(256 << 20))) // answers hits, coalesces misses
//!     .layer(RetryLayer::new()) // retries transient faults within a budget
//!     .layer(PoolLimitLayer::new(100, 30)) // bounds in-flight upstream calls
//!     .service(client);
//!
//! let body = r#"{"model":"gpt-4.1","messages":[{"role":"user","content":"Hello"}]}"#;
//! let request = Request::post("/chat/completions")
//!     .header("content-type", "application/json")
//!     .body(Full::new(Bytes::from(body)))?;
//! let response = stack.oneshot(request).await?;
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.headers()["x-cache"], "MISS");
//! let answer = response.into_body().collect().await?.to_bytes();
//! assert!(answer.starts_with(b"{"));
//! # Ok(())
//! # }
//! ```

pub use holysheep_core as core;

#[cfg(feature = "client")]
pub use holysheep_client as client;

#[cfg(feature = "cache")]
pub use holysheep_cache as cache;

#[cfg(feature = "pool-limit")]
pub use holysheep_pool_limit as pool_limit;

#[cfg(feature = "retry")]
pub use holysheep_retry as retry;

#[cfg(feature = "metrics")]
pub use holysheep_metrics as metrics;

#[cfg(feature = "mock")]
pub use holysheep_mock as mock;
