//! Model prices in USD per million tokens, for cost and cost-saved figures.
//!
//! A [`ModelPrice`] has an input and an output rate, and optionally a cached-input rate (for
//! prompt tokens the provider read from its prompt cache) and a reasoning rate (where reasoning
//! tokens are priced apart from the answer). A [`PriceTable`] maps model names to prices: a
//! name matches its own entry, or else the longest entry it starts with, so
//! `gpt-4.1-2025-04-14` is priced as `gpt-4.1`.
//!
//! The [default](PriceTable::default) table is HolySheep's published prices (the four the
//! HolySheep article lists: GPT-4.1, Claude Sonnet 4.5, Gemini 2.5 Flash, DeepSeek V3.2, one
//! flat rate per model); [`PriceTable::from_toml`], [`from_json`](PriceTable::from_json) and
//! [`load`](PriceTable::load) read a price file, in this crate's shape or in LiteLLM's
//! `model_prices_and_context_window.json` shape, and [`merge`](PriceTable::merge) lays it over
//! the preset.
//!
//! ```
//! use holysheep_core::price::{ModelPrice, PriceTable};
//! use holysheep_core::usage::Usage;
//!
//! let table = PriceTable::default()
//!     .with_price("my-model", ModelPrice::new(1.0, 2.0).cached_input(0.25));
//! // 1,000 prompt tokens and 500 answer tokens of GPT-4.1 at $8 per million each.
//! assert_eq!(table.cost("gpt-4.1", 1_000, 500), Some(0.012));
//! assert_eq!(table.cost("my-model", 1_000_000, 1_000_000), Some(3.0));
//! // Half the prompt read from the provider's cache, at the cached rate.
//! let usage = Usage::new(1_000_000, 0).cached(500_000);
//! assert_eq!(table.cost_of("my-model", &usage), Some(0.625));
//! assert_eq!(table.cost("unknown", 1, 1), None);
//! ```
//!
//! # Price files
//!
//! This crate's shape, in TOML (or the same structure in JSON), USD per million tokens:
//!
//! ```toml
//! [models."gpt-4.1"]
//! input = 2.0
//! output = 8.0
//! cached_input = 0.5     # optional: prompt tokens read from the provider's cache
//!
//! [models."o3"]
//! input = 2.0
//! output = 8.0
//! reasoning = 8.0        # optional: reasoning tokens, when priced apart from the answer
//!
//! [models."text-embedding-3-small"]
//! input = 0.02           # embeddings: input only
//! ```
//!
//! LiteLLM's shape, a JSON object of models with rates per token, is read as it is: for each
//! entry, `input_cost_per_token`, `output_cost_per_token`, `cache_read_input_token_cost` and
//! `output_cost_per_reasoning_token`. Entries with neither an input nor an output rate (its
//! `sample_spec`, image models priced per image) are skipped; other fields are ignored.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::usage::Usage;

/// The price of one model, in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelPrice {
    /// USD per million prompt (input) tokens.
    pub input_per_million: f64,
    /// USD per million completion (output) tokens.
    pub output_per_million: f64,
    /// USD per million prompt tokens read from the provider's prompt cache; `None` prices them
    /// at the input rate.
    pub cached_input_per_million: Option<f64>,
    /// USD per million reasoning tokens; `None` prices them at the output rate.
    pub reasoning_per_million: Option<f64>,
}

impl ModelPrice {
    /// A price with separate input and output rates.
    pub const fn new(input_per_million: f64, output_per_million: f64) -> Self {
        Self {
            input_per_million,
            output_per_million,
            cached_input_per_million: None,
            reasoning_per_million: None,
        }
    }

    /// A price with one rate for every token, as the HolySheep article quotes them.
    pub const fn flat(per_million: f64) -> Self {
        Self::new(per_million, per_million)
    }

    /// Sets the rate of cached prompt tokens.
    pub const fn cached_input(mut self, per_million: f64) -> Self {
        self.cached_input_per_million = Some(per_million);
        self
    }

    /// Sets the rate of reasoning tokens.
    pub const fn reasoning(mut self, per_million: f64) -> Self {
        self.reasoning_per_million = Some(per_million);
        self
    }

