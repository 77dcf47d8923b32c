//! The names of every metric the layer emits, and [`describe`] to give them help text and units.
//!
//! See the [crate docs](crate#metrics) for labels and for when each one is emitted.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Counter: finished requests, by `model`, `status`, `cache` and `outcome`.
pub const REQUESTS: &str = "holysheep_requests_total";
/// Histogram (seconds): from the call to the end of the response body, same labels as
/// [`REQUESTS`]. OpenTelemetry: `gen_ai.client.operation.duration`.
pub const REQUEST_DURATION: &str = "holysheep_request_duration_seconds";
/// Histogram (seconds): from the call to the first body byte, by `model`, `status`, `cache`.
/// OpenTelemetry: `gen_ai.server.time_to_first_token` (seen from the client side).
pub const TIME_TO_FIRST_BYTE: &str = "holysheep_time_to_first_byte_seconds";
/// Gauge: requests called and not yet finished (no labels).
pub const IN_FLIGHT: &str = "holysheep_in_flight_requests";
/// Gauge: upstream pool slots held by response bodies read for no caller (the caller went away
/// and `CacheLayer` reads the answer on, within its budget, to store it); no labels. Set by
/// `PoolLimitLayer` (`holysheep_pool_limit::DETACHED_SLOTS`), not by `MetricsLayer`: those
/// requests have left [`IN_FLIGHT`] already.
pub const POOL_DETACHED_SLOTS: &str = "holysheep_pool_detached_slots";
/// Counter: upstream attempts, from the `Attempts` response extension, by `model`.
pub const UPSTREAM_ATTEMPTS: &str = "holysheep_upstream_attempts_total";
/// Counter: retries (attempts beyond the first), by `model`.
pub const RETRIES: &str = "holysheep_retries_total";
/// Counter: calls that failed with an overload error (shed load, `class="overload"` in
/// [`ERRORS`]), by `model`.
pub const SHED: &str = "holysheep_shed_total";
/// Counter: calls whose service or response body failed, by `model` and `class`
/// (`timeout`, `connect`, `overload`, `deadline`, `other`).
pub const ERRORS: &str = "holysheep_errors_total";
/// Counter: tokens from `usage`, by `model`, `kind` (`prompt`/`completion`) and `cache`
/// (`hit`/`miss`). OpenTelemetry: `gen_ai.client.token.usage` with `gen_ai.token.type`.
pub const TOKENS: &str = "holysheep_tokens_total";
/// Counter: the part of prompt tokens the provider read from its prompt cache
/// (`prompt_tokens_details.cached_tokens`), by `model` and `cache`. Already counted in
/// [`TOKENS`]`{kind="prompt"}`: a detail, not an addition.
pub const CACHED_PROMPT_TOKENS: &str = "holysheep_cached_prompt_tokens_total";
/// Counter: the part of completion tokens spent on reasoning
/// (`completion_tokens_details.reasoning_tokens`), by `model` and `cache`. Already counted in
/// [`TOKENS`]`{kind="completion"}`.
pub const REASONING_TOKENS: &str = "holysheep_reasoning_tokens_total";
/// Counter: cost of answers that went upstream, in micro-USD (1e-6 USD), by `model` and
/// `tenant`.
pub const COST: &str = "holysheep_cost_microusd_total";
/// Counter: what cache hits and coalesced followers would have cost upstream, in micro-USD,
/// by `model`, `tenant` and `via` (`exact`, `semantic`, `coalesced`).
pub const COST_SAVED: &str = "holysheep_cost_saved_microusd_total";
/// Counter: requests a fallback model served, by `from` (the model asked for) and `to` (the
/// model that served). Set by `holysheep-router` (`holysheep_router::FALLBACKS`), not by
/// `MetricsLayer`: the router alone sees which model answered.
pub const FALLBACKS: &str = "holysheep_fallback_total";

