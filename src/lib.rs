//! HolySheep tower gateway: tower middleware for calling OpenAI-compatible LLM APIs at volume.
//!
//! Each layer lives in its own crate and is re-exported here behind a cargo feature of the same
//! name (`client`, `cache`, `pool-limit`, `retry`, `metrics`, `usage`; `stack` turns them all on with
//! [`Stack`] and is the default; `mock` and `full` add the fake upstream):
//!
//! | module | crate | what it does |
//! |---|---|---|
//! | [`client`] | `holysheep-client` | `HolySheepClient`, the pooled upstream service |
//! | [`cache`] | `holysheep-cache` | `CacheLayer`: exact, streaming-native, coalescing cache |
//! | [`semantic`] | `holysheep-semantic` | `SemanticCacheLayer`: paraphrases, same context only (feature `semantic`) |
//! | [`retry`] | `holysheep-retry` | `RetryLayer`: backoff, `Retry-After`, deadline, budget |
//! | [`pool_limit`] | `holysheep-pool-limit` | `PoolLimitLayer`: bounded in-flight calls, shedding |
//! | [`metrics`] | `holysheep-metrics` | `MetricsLayer`: latency, tokens, dollars, savings, spans |
//! | [`usage`] | `holysheep-usage` | `IncludeUsageLayer`: usage for every stream, hidden from clients that did not ask |
//! | [`router`] | `holysheep-router` | `Router`: several deployments, P2C over Peak-EWMA, ejection, model fallbacks (feature `router`) |
//! | [`core`] | `holysheep-core` | wire types, SSE parser, error vocabulary and answers, prices, signals |
//!
//! # Example
//!
//! [`Stack`] composes every layer in the order the design argues for, and wires the settings
//! that span layers; put your own `ServiceBuilder` layers around it like around any service:
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::Request;
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! use holysheep::Stack;
//! use holysheep::cache::{CacheLayer, MemoryStore};
//! use holysheep::client::HolySheepClient;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), holysheep::core::BoxError> {
//! # let mock = holysheep_mock::MockServer::start(holysheep_mock::MockConfig::new().api_key("sk-test")).await?;
//! # let base_url = mock.base_url();
//! let stack = Stack::builder()
//!     .client(HolySheepClient::builder().base_url(base_url).api_key("sk-test")) // default: https://api.holysheep.ai/v1
//!     .cache(CacheLayer::new(MemoryStore::new(256 << 20)).ttl(Duration::from_secs(7200)))
//!     .build()?; // IncludeUsage → Metrics → Cache → Retry → AttemptTrace → PoolLimit → client
//!
//! let service = ServiceBuilder::new()
//!     .map_request(|request: Request<Full<Bytes>>| request) // your own layers go here
//!     .service(stack);
//!
//! let body = r#"{"model":"gpt-4.1","messages":[{"role":"user","content":"Hello"}]}"#;
//! let request = Request::post("/chat/completions")
//!     .header("content-type", "application/json")
//!     .body(Full::new(Bytes::from(body)))?;
//! let response = service.oneshot(request).await?;
//! assert_eq!(response.status(), 200);
//! assert_eq!(response.headers()["x-cache"], "MISS");
//! let answer = response.into_body().collect().await?.to_bytes();
//! assert!(answer.starts_with(b"{"));
//! # Ok(())
//! # }
//! ```
//!
//! Each layer also works alone, composed with `ServiceBuilder` around any service: see each
//! crate's docs.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub use holysheep_core as core;

#[cfg(feature = "client")]
#[cfg_attr(docsrs, doc(cfg(feature = "client")))]
pub use holysheep_client as client;

#[cfg(feature = "cache")]
#[cfg_attr(docsrs, doc(cfg(feature = "cache")))]
pub use holysheep_cache as cache;

#[cfg(feature = "semantic")]
#[cfg_attr(docsrs, doc(cfg(feature = "semantic")))]
pub use holysheep_semantic as semantic;

#[cfg(feature = "pool-limit")]
#[cfg_attr(docsrs, doc(cfg(feature = "pool-limit")))]
pub use holysheep_pool_limit as pool_limit;

#[cfg(feature = "retry")]
#[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
pub use holysheep_retry as retry;

#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub use holysheep_metrics as metrics;

#[cfg(feature = "usage")]
#[cfg_attr(docsrs, doc(cfg(feature = "usage")))]
pub use holysheep_usage as usage;

#[cfg(feature = "quota")]
#[cfg_attr(docsrs, doc(cfg(feature = "quota")))]
pub use holysheep_quota as quota;

#[cfg(feature = "mock")]
#[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
pub use holysheep_mock as mock;

#[cfg(feature = "router")]
#[cfg_attr(docsrs, doc(cfg(feature = "router")))]
pub use holysheep_router as router;

#[cfg(feature = "stack")]
mod stack;
#[cfg(feature = "stack")]
#[cfg_attr(docsrs, doc(cfg(feature = "stack")))]
pub use stack::{Stack, StackBuilder};