    /// The cost of an answer with plain prompt and completion tokens, in USD.
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        self.cost_of(&Usage::new(prompt_tokens, completion_tokens))
    }

    /// The cost of an answer, in USD: uncached prompt tokens at the input rate, cached ones at
    /// the cached rate, reasoning tokens at the reasoning rate, the rest of the completion at
    /// the output rate. Each token is priced once.
    pub fn cost_of(&self, usage: &Usage) -> f64 {
        let cached_rate = self
            .cached_input_per_million
            .unwrap_or(self.input_per_million);
        let reasoning_rate = self
            .reasoning_per_million
            .unwrap_or(self.output_per_million);
        (usage.uncached_prompt_tokens() as f64 * self.input_per_million
            + usage.cached_prompt_tokens as f64 * cached_rate
            + usage.answer_tokens() as f64 * self.output_per_million
            + usage.reasoning_tokens as f64 * reasoning_rate)
            / 1_000_000.0
    }

    fn is_valid(&self) -> bool {
        let ok = |r: f64| r.is_finite() && r >= 0.0;
        ok(self.input_per_million)
            && ok(self.output_per_million)
            && self.cached_input_per_million.is_none_or(ok)
            && self.reasoning_per_million.is_none_or(ok)
    }
}

/// Prices by model name. [`Default`] holds HolySheep's published prices.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    // Ordered, so a file's thousands of entries still find a prefix in a few lookups.
    entries: BTreeMap<String, ModelPrice>,
}

impl PriceTable {
    /// A table with no prices at all.
    pub fn empty() -> Self {
        Self {
            entries: BTreeMap::new(),
        }
    }

    /// HolySheep's published prices per million tokens, as the HolySheep article lists them:
    /// GPT-4.1 $8, Claude Sonnet 4.5 $15, Gemini 2.5 Flash $2.50, DeepSeek V3.2 $0.42, one
    /// rate for input and output. HolySheep publishes no cached-input rate and no embeddings
    /// price there, so cached tokens are priced at the input rate and embeddings models need a
    /// price file (LiteLLM's has them).
    pub fn holysheep() -> Self {
        Self::empty()
            .with_price("gpt-4.1", ModelPrice::flat(8.0))
            .with_price("claude-sonnet-4.5", ModelPrice::flat(15.0))
            .with_price("gemini-2.5-flash", ModelPrice::flat(2.50))
            .with_price("deepseek-v3.2", ModelPrice::flat(0.42))
    }

    /// Sets (or replaces) the price of a model.
    pub fn with_price(mut self, model: impl Into<String>, price: ModelPrice) -> Self {
        self.set_price(model, price);
        self
    }

    /// Sets (or replaces) the price of a model, in place.
    pub fn set_price(&mut self, model: impl Into<String>, price: ModelPrice) {
        self.entries.insert(model.into(), price);
    }

    /// This table with every entry of `other` added, `other`'s winning where both price a
    /// model: `PriceTable::default().merge(file)` lays a price file over the preset.
    pub fn merge(mut self, other: PriceTable) -> Self {
        self.entries.extend(other.entries);
        self
    }

    /// The price of a model: its own entry, or the longest entry its name starts with.
    pub fn price(&self, model: &str) -> Option<ModelPrice> {
        if let Some(price) = self.entries.get(model) {
            return Some(*price);
        }
        // Only a key no greater than `model` can be a prefix of it; walk the prefixes down.
        let mut end = model.len();
        while end > 0 {
            end -= 1;
            if !model.is_char_boundary(end) {
                continue;
            }
            let prefix = &model[..end];
            match self
                .entries
                .range::<str, _>((Bound::Unbounded, Bound::Included(prefix)))
                .next_back()
            {
                Some((key, price)) if key == prefix => return Some(*price),
                Some((key, _)) if model.starts_with(key.as_str()) => {
                    end = key.len() + 1;
                }
                Some(_) => {}
                None => return None,
            }
        }
        None
    }

    /// The cost of an answer with plain prompt and completion tokens in USD, or `None` for a
    /// model without a price.
    pub fn cost(&self, model: &str, prompt_tokens: u64, completion_tokens: u64) -> Option<f64> {
        self.price(model)
            .map(|p| p.cost(prompt_tokens, completion_tokens))
    }

    /// The cost of an answer in USD ([`ModelPrice::cost_of`]), or `None` for a model without a
    /// price.
    pub fn cost_of(&self, model: &str, usage: &Usage) -> Option<f64> {
        self.price(model).map(|p| p.cost_of(usage))
    }

    /// The models with a price.
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// How many models have a price.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no model has a price.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Reads a price file in TOML, this crate's shape (see the [module docs](self)).
    pub fn from_toml(text: &str) -> Result<Self, PriceFileError> {
        let file: File = toml::from_str(text).map_err(|e| PriceFileError::new(e.to_string()))?;
        file.into_table()
    }

