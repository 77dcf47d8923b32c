//! `MetricsLayer`: latency, tokens, dollars and cache savings, measured where they happen.
//!
//! The HolySheep article's case rests on one table: P50 and P99 latency, throughput, cost and
//! error rate.
//! This layer makes every number of it observable in production. It is meant to be the
//! **outermost** layer of the stack, so every request is counted and timed, cache hits too. It
//! works on any `http::Request<B>` service (a HolySheep client stack, an axum router, a tonic
//! server); the OpenAI-specific parts (model, tokens, cost) apply when answers are OpenAI JSON
//! or Server-Sent Events.
//!
//! Everything is emitted through the [`metrics`] facade, so the application picks the exporter.
//! With the `prometheus` cargo feature, [`prometheus::install`](crate#prometheus) sets up
//! Prometheus text exposition with real histogram buckets. Building the layer touches no
//! recorder: [`describe`] gives the metrics their help text and units, once a recorder is
//! installed (`prometheus::install` calls it).
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use holysheep_metrics::MetricsLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), holysheep_core::BoxError> {
//! // Outermost: sees cache hits, retries, sheds and upstream failures alike.
//! let svc = ServiceBuilder::new()
//!     .layer(MetricsLayer::new())
//!     // .layer(CacheLayer::new(..)).layer(RetryLayer::new(..)).layer(PoolLimitLayer::new(..))
//!     .service(service_fn(|_req: Request<String>| async {
//!         let json = r#"{"model":"gpt-4.1","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":12}}"#;
//!         Ok::<_, holysheep_core::BoxError>(
//!             Response::builder()
//!                 .header("content-type", "application/json")
//!                 .body(http_body_util::Full::new(Bytes::from(json)))?,
//!         )
//!     }));
//!
//! let res = svc.oneshot(Request::new(String::new())).await?;
//! // The request is counted, timed and priced when its body ends.
//! # use http_body_util::BodyExt;
//! let _answer = res.into_body().collect().await?.to_bytes();
//! # Ok(())
//! # }
//! ```
//!
//! # Metrics
//!
//! Names follow Prometheus conventions (see [`names`] for the constants); label values are
//! low-cardinality by construction.
//!
//! | metric | type | labels | OpenTelemetry GenAI |
//! |---|---|---|---|
//! | `holysheep_requests_total` | counter | `model`, `status`, `cache`, `outcome` | — |
//! | `holysheep_request_duration_seconds` | histogram | `model`, `status`, `cache`, `outcome` | `gen_ai.client.operation.duration` |
//! | `holysheep_time_to_first_byte_seconds` | histogram | `model`, `status`, `cache` | `gen_ai.server.time_to_first_token` |
//! | `holysheep_in_flight_requests` | gauge | — | — |
//! | `holysheep_pool_detached_slots` (set by `PoolLimitLayer`) | gauge | — | — |
//! | `holysheep_upstream_attempts_total` | counter | `model` | — |
//! | `holysheep_retries_total` | counter | `model` | — |
//! | `holysheep_shed_total` | counter | `model` | — |
//! | `holysheep_errors_total` | counter | `model`, `class` | `error.type` |
//! | `holysheep_tokens_total` | counter | `model`, `kind`, `cache` | `gen_ai.client.token.usage` |
//! | `holysheep_cost_microusd_total` | counter | `model` | — |
//! | `holysheep_cost_saved_microusd_total` | counter | `model` | — |
//!
//! Labels:
//! - `model` (`gen_ai.request.model`): the [`RequestModel`] request extension, else the
//!   [`RequestModel`] response extension, else the `model` field of the JSON answer or of the
//!   first stream chunk; `unknown` when none says. The models of the price table always keep
//!   their name; [`max_models`](MetricsLayer::max_models) more (64 by default) are kept in the
//!   order they appear, and later ones, as well as names longer than 128 bytes or with spaces,
//!   quotes or non-ASCII characters, become `other`.
//! - `status`: the answer's status class `1xx` … `5xx`; `error` when the call failed without
//!   an answer; `none` when it was dropped before its answer.
//! - `cache`: the [`CacheOutcome`] response extension (`hit`, `miss`, `bypass`, `coalesced`),
//!   `none` without one.
//! - `outcome`: `completed` (the body reached its end), `error` (the service or the body
//!   failed), `cancelled` (the future or the body was dropped before the end, for example a
//!   client that went away mid-stream).
//! - `class` (`error.type`): `timeout`, `connect`, `overload`, `deadline`, `other`: the
//!   [`ErrorClass`] of `holysheep-core`'s one classification, decided by a [`ClassifyError`]
//!   ([`DefaultClassifyError`] unless [`classify_errors`](MetricsLayer::classify_errors) says
//!   otherwise). A shed (`PoolLimitLayer`'s [`Overloaded`](holysheep_core::error::Overloaded)
//!   or tower's) is an `overload` and also counts in `holysheep_shed_total`, with no setup; a
//!   passed `RetryLayer` deadline is a `deadline`. Answers with a 5xx status are not errors
//!   here; they show in `status`.
//! - `kind` (`gen_ai.token.type`): `prompt` (OpenTelemetry `input`) or `completion` (`output`).
//! - tokens' `cache`: `hit` for answers that cost no upstream call of their own (cache hits
//!   and coalesced followers), `miss` for the rest, so billed tokens are `cache="miss"` and
//!   nobody counts a token twice.
//!
//! No prompt text, key, tenant or [`Namespace`](holysheep_core::signal::Namespace) is ever a
//! label.
//!
//! ## When each metric is emitted
//!
//! - `holysheep_in_flight_requests` goes up when the service is called and down exactly once
//!   when the request finishes.
//! - Everything else is emitted once, when the request finishes: when the response body ends,
//!   fails or is dropped, or when the call fails or its future is dropped. Only then are the
//!   model (which may come from the body), the token usage (sent last in a stream) and the
//!   duration known. A long stream is therefore counted in `holysheep_requests_total` when it
//!   ends, and is visible in the in-flight gauge meanwhile.
//! - `holysheep_request_duration_seconds` runs from the call to that moment (time to last
//!   byte); `holysheep_time_to_first_byte_seconds` from the call to the first non-empty data
//!   frame, recorded only if one arrived.
//! - `holysheep_upstream_attempts_total` and `holysheep_retries_total` are emitted only for
//!   answers that carry the [`Attempts`] extension (from `RetryLayer`); a failed call has no
//!   answer to carry it.
//!
//! ## Tokens and cost
//!
//! `usage.prompt_tokens` and `usage.completion_tokens` are read from `application/json` (and
//! `+json`) answers, kept up to [`max_body_capture`](MetricsLayer::max_body_capture) bytes (1 MiB
//! by default) and parsed once at the end, and from `text/event-stream` answers, parsed event by
//! event with [`SseParser`](holysheep_core::sse::SseParser): serde sees only the first event
//! (for the model) and events with a non-null `usage` (the final chunk when the request set
//! `stream_options.include_usage`). Compressed bodies are not parsed. Other content types pass
//! untouched.
//!
//! Cost comes from a [`PriceTable`](holysheep_core::price::PriceTable) (the prices of the
//! HolySheep article by default, see [`price_table`](MetricsLayer::price_table)); models without a price have
//! tokens but no cost. An answer that went upstream adds to `holysheep_cost_microusd_total`;
//! a cache hit or coalesced follower adds what it *would* have cost to
//! `holysheep_cost_saved_microusd_total`. The article's "$1,000 → $280" is
//! `cost / (cost + cost_saved)`.
//!
//! The `metrics` facade has integer counters only (`Counter::increment(u64)`), and a gauge
//! would be the wrong Prometheus type for a running total, so money is counted in micro-USD
//! (1e-6 USD) in true counters. Sub-micro-dollar remainders are carried per model, so totals
//! stay exact however cheap each request is. In PromQL:
//! `sum(rate(holysheep_cost_microusd_total[5m])) / 1e6` is USD per second.
//!
//! # Prometheus
//!
//! With the `prometheus` feature, `holysheep_metrics::prometheus::install()` installs
//! a global [`metrics-exporter-prometheus`](https://docs.rs/metrics-exporter-prometheus)
//! recorder whose latency histograms have the buckets of [`names::LATENCY_BUCKETS`] (so they
//! are Prometheus histograms, not summaries), describes the metrics, keeps the recorder tidy
//! from a background thread, and returns the handle whose `render()` is the body of
//! `GET /metrics`. `prometheus::builder()` gives the configured builder for those who install
//! it themselves.
//!
//! # Cost of the layer
//!
//! Label values are `&'static str` or interned, shared model names; bodies are parsed only for
//! JSON and SSE content types. The `metrics` bench of the workspace measures a JSON request
//! end to end with a no-op and with the Prometheus recorder.
//!
//! [`RequestModel`]: holysheep_core::signal::RequestModel
//! [`CacheOutcome`]: holysheep_core::signal::CacheOutcome
//! [`Attempts`]: holysheep_core::signal::Attempts

mod body;
mod classify;
mod future;
mod layer;
pub mod names;
#[cfg(feature = "prometheus")]
pub mod prometheus;
mod record;
mod service;
mod usage;

#[cfg(test)]
mod tests;

pub use body::RecordingBody;
pub use classify::{ClassifyError, DefaultClassifyError, ErrorClass};
pub use future::ResponseFuture;
pub use layer::MetricsLayer;
pub use names::describe;
pub use service::Metrics;
