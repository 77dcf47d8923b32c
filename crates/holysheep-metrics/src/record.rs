//! The per-request record: what is known so far, and the one place where metrics are emitted.

use std::any::Any;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use bytes::Buf;
use holysheep_core::price::PriceTable;
use holysheep_core::signal::{Attempts, CacheOutcome, RequestModel, SemanticHit};
use http::response::Parts;
use http::{HeaderMap, StatusCode};
use metrics::{SharedString, counter, gauge, histogram};
use tokio::time::Instant;

use crate::classify::{ClassifyError, ErrorClass};
use crate::names;
use crate::usage::Capture;

/// Label value for requests whose model nobody told.
const UNKNOWN_MODEL: &str = "unknown";
/// Label value for models past the bound.
const OTHER_MODEL: &str = "other";
/// Longer names (or names with spaces, quotes, non-ASCII) are not worth a series of their own.
const MAX_MODEL_LEN: usize = 128;

/// The layer's configuration.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) prices: PriceTable,
    pub(crate) max_models: usize,
    pub(crate) max_capture: usize,
    pub(crate) classifier: Arc<dyn ClassifyError>,
}

/// Configuration plus the state every request of one layer shares.
pub(crate) struct Shared {
    pub(crate) config: Config,
    models: ModelLabels,
}

impl Shared {
    pub(crate) fn new(config: Config) -> Self {
        let models = ModelLabels::new(config.prices.models(), config.max_models);
        Self { config, models }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("prices", &self.prices)
            .field("max_models", &self.max_models)
            .field("max_body_capture", &self.max_capture)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.config.fmt(f)
    }
}

/// One model's label value, and the sub-micro-USD remainders of its cost counters.
pub(crate) struct ModelSlot {
    label: SharedString,
    cost_pico: AtomicU64,
    saved_pico: AtomicU64,
}

impl ModelSlot {
    fn new(label: SharedString) -> Arc<Self> {
        Arc::new(Self {
            label,
            cost_pico: AtomicU64::new(0),
            saved_pico: AtomicU64::new(0),
        })
    }

    /// Adds `usd` to the remainder and returns the whole micro-USD to add to the counter.
    /// Counters are integers; carrying the remainder (in pico-USD) keeps the total exact
    /// however small each request is.
    fn add_usd(&self, saved: bool, usd: f64) -> u64 {
        const PICO_PER_MICRO: u64 = 1_000_000;
        // `as` saturates: NaN and negatives become 0, absurd costs u64::MAX.
        let pico = (usd * 1e12).round() as u64;
        let carry = if saved {
            &self.saved_pico
        } else {
            &self.cost_pico
        };
        let mut emitted = 0;
        let _ = carry.fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
            let total = old.saturating_add(pico);
            emitted = total / PICO_PER_MICRO;
            Some(total % PICO_PER_MICRO)
        });
        emitted
    }
}

/// Interned `model` label values, bounded so label cardinality stays low.
struct ModelLabels {
    known: RwLock<Known>,
    max_extra: usize,
    other: Arc<ModelSlot>,
    unknown: Arc<ModelSlot>,
}

struct Known {
    map: HashMap<Arc<str>, Arc<ModelSlot>>,
    extra: usize,
}

impl ModelLabels {
    fn new<'a>(priced: impl Iterator<Item = &'a str>, max_extra: usize) -> Self {
        let map = priced
            .filter(|m| label_worthy(m))
            .map(|m| {
                let name: Arc<str> = Arc::from(m);
                (
                    name.clone(),
                    ModelSlot::new(SharedString::from_shared(name)),
                )
            })
            .collect();
        Self {
            known: RwLock::new(Known { map, extra: 0 }),
            max_extra,
            other: ModelSlot::new(SharedString::const_str(OTHER_MODEL)),
            unknown: ModelSlot::new(SharedString::const_str(UNKNOWN_MODEL)),
        }
    }

    fn slot(&self, model: Option<&str>) -> Arc<ModelSlot> {
        let Some(model) = model else {
            return self.unknown.clone();
        };
        if let Some(slot) = self
            .known
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .get(model)
        {
            return slot.clone();
        }
        if !label_worthy(model) {
            return self.other.clone();
        }
        let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = known.map.get(model) {
            return slot.clone();
        }
        if known.extra >= self.max_extra {
            return self.other.clone();
        }
        known.extra += 1;
        let name: Arc<str> = Arc::from(model);
        let slot = ModelSlot::new(SharedString::from_shared(name.clone()));
        known.map.insert(name, slot.clone());
        slot
    }
}

