//! The request's `tracing` span, with OpenTelemetry GenAI attribute names.
//!
//! Fields are declared when the span is made (a `tracing` span cannot gain fields later) and
//! recorded as they become known: the operation and request model at the call, the status at
//! the answer's head, tokens, cost and cache outcome when the body ends. Nothing of the prompt
//! or the answer is ever recorded. When no subscriber wants the span, it is disabled and none of
//! this runs.
//!
//! Both spans are at `debug` level: a process logging at `info` (the usual set-up, and the
//! gateway's default) does not build them at all, and pays nothing for them; an OpenTelemetry
//! exporter, or `RUST_LOG=holysheep::request=debug,holysheep::upstream=debug`, turns them on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use holysheep_core::signal::CacheOutcome;
use holysheep_core::usage::Usage;
use tracing::Span;
use tracing::field::Empty;

use crate::record::Server;

/// The `target` of the request spans: turn them on with `holysheep::request=debug`.
pub const REQUEST_TARGET: &str = "holysheep::request";
/// The `target` of the upstream attempt spans: turn them on with `holysheep::upstream=debug`.
pub const ATTEMPT_TARGET: &str = "holysheep::upstream";

/// `gen_ai.operation.name` from the request path (`/v1` or not).
pub(crate) fn operation(path: &str) -> Option<&'static str> {
    if path.ends_with("/chat/completions") {
        Some("chat")
    } else if path.ends_with("/completions") {
        Some("text_completion")
    } else if path.ends_with("/embeddings") {
        Some("embeddings")
    } else {
        None
    }
}

/// A new request span, child of the current one, with what the request says about itself.
/// Values known now are given at creation (one pass for a subscriber), `otel.name` formatted
/// only if a subscriber records it.
pub(crate) fn request(
    operation: Option<&'static str>,
    model: Option<&str>,
    tenant: Option<&str>,
    server: Option<&Server>,
) -> Span {
    let name = model.map(|model| tracing::field::display(SpanName(operation, model)));
    tracing::debug_span!(
        target: REQUEST_TARGET,
        "gen_ai",
        otel.name = name,
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = operation,
        gen_ai.request.model = model,
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        gen_ai.usage.cache_read.input_tokens = Empty,
        holysheep.usage.reasoning_tokens = Empty,
        server.address = server.map(|s| &*s.address),
        server.port = server.and_then(|s| s.port),
        http.response.status_code = Empty,
        error.type = Empty,
        holysheep.tenant = tenant,
        holysheep.cache = Empty,
        holysheep.cache.via = Empty,
        holysheep.cache.similarity = Empty,
        holysheep.attempts = Empty,
        holysheep.cost_usd = Empty,
        holysheep.outcome = Empty,
    )
}

/// `otel.name`: `{operation} {model}`, as the GenAI conventions name client spans.
fn record_name(span: &Span, operation: Option<&str>, model: &str) {
    span.record(
        "otel.name",
        tracing::field::display(SpanName(operation, model)),
    );
}

/// `{operation} {model}`, written only when a subscriber asks.
struct SpanName<'a>(Option<&'a str>, &'a str);

impl std::fmt::Display for SpanName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0.unwrap_or("request"), self.1)
    }
}

/// What is known when the request finishes.
pub(crate) struct Finish<'a> {
    pub(crate) operation: Option<&'static str>,
    pub(crate) request_model: Option<&'a str>,
    pub(crate) response_model: Option<&'a str>,
    pub(crate) usage: Option<&'a Usage>,
    pub(crate) usd: Option<f64>,
    pub(crate) cache: Option<CacheOutcome>,
    pub(crate) semantic: Option<f32>,
    pub(crate) attempts: Option<u32>,
    pub(crate) outcome: &'static str,
    pub(crate) error: Option<&'static str>,
}

/// Records the end of the request.
pub(crate) fn on_finish(span: &Span, f: &Finish<'_>) {
    if let Some(model) = f.response_model {
        span.record("gen_ai.response.model", model);
        if f.request_model.is_none() {
            record_name(span, f.operation, model);
        }
    }
    if let Some(usage) = f.usage {
        span.record("gen_ai.usage.input_tokens", usage.prompt_tokens);
        span.record("gen_ai.usage.output_tokens", usage.completion_tokens);
        if usage.cached_prompt_tokens > 0 {
            span.record(
                "gen_ai.usage.cache_read.input_tokens",
                usage.cached_prompt_tokens,
            );
        }
        if usage.reasoning_tokens > 0 {
            span.record("holysheep.usage.reasoning_tokens", usage.reasoning_tokens);
        }
    }
    if let Some(usd) = f.usd {
        span.record("holysheep.cost_usd", usd);
    }
    if let Some(cache) = f.cache {
        span.record("holysheep.cache", cache.as_str());
        let via = match (cache, f.semantic) {
            (CacheOutcome::Hit, Some(_)) => Some("semantic"),
            (CacheOutcome::Hit, None) => Some("exact"),
            (CacheOutcome::Coalesced, _) => Some("coalesced"),
            _ => None,
        };
        if let Some(via) = via {
            span.record("holysheep.cache.via", via);
        }
    }
    if let Some(similarity) = f.semantic {
        span.record("holysheep.cache.similarity", f64::from(similarity));
    }
    if let Some(attempts) = f.attempts {
        span.record("holysheep.attempts", attempts);
    }
    span.record("holysheep.outcome", f.outcome);
    if let Some(error) = f.error {
        span.record("error.type", error);
        span.record("otel.status_code", "ERROR");
    }
}

/// Numbers the upstream attempts of one request: a request extension the request span puts on
/// the request, which every retried clone shares, and which [`AttemptTrace`] counts up.
///
/// [`AttemptTrace`]: crate::AttemptTrace
#[derive(Debug, Clone, Default)]
pub(crate) struct AttemptCounter(Arc<AtomicU32>);

impl AttemptCounter {
    /// The number of the attempt starting now (1 for the first).
    pub(crate) fn next(&self) -> u32 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}