    /// Reads a price file in JSON: this crate's shape (an object with `models`), or LiteLLM's
    /// `model_prices_and_context_window.json` (see the [module docs](self)).
    pub fn from_json(text: &str) -> Result<Self, PriceFileError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| PriceFileError::new(e.to_string()))?;
        let Value::Object(mut top) = value else {
            return Err(PriceFileError::new("a price file is a JSON object".into()));
        };
        if let Some(models) = top.remove("models") {
            let file = File {
                models: serde_json::from_value(models)
                    .map_err(|e| PriceFileError::new(format!("models: {e}")))?,
            };
            return file.into_table();
        }
        let mut table = Self::empty();
        for (model, entry) in top {
            if let Some(price) = litellm_price(&model, &entry)? {
                table.set_price(model, price);
            }
        }
        Ok(table)
    }

    /// Reads a price file: TOML when its name ends in `.toml`, JSON otherwise.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, PriceFileError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| PriceFileError::new(format!("{}: {e}", path.display())))?;
        let parsed = if path.extension().is_some_and(|e| e == "toml") {
            Self::from_toml(&text)
        } else {
            Self::from_json(&text)
        };
        parsed.map_err(|e| PriceFileError::new(format!("{}: {}", path.display(), e.0)))
    }
}

/// This crate's file shape.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    models: BTreeMap<String, FileEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    #[serde(default)]
    input: f64,
    #[serde(default)]
    output: f64,
    cached_input: Option<f64>,
    reasoning: Option<f64>,
}

impl File {
    fn into_table(self) -> Result<PriceTable, PriceFileError> {
        let mut table = PriceTable::empty();
        for (model, e) in self.models {
            let price = ModelPrice {
                input_per_million: e.input,
                output_per_million: e.output,
                cached_input_per_million: e.cached_input,
                reasoning_per_million: e.reasoning,
            };
            if !price.is_valid() {
                return Err(PriceFileError::new(format!(
                    "{model}: prices must be finite and not negative"
                )));
            }
            table.set_price(model, price);
        }
        Ok(table)
    }
}

/// One LiteLLM entry, rates per token; `None` when it prices no tokens.
fn litellm_price(model: &str, entry: &Value) -> Result<Option<ModelPrice>, PriceFileError> {
    let rate = |field: &str| -> Result<Option<f64>, PriceFileError> {
        match entry.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(r) if r.is_finite() && r >= 0.0 => Ok(Some(r * 1_000_000.0)),
                _ => Err(PriceFileError::new(format!("{model}.{field}: not a price"))),
            },
            // LiteLLM writes a few rates as strings ("1e-06").
            Some(Value::String(s)) => match s.trim().parse::<f64>() {
                Ok(r) if r.is_finite() && r >= 0.0 => Ok(Some(r * 1_000_000.0)),
                _ => Err(PriceFileError::new(format!("{model}.{field}: not a price"))),
            },
            Some(_) => Err(PriceFileError::new(format!("{model}.{field}: not a price"))),
        }
    };
    if !entry.is_object() {
        return Ok(None);
    }
    let input = rate("input_cost_per_token")?;
    let output = rate("output_cost_per_token")?;
    if input.is_none() && output.is_none() {
        return Ok(None);
    }
    Ok(Some(ModelPrice {
        input_per_million: input.unwrap_or(0.0),
        output_per_million: output.unwrap_or(0.0),
        cached_input_per_million: rate("cache_read_input_token_cost")?,
        reasoning_per_million: rate("output_cost_per_reasoning_token")?,
    }))
}

/// A price file that could not be read: which file and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceFileError(String);

impl PriceFileError {
    fn new(message: String) -> Self {
        Self(message)
    }
}

impl fmt::Display for PriceFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "price file: {}", self.0)
    }
}

impl std::error::Error for PriceFileError {}