fn label_worthy(model: &str) -> bool {
    !model.is_empty()
        && model.len() <= MAX_MODEL_LEN
        && model != OTHER_MODEL
        && model != UNKNOWN_MODEL
        && model
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

/// How a request ended: the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The body reached its end.
    Completed,
    /// The future or the body was dropped before the end (client went away).
    Cancelled,
    /// The service or the body failed.
    Error,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Error => "error",
        }
    }
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Everything known about one request, from the call until its body ends. It lives in the
/// response future, then in the response body; whoever holds it last ends it, and dropping it
/// unfinished ends it as `cancelled`, so every request is counted (and leaves the in-flight
/// gauge) exactly once.
pub(crate) struct Tracker {
    shared: Arc<Shared>,
    start: Instant,
    first_byte: Option<Instant>,
    model: Option<Arc<str>>,
    status: &'static str,
    cache: Option<CacheOutcome>,
    /// A semantic cache hit: its savings are also counted apart.
    semantic: bool,
    attempts: Option<u32>,
    capture: Capture,
    finished: bool,
}

impl Tracker {
    /// Starts the clock; the request is now in flight.
    pub(crate) fn start(shared: Arc<Shared>, model: Option<&RequestModel>) -> Self {
        gauge!(names::IN_FLIGHT).increment(1.0);
        Self {
            shared,
            start: Instant::now(),
            first_byte: None,
            model: model.map(|m| m.0.clone()),
            // Until an answer arrives: a request dropped before it has no status.
            status: "none",
            cache: None,
            semantic: false,
            attempts: None,
            capture: Capture::Off,
            finished: false,
        }
    }

    /// Reads the answer's head: status, the signals other layers left, how to watch the body.
    pub(crate) fn on_response(&mut self, head: &Parts, body_len_lower_bound: u64) {
        self.status = status_class(head.status);
        let ext = &head.extensions;
        self.cache = ext.get::<CacheOutcome>().copied();
        self.semantic = ext.get::<SemanticHit>().is_some();
        self.attempts = ext.get::<Attempts>().map(|a| a.0);
        if self.model.is_none() {
            self.model = ext.get::<RequestModel>().map(|m| m.0.clone());
        }
        self.capture = self.capture_for(&head.headers, body_len_lower_bound);
    }

    fn capture_for(&self, headers: &HeaderMap, len: u64) -> Capture {
        Capture::for_response(headers, len, self.shared.config.max_capture)
    }

    /// Takes a data frame of the body.
    pub(crate) fn on_data(&mut self, data: &impl Buf) {
        if self.first_byte.is_none() && data.has_remaining() {
            self.first_byte = Some(Instant::now());
        }
        self.capture.push(data);
    }

    /// The body ended.
    pub(crate) fn complete(mut self) {
        self.finish(Outcome::Completed, None);
    }

