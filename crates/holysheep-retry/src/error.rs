//! The error the retry layer adds to those of the inner service: a passed deadline.
//!
//! [`DeadlineExceeded`] is defined in `holysheep-core` ([`holysheep_core::error::DeadlineExceeded`]),
//! so every layer recognises it without depending on this crate: `MetricsLayer` counts it as
//! `holysheep_errors_total{class="deadline"}` and
//! [`error_response`](holysheep_core::error::error_response) answers it with `504`. The retry
//! layer fails with it when its [`deadline`](crate::RetryLayer::deadline) passes while an
//! attempt is still in flight: the attempt is dropped (its connection is released by the inner
//! service) and the whole call fails.
//!
//! A [`BufferRequest`](crate::BufferRequest) whose request body is over its bound fails with
//! [`LengthLimitError`].

pub use holysheep_core::error::{DeadlineExceeded, is_deadline};
/// The error of a [`BufferRequest`](crate::BufferRequest) whose request body is longer than
/// its bound, re-exported from `http-body-util`.
pub use http_body_util::LengthLimitError;