impl Default for PriceTable {
    /// HolySheep's published prices: [`PriceTable::holysheep`].
    fn default() -> Self {
        Self::holysheep()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn article_prices() {
        let t = PriceTable::holysheep();
        assert_eq!(t.cost("claude-sonnet-4.5", 1_000_000, 0), Some(15.0));
        assert_eq!(t.cost("deepseek-v3.2", 0, 1_000_000), Some(0.42));
        assert_eq!(t.cost("gemini-2.5-flash", 500_000, 500_000), Some(2.5));
    }

    #[test]
    fn longest_prefix_wins_and_exact_overrides() {
        let t = PriceTable::holysheep()
            .with_price("gpt-4.1-mini", ModelPrice::flat(1.0))
            .with_price("gpt-4.1", ModelPrice::new(2.0, 8.0))
            .with_price("gpt-4.1-mini-x", ModelPrice::flat(5.0));
        assert_eq!(t.price("gpt-4.1-mini-2025").unwrap(), ModelPrice::flat(1.0));
        assert_eq!(t.price("gpt-4.1-2025").unwrap(), ModelPrice::new(2.0, 8.0));
        assert_eq!(t.price("gpt-4.1-mini-y").unwrap(), ModelPrice::flat(1.0));
        assert_eq!(t.price("gpt-4"), None);
        assert_eq!(t.price(""), None);
        assert_eq!(t.price("ü-not-priced"), None);
        assert_eq!(t.models().count(), 6);
    }

    #[test]
    fn cached_and_reasoning_rates_price_each_token_once() {
        let p = ModelPrice::new(2.0, 8.0).cached_input(0.5).reasoning(10.0);
        let u = Usage::new(1_000_000, 1_000_000)
            .cached(400_000)
            .reasoning(250_000);
        // 0.6 M × 2 + 0.4 M × 0.5 + 0.75 M × 8 + 0.25 M × 10
        assert!((p.cost_of(&u) - (1.2 + 0.2 + 6.0 + 2.5)).abs() < 1e-9);
        // No separate rates: the totals at the plain rates.
        assert_eq!(ModelPrice::new(2.0, 8.0).cost_of(&u), 10.0);
    }

    #[test]
    fn toml_and_json_files() {
        let toml = r#"
            [models."gpt-4.1"]
            input = 2.0
            output = 8.0
            cached_input = 0.5
            [models."text-embedding-3-small"]
            input = 0.02
        "#;
        let t = PriceTable::from_toml(toml).unwrap();
        assert_eq!(
            t.price("gpt-4.1"),
            Some(ModelPrice::new(2.0, 8.0).cached_input(0.5))
        );
        assert_eq!(t.cost("text-embedding-3-small", 1_000_000, 0), Some(0.02));
        let json = r#"{"models":{"m":{"input":1,"output":3,"reasoning":4}}}"#;
        assert_eq!(
            PriceTable::from_json(json).unwrap().price("m"),
            Some(ModelPrice::new(1.0, 3.0).reasoning(4.0))
        );
        assert!(PriceTable::from_toml("[models.m]\ninput = -1.0").is_err());
        assert!(PriceTable::from_toml("[models.m]\ninptu = 1.0").is_err());
        assert!(PriceTable::from_json("[1]").is_err());
    }

    #[test]
    fn litellm_shape() {
        let json = r#"{
            "sample_spec": {"max_tokens": "set to max_output_tokens", "input_cost_per_token": 0.0, "litellm_provider": "x"},
            "gpt-4.1": {"input_cost_per_token": 2e-06, "output_cost_per_token": 8e-06,
                        "cache_read_input_token_cost": 5e-07, "litellm_provider": "openai", "mode": "chat"},
            "o3": {"input_cost_per_token": 2e-06, "output_cost_per_token": 8e-06, "output_cost_per_reasoning_token": 1e-05},
            "text-embedding-3-small": {"input_cost_per_token": 2e-08, "output_cost_per_token": 0.0, "mode": "embedding"},
            "dall-e-3": {"mode": "image_generation", "input_cost_per_pixel": 1e-08}
        }"#;
        let t = PriceTable::from_json(json).unwrap();
        let gpt = t.price("gpt-4.1-2025-04-14").unwrap();
        assert!((gpt.input_per_million - 2.0).abs() < 1e-9);
        assert!((gpt.cached_input_per_million.unwrap() - 0.5).abs() < 1e-9);
        assert!((t.price("o3").unwrap().reasoning_per_million.unwrap() - 10.0).abs() < 1e-9);
        let embed = t.cost("text-embedding-3-small", 1_000_000, 0).unwrap();
        assert!((embed - 0.02).abs() < 1e-12);
        assert_eq!(t.price("dall-e-3"), None);
        assert!(PriceTable::from_json(r#"{"m":{"input_cost_per_token":"cheap"}}"#).is_err());
    }

    #[test]
    fn merge_lays_a_file_over_the_preset() {
        let file = PriceTable::empty().with_price("gpt-4.1", ModelPrice::new(2.0, 8.0));
        let t = PriceTable::holysheep().merge(file);
        assert_eq!(t.price("gpt-4.1"), Some(ModelPrice::new(2.0, 8.0)));
        assert_eq!(t.price("deepseek-v3.2"), Some(ModelPrice::flat(0.42)));
        assert_eq!(t.len(), 4);
    }
}
