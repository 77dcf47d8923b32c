//! The error the pool limit adds: a shed request.
//!
//! [`Overloaded`] is defined in `holysheep-core` ([`holysheep_core::error::Overloaded`]), so
//! every layer recognises a shed without depending on this crate: `MetricsLayer` counts it in
//! `holysheep_shed_total`, `RetryLayer` does not retry it, and
//! [`error_response`](holysheep_core::error::error_response) answers it with `503` and
//! `Retry-After`. The pool limit sheds with it when its queue is at its depth bound
//! ([`is_queue_full`](Overloaded::is_queue_full)) or when a request waited its whole queue
//! timeout without getting a slot; its [`retry_after`](Overloaded::retry_after) is the
//! layer's [`shed_retry_after`](crate::PoolLimitLayer::shed_retry_after). It is returned without
//! waiting further and without touching the upstream.
//!
//! To read a shed's retry delay from a boxed error, find it in the error's `source()` chain
//! with [`find_in_chain`](holysheep_core::error::find_in_chain).

pub use holysheep_core::error::{Overloaded, is_overloaded};