/// Histogram (`{token}`), OpenTelemetry GenAI name, emitted only with
/// [`MetricsLayer::genai_metrics`](crate::MetricsLayer::genai_metrics): billable tokens per
/// operation, by `gen_ai.operation.name`, `gen_ai.request.model`, `gen_ai.token.type`
/// (`input`, `output`). Prometheus shows it as `gen_ai_client_token_usage`.
pub const GENAI_TOKEN_USAGE: &str = "gen_ai.client.token.usage";
/// Histogram (seconds), OpenTelemetry GenAI name, emitted only with
/// [`MetricsLayer::genai_metrics`](crate::MetricsLayer::genai_metrics): the operation's
/// duration, by `gen_ai.operation.name`, `gen_ai.request.model` and `error.type` on failure.
pub const GENAI_OPERATION_DURATION: &str = "gen_ai.client.operation.duration";
/// Histogram (seconds), OpenTelemetry GenAI name, emitted only with
/// [`MetricsLayer::genai_metrics`](crate::MetricsLayer::genai_metrics) and only for streams:
/// time to the first chunk, by `gen_ai.operation.name` and `gen_ai.request.model`.
pub const GENAI_TIME_TO_FIRST_CHUNK: &str = "gen_ai.client.operation.time_to_first_chunk";

/// Bucket bounds for [`GENAI_TOKEN_USAGE`], as the OpenTelemetry GenAI conventions advise.
pub const TOKEN_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// Registers help text and units of every metric with the current recorder (also at
/// [`holysheep_metrics::describe`](crate::describe)).
///
/// [`prometheus::install`](crate#prometheus) calls it. With another recorder, call it once
/// after installing the recorder: building a [`MetricsLayer`](crate::MetricsLayer) touches no
/// recorder. Calling it again is harmless.
pub fn describe() {
    describe_counter!(
        REQUESTS,
        Unit::Count,
        "Requests finished, by model, status class, cache outcome and how the body ended."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from the call to the end of the response body (time to last byte)."
    );
    describe_histogram!(
        TIME_TO_FIRST_BYTE,
        Unit::Seconds,
        "Time from the call to the first byte of the response body."
    );
    describe_gauge!(
        IN_FLIGHT,
        Unit::Count,
        "Requests called whose response body has not ended yet."
    );
    describe_gauge!(
        POOL_DETACHED_SLOTS,
        Unit::Count,
        "Upstream pool slots held by answers read on for the cache after their caller went away."
    );
    describe_counter!(
        UPSTREAM_ATTEMPTS,
        Unit::Count,
        "Upstream attempts made for finished requests, as reported by RetryLayer."
    );
    describe_counter!(
        RETRIES,
        Unit::Count,
        "Upstream attempts beyond the first, as reported by RetryLayer."
    );
    describe_counter!(
        SHED,
        Unit::Count,
        "Requests refused because the service was at capacity."
    );
    describe_counter!(
        ERRORS,
        Unit::Count,
        "Requests whose service or response body failed, by error class."
    );
    describe_counter!(
        TOKENS,
        Unit::Count,
        "Tokens reported in usage; cache=\"hit\" ones were not billed again."
    );
    describe_counter!(
        CACHED_PROMPT_TOKENS,
        Unit::Count,
        "Prompt tokens read from the provider's prompt cache (part of the prompt tokens)."
    );
    describe_counter!(
        REASONING_TOKENS,
        Unit::Count,
        "Completion tokens spent on reasoning (part of the completion tokens)."
    );
    describe_counter!(
        COST,
        "Cost of answers that went upstream, in micro-USD (divide by 1e6 for USD), by model and tenant."
    );
    describe_counter!(
        COST_SAVED,
        "What cache hits and coalesced requests would have cost upstream, in micro-USD, by model, tenant and via (exact, semantic, coalesced)."
    );
    describe_counter!(
        FALLBACKS,
        Unit::Count,
        "Requests a fallback model served, by the model asked for (from) and the one that served (to)."
    );
    describe_histogram!(
        GENAI_TOKEN_USAGE,
        "OpenTelemetry gen_ai.client.token.usage: billable input and output tokens per operation."
    );
    describe_histogram!(
        GENAI_OPERATION_DURATION,
        Unit::Seconds,
        "OpenTelemetry gen_ai.client.operation.duration: time from the call to the end of the answer."
    );
    describe_histogram!(
        GENAI_TIME_TO_FIRST_CHUNK,
        Unit::Seconds,
        "OpenTelemetry gen_ai.client.operation.time_to_first_chunk: time to the first chunk of a stream."
    );
}

/// Histogram bucket bounds (seconds) fit for LLM latencies: from a sub-millisecond cache hit to
/// a two-minute generation. [`prometheus::builder`](crate#prometheus) applies them to
/// [`REQUEST_DURATION`] and [`TIME_TO_FIRST_BYTE`].
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
    30.0, 60.0, 120.0,
];