    /// The service or the body failed with `error`.
    pub(crate) fn fail(mut self, error: &(dyn Any + 'static)) {
        let class = self.shared.config.classifier.classify(error);
        if self.status == "none" {
            // The call itself failed: there is no answer, hence no status code.
            self.status = "error";
        }
        self.finish(Outcome::Error, Some(class));
    }

    fn finish(&mut self, outcome: Outcome, error: Option<ErrorClass>) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let end = Instant::now();
        gauge!(names::IN_FLIGHT).decrement(1.0);

        let found = self.capture.finish();
        let model_name = self.model.as_deref().or(found.model.as_deref());
        let slot = self.shared.models.slot(model_name);
        let model = &slot.label;
        let cache = self.cache.map_or("none", CacheOutcome::as_str);
        let status = self.status;

        counter!(names::REQUESTS, "model" => model.clone(), "status" => status, "cache" => cache, "outcome" => outcome.as_str())
            .increment(1);
        histogram!(names::REQUEST_DURATION, "model" => model.clone(), "status" => status, "cache" => cache, "outcome" => outcome.as_str())
            .record(end.duration_since(self.start).as_secs_f64());
        if let Some(first) = self.first_byte {
            histogram!(names::TIME_TO_FIRST_BYTE, "model" => model.clone(), "status" => status, "cache" => cache)
                .record(first.duration_since(self.start).as_secs_f64());
        }
        if let Some(attempts) = self.attempts {
            counter!(names::UPSTREAM_ATTEMPTS, "model" => model.clone()).increment(attempts.into());
            if attempts > 1 {
                counter!(names::RETRIES, "model" => model.clone())
                    .increment(u64::from(attempts - 1));
            }
        }
        if let Some(class) = error {
            counter!(names::ERRORS, "model" => model.clone(), "class" => class.as_str())
                .increment(1);
            if class == ErrorClass::Overload {
                counter!(names::SHED, "model" => model.clone()).increment(1);
            }
        }
        if let Some((prompt, completion)) = found.usage {
            // A hit or a coalesced follower paid for no tokens of its own.
            let saved = self.cache.is_some_and(CacheOutcome::is_saved);
            let hit = if saved { "hit" } else { "miss" };
            if prompt > 0 {
                counter!(names::TOKENS, "model" => model.clone(), "kind" => "prompt", "cache" => hit)
                    .increment(prompt);
            }
            if completion > 0 {
                counter!(names::TOKENS, "model" => model.clone(), "kind" => "completion", "cache" => hit)
                    .increment(completion);
            }
            if let Some(name) = model_name
                && let Some(usd) = self.shared.config.prices.cost(name, prompt, completion)
            {
                let micro = slot.add_usd(saved, usd);
                if micro > 0 {
                    let name = if saved {
                        names::COST_SAVED
                    } else {
                        names::COST
                    };
                    counter!(name, "model" => model.clone()).increment(micro);
                    if saved && self.semantic {
                        counter!(names::SEMANTIC_COST_SAVED, "model" => model.clone())
                            .increment(micro);
                    }
                }
            }
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.finish(Outcome::Cancelled, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_carry_is_exact() {
        let slot = ModelSlot::new(SharedString::const_str("m"));
        // 0.42 micro-USD a time: one token of deepseek-v3.2.
        let total: u64 = (0..100).map(|_| slot.add_usd(false, 0.42e-6)).sum();
        assert_eq!(total, 42);
        assert_eq!(slot.add_usd(true, 1.5e-6), 1);
        assert_eq!(slot.add_usd(true, 0.5e-6), 1);
        assert_eq!(slot.add_usd(false, f64::NAN), 0);
    }

    #[test]
    fn labels_fold_past_the_bound_priced_models_kept() {
        let prices = PriceTable::default();
        let labels = ModelLabels::new(prices.models(), 2);
        let value = |m: Option<&str>| labels.slot(m).label.to_string();
        assert_eq!(value(Some("a")), "a");
        assert_eq!(value(Some("b")), "b");
        assert_eq!(value(Some("c")), OTHER_MODEL);
        assert_eq!(value(Some("a")), "a");
        assert_eq!(value(Some("gpt-4.1")), "gpt-4.1");
        assert_eq!(value(None), UNKNOWN_MODEL);
        assert_eq!(value(Some("has space")), OTHER_MODEL);
        assert_eq!(value(Some(&"x".repeat(200))), OTHER_MODEL);
    }
}
