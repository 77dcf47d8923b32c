//! Token usage as OpenAI-compatible answers report it, with the details prices depend on.
//!
//! Every layer that counts tokens or dollars (`MetricsLayer`, a quota layer) reads the same
//! `usage` object, so it is parsed one way, here. Cached and reasoning tokens are **parts of**
//! the prompt and completion counts, not additions to them: OpenAI reports
//! `prompt_tokens_details.cached_tokens` inside `prompt_tokens` and
//! `completion_tokens_details.reasoning_tokens` inside `completion_tokens`. Counting them again
//! would bill them twice.
//!
//! ```
//! use holysheep_core::usage::Usage;
//!
//! let usage: Usage = serde_json::from_str(r#"{
//!     "prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500,
//!     "prompt_tokens_details": {"cached_tokens": 1024},
//!     "completion_tokens_details": {"reasoning_tokens": 100}
//! }"#)?;
//! assert_eq!(usage.prompt_tokens, 1200);
//! assert_eq!(usage.cached_prompt_tokens, 1024);
//! assert_eq!(usage.uncached_prompt_tokens(), 176);
//! assert_eq!(usage.reasoning_tokens, 100);
//! # Ok::<(), serde_json::Error>(())
//! ```

use serde::{Deserialize, Deserializer};

mod capture;
pub use capture::{Captured, UsageCapture};

/// The tokens of one answer.
///
/// Deserializes from an OpenAI `usage` object: `prompt_tokens`, `completion_tokens`,
/// `prompt_tokens_details.cached_tokens` (or DeepSeek's `prompt_cache_hit_tokens` when that is
/// absent) and `completion_tokens_details.reasoning_tokens`; missing or `null` fields are 0.
/// The details are clamped to the totals they are part of, so a malformed answer can never make
/// a cost negative or count a token twice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Usage {
    /// Prompt (input) tokens, cached ones included.
    pub prompt_tokens: u64,
    /// Completion (output) tokens, reasoning ones included.
    pub completion_tokens: u64,
    /// The part of `prompt_tokens` read from the provider's prompt cache (billed at the cached
    /// rate where the price has one).
    pub cached_prompt_tokens: u64,
    /// The part of `completion_tokens` spent on reasoning (billed at the reasoning rate where
    /// the price has one).
    pub reasoning_tokens: u64,
}

impl Usage {
    /// Usage with prompt and completion tokens and no details.
    pub const fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            cached_prompt_tokens: 0,
            reasoning_tokens: 0,
        }
    }

    /// Sets the cached part of the prompt (clamped to `prompt_tokens`).
    pub const fn cached(mut self, cached_prompt_tokens: u64) -> Self {
        self.cached_prompt_tokens = if cached_prompt_tokens < self.prompt_tokens {
            cached_prompt_tokens
        } else {
            self.prompt_tokens
        };
        self
    }

    /// Sets the reasoning part of the completion (clamped to `completion_tokens`).
    pub const fn reasoning(mut self, reasoning_tokens: u64) -> Self {
        self.reasoning_tokens = if reasoning_tokens < self.completion_tokens {
            reasoning_tokens
        } else {
            self.completion_tokens
        };
        self
    }

    /// Prompt tokens that were not read from the provider's prompt cache.
    pub const fn uncached_prompt_tokens(&self) -> u64 {
        self.prompt_tokens - self.cached_prompt_tokens
    }

    /// Completion tokens that were not reasoning.
    pub const fn answer_tokens(&self) -> u64 {
        self.completion_tokens - self.reasoning_tokens
    }
}

/// The wire shape: every field optional, details nested.
#[derive(Deserialize)]
struct Wire {
    #[serde(default, deserialize_with = "count")]
    prompt_tokens: u64,
    #[serde(default, deserialize_with = "count")]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
    #[serde(default, deserialize_with = "count")]
    prompt_cache_hit_tokens: u64,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default, deserialize_with = "count")]
    cached_tokens: u64,
}

#[derive(Deserialize)]
struct CompletionDetails {
    #[serde(default, deserialize_with = "count")]
    reasoning_tokens: u64,
}

/// A token count: a non-negative integer, or `null` for 0.
fn count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(Option::<u64>::deserialize(d)?.unwrap_or(0))
}

impl<'de> Deserialize<'de> for Usage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let wire = Wire::deserialize(d)?;
        let cached = wire
            .prompt_tokens_details
            .map(|p| p.cached_tokens)
            .filter(|&c| c > 0)
            .unwrap_or(wire.prompt_cache_hit_tokens);
        let reasoning = wire
            .completion_tokens_details
            .map_or(0, |c| c.reasoning_tokens);
        Ok(Self::new(wire.prompt_tokens, wire.completion_tokens)
            .cached(cached)
            .reasoning(reasoning))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Usage {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn plain_and_embeddings_usage() {
        assert_eq!(
            parse(r#"{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}"#),
            Usage::new(5, 7)
        );
        assert_eq!(
            parse(r#"{"prompt_tokens":8,"total_tokens":8}"#),
            Usage::new(8, 0)
        );
        assert_eq!(parse(r#"{"prompt_tokens":null}"#), Usage::default());
    }

    #[test]
    fn details_are_parts_clamped_to_totals() {
        let u = parse(
            r#"{"prompt_tokens":10,"completion_tokens":4,
                "prompt_tokens_details":{"cached_tokens":50,"audio_tokens":0},
                "completion_tokens_details":{"reasoning_tokens":9}}"#,
        );
        assert_eq!(u.cached_prompt_tokens, 10);
        assert_eq!(u.uncached_prompt_tokens(), 0);
        assert_eq!(u.reasoning_tokens, 4);
        assert_eq!(u.answer_tokens(), 0);
    }

    #[test]
    fn deepseek_cache_hit_field() {
        let u = parse(
            r#"{"prompt_tokens":100,"completion_tokens":1,"prompt_cache_hit_tokens":64,"prompt_cache_miss_tokens":36}"#,
        );
        assert_eq!(u.cached_prompt_tokens, 64);
    }

    #[test]
    fn negative_or_wrong_types_are_errors_not_panics() {
        assert!(serde_json::from_str::<Usage>(r#"{"prompt_tokens":-1}"#).is_err());
        assert!(serde_json::from_str::<Usage>(r#"{"prompt_tokens":"x"}"#).is_err());
    }
}
