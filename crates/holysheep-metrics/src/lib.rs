//! `MetricsLayer`: latency, tokens, dollars and cache savings, measured where they happen, and a
//! `tracing` span per request and per upstream attempt.
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
//! | `holysheep_time_to_first_byte_seconds` | histogram | `model`, `status`, `cache` | `gen_ai.client.operation.time_to_first_chunk` (streams) |
//! | `holysheep_in_flight_requests` | gauge | — | — |
//! | `holysheep_pool_detached_slots` (set by `PoolLimitLayer`) | gauge | — | — |
//! | `holysheep_upstream_attempts_total` | counter | `model` | — |
//! | `holysheep_retries_total` | counter | `model` | — |
//! | `holysheep_shed_total` | counter | `model` | — |
//! | `holysheep_errors_total` | counter | `model`, `class` | `error.type` |
//! | `holysheep_tokens_total` | counter | `model`, `kind`, `cache` | `gen_ai.client.token.usage` |
//! | `holysheep_cached_prompt_tokens_total` | counter | `model`, `cache` | `gen_ai.usage.cache_read.input_tokens` (span) |
//! | `holysheep_reasoning_tokens_total` | counter | `model`, `cache` | — |
//! | `holysheep_cost_microusd_total` | counter | `model`, `tenant` | — |
//! | `holysheep_cost_saved_microusd_total` | counter | `model`, `tenant`, `via` | — |
//! | `holysheep_fallback_total` (set by `holysheep-router`) | counter | `from`, `to` | — |
//! | `holysheep_router_attempts_total` (set by `holysheep-router`) | counter | `deployment`, `result` | — |
//! | `holysheep_router_ejections_total` (set by `holysheep-router`) | counter | `deployment` | — |
//!
//! With [`genai_metrics`](MetricsLayer::genai_metrics), the OpenTelemetry GenAI client metrics
//! are emitted too, under their own names: `gen_ai.client.token.usage` (histogram of billable
//! tokens per operation, by `gen_ai.operation.name`, `gen_ai.request.model`,
//! `gen_ai.token.type`; a cache hit was billed nothing and is not recorded),
//! `gen_ai.client.operation.duration` (seconds, with `error.type` on failure) and
//! `gen_ai.client.operation.time_to_first_chunk` (seconds, streams only). Prometheus renders
//! their dots as underscores (`gen_ai_client_token_usage`).
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
//! - `tenant`: the [`Namespace`](holysheep_core::signal::Namespace) request extension (the
//!   gateway sets one per client key), `none` without one; [`max_tenants`](MetricsLayer::max_tenants)
//!   (64 by default) are kept in the order they appear, later ones (and names unfit for a label)
//!   become `other`.
//! - `via` (savings): `exact` for a cache hit, `semantic` for a hit that carries a
//!   [`SemanticHit`](holysheep_core::signal::SemanticHit) extension, `coalesced` for a follower
//!   of an identical request in flight.
//!
//! No prompt text or key is ever a label.
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
//! `usage` is read as [`holysheep_core::usage::Usage`] (prompt and completion tokens, and the
//! cached and reasoning parts of them) from `application/json` (and `+json`) answers, kept up to
//! [`max_body_capture`](MetricsLayer::max_body_capture) bytes (1 MiB by default) and parsed once
//! at the end (past the bound, only the answer's last 4 KiB are kept, where `usage` is: a large
//! batch of embeddings is still priced), and from `text/event-stream` answers, parsed event by
//! event with [`SseParser`](holysheep_core::sse::SseParser): serde sees only the first event
//! (for the model) and events with a non-null `usage`. A stream has a usage chunk only when its
//! request set `stream_options.include_usage`; `holysheep::Stack` puts `IncludeUsageLayer`
//! (crate `holysheep-usage`) above this layer, which asks for it on every stream and hides it
//! from clients that did not ask. Compressed bodies are not parsed. Other content types pass
//! untouched.
//!
//! Cost comes from a [`PriceTable`](holysheep_core::price::PriceTable) (HolySheep's published
//! prices by default, see [`price_table`](MetricsLayer::price_table)): uncached prompt tokens at
//! the input rate, cached ones at the cached rate, reasoning tokens at the reasoning rate, the
//! rest at the output rate, each token once. Models without a price have tokens but no cost. An
//! answer that went upstream adds to `holysheep_cost_microusd_total`; a cache hit or coalesced
//! follower adds what it *would* have cost to `holysheep_cost_saved_microusd_total`. The
//! article's "$1,000 → $280" is `cost / (cost + cost_saved)`.
//!
//! The `metrics` facade has integer counters only (`Counter::increment(u64)`), and a gauge
//! would be the wrong Prometheus type for a running total, so money is counted in micro-USD
//! (1e-6 USD) in true counters, and there is no float `holysheep_cost_usd`. Sub-micro-dollar
//! remainders are carried per series, so totals stay exact however cheap each request is. In
//! PromQL: `sum(rate(holysheep_cost_microusd_total[5m])) / 1e6` is USD per second.
//!
//! # Spans
//!
//! Each request gets a `debug` span named `gen_ai` (target [`span::REQUEST_TARGET`]), a child of
//! the span current at the call, entered while the inner service and the body are polled, so
//! what the layers below log belongs to it. It carries the OpenTelemetry GenAI attributes:
//! `otel.name` (`{operation} {model}`), `otel.kind` = `client`, `gen_ai.operation.name` (`chat`,
//! `text_completion`, `embeddings`, from the path), `gen_ai.request.model`,
//! `gen_ai.response.model`, `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`,
//! `gen_ai.usage.cache_read.input_tokens`, `server.address` and `server.port` (see
//! [`server`](MetricsLayer::server)), `http.response.status_code`, `error.type`, and ours:
//! `holysheep.tenant`, `holysheep.cache`, `holysheep.cache.via`, `holysheep.cache.similarity`,
//! `holysheep.attempts`, `holysheep.cost_usd`, `holysheep.usage.reasoning_tokens`,
//! `holysheep.outcome`. [`AttemptTraceLayer`] adds a child span per upstream attempt. With
//! `tracing-opentelemetry`, these become OpenTelemetry spans as they are. Nothing of the prompt
//! or the answer is ever recorded. The spans are at `debug` level, so a process that logs at
//! `info` does not build them; with no subscriber interested, they are disabled at their call
//! site and cost almost nothing (the workspace's `tracing` bench). Give an OpenTelemetry layer a
//! filter of its own that lets `holysheep::request` and `holysheep::upstream` through at
//! `debug` (the gateway does).
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
//! [`AttemptTraceLayer`]: crate::AttemptTraceLayer
//! [`CacheOutcome`]: holysheep_core::signal::CacheOutcome
//! [`Attempts`]: holysheep_core::signal::Attempts

mod attempt;
mod body;
mod classify;
mod future;
mod layer;
pub mod names;
#[cfg(feature = "prometheus")]
pub mod prometheus;
mod record;
mod service;
pub mod span;
mod usage;

#[cfg(test)]
mod tests;

pub use attempt::{AttemptBody, AttemptFuture, AttemptTrace, AttemptTraceLayer};
pub use body::RecordingBody;
pub use classify::{ClassifyError, DefaultClassifyError, ErrorClass};
pub use future::ResponseFuture;
pub use layer::MetricsLayer;
pub use names::describe;
pub use service::Metrics;
