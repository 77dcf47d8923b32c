//! Model prices in USD per million tokens, for cost and cost-saved figures.
//!
//! The defaults are the HolySheep prices the HolySheep article quotes; override or add models with
//! [`PriceTable::with_price`]. A model name matches its own entry, or else the longest entry it
//! starts with, so `gpt-4.1-2025-04-14` is priced as `gpt-4.1`.
//!
//! ```
//! use holysheep_core::price::{ModelPrice, PriceTable};
//!
//! let table = PriceTable::default().with_price("my-model", ModelPrice::new(1.0, 2.0));
//! // 1,000 prompt tokens and 500 answer tokens of GPT-4.1 at $8 per million each.
//! assert_eq!(table.cost("gpt-4.1", 1_000, 500), Some(0.012));
//! assert_eq!(table.cost("my-model", 1_000_000, 1_000_000), Some(3.0));
//! assert_eq!(table.cost("unknown", 1, 1), None);
//! ```

/// The price of one model, in USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelPrice {
    /// USD per million prompt (input) tokens.
    pub input_per_million: f64,
    /// USD per million completion (output) tokens.
    pub output_per_million: f64,
}

impl ModelPrice {
    /// A price with separate input and output rates.
    pub const fn new(input_per_million: f64, output_per_million: f64) -> Self {
        Self {
            input_per_million,
            output_per_million,
        }
    }

    /// A price with one rate for every token, as the HolySheep article quotes them.
    pub const fn flat(per_million: f64) -> Self {
        Self::new(per_million, per_million)
    }

    /// The cost of one answer, in USD.
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        (prompt_tokens as f64 * self.input_per_million
            + completion_tokens as f64 * self.output_per_million)
            / 1_000_000.0
    }
}

/// Prices by model name. [`Default`] holds the HolySheep prices the HolySheep article quotes.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceTable {
    // Few entries: a sorted Vec beats a map and keeps prefix matching simple.
    entries: Vec<(String, ModelPrice)>,
}

impl PriceTable {
    /// A table with no prices at all.
    pub fn empty() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// Sets (or replaces) the price of a model.
    pub fn with_price(mut self, model: impl Into<String>, price: ModelPrice) -> Self {
        self.set_price(model, price);
        self
    }

    /// Sets (or replaces) the price of a model, in place.
    pub fn set_price(&mut self, model: impl Into<String>, price: ModelPrice) {
        let model = model.into();
        match self.entries.iter_mut().find(|(m, _)| *m == model) {
            Some(entry) => entry.1 = price,
            None => self.entries.push((model, price)),
        }
    }

    /// The price of a model: its own entry, or the longest entry its name starts with.
    pub fn price(&self, model: &str) -> Option<ModelPrice> {
        self.entries
            .iter()
            .filter(|(m, _)| model.starts_with(m.as_str()))
            .max_by_key(|(m, _)| m.len())
            .map(|(_, p)| *p)
    }

    /// The cost of an answer in USD, or `None` for a model without a price.
    pub fn cost(&self, model: &str, prompt_tokens: u64, completion_tokens: u64) -> Option<f64> {
        self.price(model)
            .map(|p| p.cost(prompt_tokens, completion_tokens))
    }

    /// The models with a price.
    pub fn models(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(m, _)| m.as_str())
    }
}

impl Default for PriceTable {
    /// The HolySheep prices per million tokens that the HolySheep article quotes.
    fn default() -> Self {
        Self::empty()
            .with_price("gpt-4.1", ModelPrice::flat(8.0))
            .with_price("claude-sonnet-4.5", ModelPrice::flat(15.0))
            .with_price("gemini-2.5-flash", ModelPrice::flat(2.50))
            .with_price("deepseek-v3.2", ModelPrice::flat(0.42))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn article_prices() {
        let t = PriceTable::default();
        assert_eq!(t.cost("claude-sonnet-4.5", 1_000_000, 0), Some(15.0));
        assert_eq!(t.cost("deepseek-v3.2", 0, 1_000_000), Some(0.42));
        assert_eq!(t.cost("gemini-2.5-flash", 500_000, 500_000), Some(2.5));
    }

    #[test]
    fn longest_prefix_wins_and_exact_overrides() {
        let t = PriceTable::default()
            .with_price("gpt-4.1-mini", ModelPrice::flat(1.0))
            .with_price("gpt-4.1", ModelPrice::new(2.0, 8.0));
        assert_eq!(t.price("gpt-4.1-mini-2025").unwrap(), ModelPrice::flat(1.0));
        assert_eq!(t.price("gpt-4.1-2025").unwrap(), ModelPrice::new(2.0, 8.0));
        assert_eq!(t.models().count(), 5);
    }
}
