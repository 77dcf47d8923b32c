//! HolySheep tower gateway: tower middleware for OpenAI-compatible LLM APIs.
//!
//! The layers live in their own crates and are re-exported here, one cargo feature each.

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
