//! The names of the metrics the semantic cache emits, and [`describe`] to give them help text.
//!
//! Emitted through the [`metrics`] facade, like `MetricsLayer`'s; what semantic hits saved is
//! counted by `MetricsLayer` (`holysheep_cost_saved_microusd_total{via="semantic"}`), which sees the
//! answer's usage.

use metrics::{Unit, describe_counter, describe_histogram};

/// Counter: requests looked up by meaning, by `result` (`hit`, `miss`).
pub const LOOKUPS: &str = "holysheep_semantic_lookups_total";
/// Counter: requests the semantic cache left alone, by `reason` (`off`, `no_cache`, `no_read`,
/// `not_chat`, `n`, `tools`, `not_user_text`, `short`, `stream_logprobs`).
pub const SKIPPED: &str = "holysheep_semantic_skipped_total";
/// Histogram: the cosine similarity of each semantic hit to its stored question.
pub const SIMILARITY: &str = "holysheep_semantic_similarity";
/// Counter: embeddings asked for, by `model` and `outcome` (`ok`, `cached`, `error`,
/// `timeout`).
pub const EMBEDDINGS: &str = "holysheep_semantic_embedding_calls_total";
/// Counter: tokens billed for embeddings, by `model`.
pub const EMBEDDING_TOKENS: &str = "holysheep_semantic_embedding_tokens_total";
/// Counter: what embeddings cost, in micro-USD, by `model`.
pub const EMBEDDING_COST: &str = "holysheep_semantic_embedding_cost_microusd_total";
/// Counter: vectors shared through Redis, by `direction` (`sent`, `received`) and `outcome`
/// (`ok`, `error`).
pub const FLEET: &str = "holysheep_semantic_fleet_vectors_total";

/// Histogram bucket bounds for [`SIMILARITY`]: fine steps where thresholds live.
pub const SIMILARITY_BUCKETS: &[f64] = &[
    0.8, 0.85, 0.9, 0.92, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 1.0,
];

/// Registers help text of every semantic cache metric with the current recorder.
pub fn describe() {
    describe_counter!(
        LOOKUPS,
        Unit::Count,
        "Requests looked up by meaning, by result."
    );
    describe_counter!(
        SKIPPED,
        Unit::Count,
        "Requests the semantic cache left alone, by reason."
    );
    describe_histogram!(
        SIMILARITY,
        "Cosine similarity of semantic hits to the stored question."
    );
    describe_counter!(
        EMBEDDINGS,
        Unit::Count,
        "Embeddings asked for by the semantic cache, by outcome."
    );
    describe_counter!(
        EMBEDDING_TOKENS,
        Unit::Count,
        "Tokens billed for the semantic cache's embeddings."
    );
    describe_counter!(
        EMBEDDING_COST,
        "What the semantic cache's embeddings cost, in micro-USD (divide by 1e6 for USD)."
    );
    describe_counter!(
        FLEET,
        Unit::Count,
        "Semantic vectors sent to and received from the other instances through Redis."
    );
}
