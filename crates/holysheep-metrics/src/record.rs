//! The per-request record: what is known so far, and the one place where metrics are emitted.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use bytes::Buf;
use holysheep_core::price::{ModelPrice, PriceTable};
use holysheep_core::signal::{Attempts, CacheOutcome, Namespace, RequestModel, SemanticHit};
use holysheep_core::usage::Usage;
use http::response::Parts;
use http::{HeaderMap, Request, StatusCode};
use metrics::{Counter, Histogram, SharedString, counter, gauge, histogram};
use tokio::time::Instant;
use tracing::Span;

use crate::classify::{ClassifyError, ErrorClass};
use crate::names;
use crate::span::{self, AttemptCounter};
use crate::usage::Capture;

/// Label value for requests whose model nobody told.
const UNKNOWN_MODEL: &str = "unknown";
/// Label value for models and tenants past the bound.
const OTHER: &str = "other";
/// Label value for requests without a tenant.
const NO_TENANT: &str = "none";
/// Longer names (or names with spaces, quotes, non-ASCII) are not worth a series of their own.
const MAX_MODEL_LEN: usize = 128;

/// The layer's configuration.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) prices: PriceTable,
    pub(crate) max_models: usize,
    pub(crate) max_tenants: usize,
    pub(crate) max_capture: usize,
    pub(crate) classifier: Arc<dyn ClassifyError>,
    pub(crate) genai_metrics: bool,
    pub(crate) server: Option<Server>,
}

/// The upstream a stack calls, for `server.address` and `server.port`.
#[derive(Debug, Clone)]
pub(crate) struct Server {
    pub(crate) address: Arc<str>,
    pub(crate) port: Option<u16>,
}

/// Configuration plus the state every request of one layer shares.
pub(crate) struct Shared {
    pub(crate) config: Config,
    models: Labels<ModelSlot>,
    tenants: Labels<SharedString>,
    /// The in-flight gauge, resolved at the first request (see [`Handles`]).
    in_flight: std::sync::OnceLock<metrics::Gauge>,
}

impl Shared {
    pub(crate) fn new(config: Config) -> Self {
        let priced = config.prices.models().filter(|m| label_worthy(m)).map(|m| {
            let name: Arc<str> = Arc::from(m);
            let price = config.prices.price(m);
            (
                name.clone(),
                ModelSlot::new(SharedString::from_shared(name), price),
            )
        });
        let models = Labels::new(
            priced,
            config.max_models,
            ModelSlot::new(SharedString::const_str(OTHER), None),
            ModelSlot::new(SharedString::const_str(UNKNOWN_MODEL), None),
        );
        let tenants = Labels::new(
            std::iter::empty(),
            config.max_tenants,
            Arc::new(SharedString::const_str(OTHER)),
            Arc::new(SharedString::const_str(NO_TENANT)),
        );
        Self {
            config,
            models,
            tenants,
            in_flight: std::sync::OnceLock::new(),
        }
    }

    fn in_flight(&self) -> &metrics::Gauge {
        self.in_flight.get_or_init(|| gauge!(names::IN_FLIGHT))
    }

    fn model_slot(&self, model: Option<&str>) -> Arc<ModelSlot> {
        self.models.get(model, |name| {
            let price = self.config.prices.price(&name);
            ModelSlot::new(SharedString::from_shared(name), price)
        })
    }

    fn tenant_label(&self, tenant: Option<&str>) -> Arc<SharedString> {
        self.tenants
            .get(tenant, |name| Arc::new(SharedString::from_shared(name)))
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("prices", &self.prices.len())
            .field("max_models", &self.max_models)
            .field("max_tenants", &self.max_tenants)
            .field("max_body_capture", &self.max_capture)
            .field("genai_metrics", &self.genai_metrics)
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.config.fmt(f)
    }
}

/// Where a dollar went: spent upstream, or saved by one of the ways the cache avoids a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Spend {
    Cost,
    Exact,
    Semantic,
    Coalesced,
}

impl Spend {
    /// The spend of an answer from its cache signals.
    fn of(cache: Option<CacheOutcome>, semantic: bool) -> Self {
        match cache {
            Some(CacheOutcome::Coalesced) => Self::Coalesced,
            Some(CacheOutcome::Hit) if semantic => Self::Semantic,
            Some(CacheOutcome::Hit) => Self::Exact,
            _ => Self::Cost,
        }
    }

    fn is_saved(self) -> bool {
        self != Self::Cost
    }

    /// The `via` label of a saving.
    fn via(self) -> &'static str {
        match self {
            Self::Cost => "none",
            Self::Exact => "exact",
            Self::Semantic => "semantic",
            Self::Coalesced => "coalesced",
        }
    }
}

/// One model's label value, its price (resolved once), and the sub-micro-USD remainders of
/// its cost series.
pub(crate) struct ModelSlot {
    label: SharedString,
    price: Option<ModelPrice>,
    // Per (tenant label, spend): one remainder per series, so every series stays exact.
    carry: Mutex<HashMap<(SharedString, Spend), u64>>,
    /// This model's request series, resolved once per (status, cache, outcome).
    requests: Handles<(&'static str, &'static str, &'static str), RequestSeries>,
    /// Its token counters, once per (metric, kind, hit or miss).
    tokens: Handles<(&'static str, Option<&'static str>, &'static str), Counter>,
    /// Its cost counters, once per (interned tenant label, spend).
    costs: Handles<(usize, Spend), Counter>,
    /// Its counters labelled by the model alone (upstream attempts, retries, shed), once each.
    by_model: Handles<&'static str, Counter>,
}

/// The handles of one request series: recorded through them, a request builds no label set.
#[derive(Clone)]
struct RequestSeries {
    requests: Counter,
    duration: Histogram,
    first_byte: Histogram,
}

/// Metric handles resolved once per label set (the first request of a series registers it with
/// the recorder; the next ones only increment). Bounded: past [`Handles::MAX`] sets, handles are
/// resolved per request again. Handles belong to the recorder in place when they were
/// resolved, so the recorder must be installed before the first request.
struct Handles<K, H> {
    known: Mutex<Vec<(K, H)>>,
}

impl<K: PartialEq + Copy, H: Clone> Handles<K, H> {
    const MAX: usize = 64;

    fn new() -> Self {
        Self {
            known: Mutex::new(Vec::new()),
        }
    }

    fn get(&self, key: K, resolve: impl FnOnce() -> H) -> H {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, handle)) = known.iter().find(|(k, _)| *k == key) {
            return handle.clone();
        }
        let handle = resolve();
        if known.len() < Self::MAX {
            known.push((key, handle.clone()));
        }
        handle
    }
}

impl ModelSlot {
    fn new(label: SharedString, price: Option<ModelPrice>) -> Arc<Self> {
        Arc::new(Self {
            label,
            price,
            carry: Mutex::default(),
            requests: Handles::new(),
            tokens: Handles::new(),
            costs: Handles::new(),
            by_model: Handles::new(),
        })
    }

    /// The cost (or savings) counter of `tenant` (an interned label: its address names it).
    fn cost_counter(&self, tenant: &Arc<SharedString>, spend: Spend) -> Counter {
        self.costs.get((Arc::as_ptr(tenant) as usize, spend), || {
            let model = self.label.clone();
            let tenant = (**tenant).clone();
            if spend.is_saved() {
                counter!(names::COST_SAVED, "model" => model, "tenant" => tenant, "via" => spend.via())
            } else {
                counter!(names::COST, "model" => model, "tenant" => tenant)
            }
        })
    }

    fn request_series(
        &self,
        status: &'static str,
        cache: &'static str,
        outcome: &'static str,
    ) -> RequestSeries {
        self.requests.get((status, cache, outcome), || {
            let model = self.label.clone();
            RequestSeries {
                requests: counter!(names::REQUESTS, "model" => model.clone(), "status" => status, "cache" => cache, "outcome" => outcome),
                duration: histogram!(names::REQUEST_DURATION, "model" => model.clone(), "status" => status, "cache" => cache, "outcome" => outcome),
                first_byte: histogram!(names::TIME_TO_FIRST_BYTE, "model" => model, "status" => status, "cache" => cache),
            }
        })
    }

    /// The counter `name` of this model alone.
    fn model_counter(&self, name: &'static str) -> Counter {
        self.by_model
            .get(name, || counter!(name, "model" => self.label.clone()))
    }

    fn token_counter(
        &self,
        name: &'static str,
        kind: Option<&'static str>,
        hit: &'static str,
    ) -> Counter {
        self.tokens.get((name, kind, hit), || {
            let model = self.label.clone();
            match kind {
                Some(kind) => counter!(name, "model" => model, "kind" => kind, "cache" => hit),
                None => counter!(name, "model" => model, "cache" => hit),
            }
        })
    }

    /// Adds `usd` to the series' remainder and returns the whole micro-USD to add to its
    /// counter. Counters are integers; carrying the remainder (in pico-USD) keeps the total
    /// exact however small each request is.
    fn add_usd(&self, tenant: &SharedString, spend: Spend, usd: f64) -> u64 {
        const PICO_PER_MICRO: u64 = 1_000_000;
        // `as` saturates: NaN and negatives become 0, absurd costs u64::MAX.
        let pico = (usd * 1e12).round() as u64;
        let mut carry = self.carry.lock().unwrap_or_else(PoisonError::into_inner);
        let old = carry.entry((tenant.clone(), spend)).or_default();
        let total = old.saturating_add(pico);
        *old = total % PICO_PER_MICRO;
        total / PICO_PER_MICRO
    }
}

/// Interned label values, bounded so label cardinality stays low: the preset ones always, then
/// `max_extra` more in the order they appear, then `other`.
struct Labels<T> {
    known: RwLock<Known<T>>,
    max_extra: usize,
    other: Arc<T>,
    absent: Arc<T>,
}

struct Known<T> {
    map: HashMap<Arc<str>, Arc<T>>,
    extra: usize,
}

impl<T> Labels<T> {
    fn new(
        preset: impl Iterator<Item = (Arc<str>, Arc<T>)>,
        max_extra: usize,
        other: Arc<T>,
        absent: Arc<T>,
    ) -> Self {
        Self {
            known: RwLock::new(Known {
                map: preset.collect(),
                extra: 0,
            }),
            max_extra,
            other,
            absent,
        }
    }

    fn get(&self, name: Option<&str>, make: impl FnOnce(Arc<str>) -> Arc<T>) -> Arc<T> {
        let Some(name) = name else {
            return self.absent.clone();
        };
        if let Some(slot) = self
            .known
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .get(name)
        {
            return slot.clone();
        }
        if !label_worthy(name) {
            return self.other.clone();
        }
        let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = known.map.get(name) {
            return slot.clone();
        }
        if known.extra >= self.max_extra {
            return self.other.clone();
        }
        known.extra += 1;
        let key: Arc<str> = Arc::from(name);
        let slot = make(key.clone());
        known.map.insert(key, slot.clone());
        slot
    }
}

fn label_worthy(model: &str) -> bool {
    !model.is_empty()
        && model.len() <= MAX_MODEL_LEN
        && model != OTHER
        && model != UNKNOWN_MODEL
        && model != NO_TENANT
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
    tenant: Option<Arc<str>>,
    operation: Option<&'static str>,
    status: &'static str,
    cache: Option<CacheOutcome>,
    semantic: Option<f32>,
    attempts: Option<u32>,
    streamed: bool,
    capture: Capture,
    /// The request's span (disabled when no subscriber wants it).
    pub(crate) span: Span,
    finished: bool,
}

impl Tracker {
    /// Starts the clock and the span; the request is now in flight.
    pub(crate) fn start<B>(shared: Arc<Shared>, request: &mut Request<B>) -> Self {
        shared.in_flight().increment(1.0);
        let operation = span::operation(request.uri().path());
        let ext = request.extensions();
        let model = ext.get::<RequestModel>().map(|m| m.0.clone());
        let tenant = ext.get::<Namespace>().map(|n| n.0.clone());
        let span = span::request(
            operation,
            model.as_deref(),
            tenant.as_deref(),
            shared.config.server.as_ref(),
        );
        if !span.is_disabled() {
            request.extensions_mut().insert(AttemptCounter::default());
        }
        Self {
            shared,
            start: Instant::now(),
            first_byte: None,
            model,
            tenant,
            operation,
            // Until an answer arrives: a request dropped before it has no status.
            status: "none",
            cache: None,
            semantic: None,
            attempts: None,
            streamed: false,
            capture: Capture::off(),
            span,
            finished: false,
        }
    }

    /// Reads the answer's head: status, the signals other layers left, how to watch the body.
    pub(crate) fn on_response(&mut self, head: &Parts, body_len_lower_bound: u64) {
        self.status = status_class(head.status);
        let ext = &head.extensions;
        self.cache = ext.get::<CacheOutcome>().copied();
        self.semantic = ext.get::<SemanticHit>().map(|s| s.similarity);
        self.attempts = ext.get::<Attempts>().map(|a| a.0);
        if self.model.is_none() {
            self.model = ext.get::<RequestModel>().map(|m| m.0.clone());
        }
        self.capture = self.capture_for(&head.headers, body_len_lower_bound);
        self.streamed = self.capture.is_stream();
        if !self.span.is_disabled() {
            self.span
                .record("http.response.status_code", head.status.as_u16());
        }
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
        self.shared.in_flight().decrement(1.0);

        let found = self.capture.finish();
        let model_name = self.model.as_deref().or(found.model.as_deref());
        let shared = &*self.shared;
        let slot = shared.model_slot(model_name);
        let model = &slot.label;
        let cache = self.cache.map_or("none", CacheOutcome::as_str);
        let status = self.status;
        let duration = end.duration_since(self.start).as_secs_f64();

        let series = slot.request_series(status, cache, outcome.as_str());
        series.requests.increment(1);
        series.duration.record(duration);
        if let Some(first) = self.first_byte {
            series
                .first_byte
                .record(first.duration_since(self.start).as_secs_f64());
        }
        if let Some(attempts) = self.attempts {
            slot.model_counter(names::UPSTREAM_ATTEMPTS)
                .increment(attempts.into());
            if attempts > 1 {
                slot.model_counter(names::RETRIES)
                    .increment(u64::from(attempts - 1));
            }
        }
        if let Some(class) = error {
            counter!(names::ERRORS, "model" => model.clone(), "class" => class.as_str())
                .increment(1);
            if class == ErrorClass::Overload {
                slot.model_counter(names::SHED).increment(1);
            }
        }
        let spend = Spend::of(self.cache, self.semantic.is_some());
        let mut usd = None;
        if let Some(usage) = &found.usage {
            // A hit or a coalesced follower paid for no tokens of its own.
            let hit = if spend.is_saved() { "hit" } else { "miss" };
            let tokens = |name: &'static str, kind: Option<&'static str>, n: u64| {
                if n > 0 {
                    slot.token_counter(name, kind, hit).increment(n);
                }
            };
            tokens(names::TOKENS, Some("prompt"), usage.prompt_tokens);
            tokens(names::TOKENS, Some("completion"), usage.completion_tokens);
            tokens(
                names::CACHED_PROMPT_TOKENS,
                None,
                usage.cached_prompt_tokens,
            );
            tokens(names::REASONING_TOKENS, None, usage.reasoning_tokens);
            // Prices of models past the label bound are looked up by their own name.
            let price = slot
                .price
                .or_else(|| model_name.and_then(|m| shared.config.prices.price(m)));
            if let Some(price) = price {
                let cost = price.cost_of(usage);
                usd = Some(cost);
                let tenant = shared.tenant_label(self.tenant.as_deref());
                let micro = slot.add_usd(&tenant, spend, cost);
                if micro > 0 {
                    slot.cost_counter(&tenant, spend).increment(micro);
                }
            }
        }
        if shared.config.genai_metrics {
            self.genai_metrics(model, duration, error, found.usage.as_ref(), spend);
        }
        if !self.span.is_disabled() {
            span::on_finish(
                &self.span,
                &span::Finish {
                    operation: self.operation,
                    request_model: self.model.as_deref(),
                    response_model: found.model.as_deref(),
                    usage: found.usage.as_ref(),
                    usd,
                    cache: self.cache,
                    semantic: self.semantic,
                    attempts: self.attempts,
                    outcome: outcome.as_str(),
                    error: error.map(ErrorClass::as_str),
                },
            );
        }
    }

    /// The OpenTelemetry GenAI client metrics, beside ours (see the crate docs for the map).
    fn genai_metrics(
        &self,
        model: &SharedString,
        duration: f64,
        error: Option<ErrorClass>,
        usage: Option<&Usage>,
        spend: Spend,
    ) {
        let operation = self.operation.unwrap_or("other");
        let error_type = error.map_or("", ErrorClass::as_str);
        if error_type.is_empty() {
            histogram!(names::GENAI_OPERATION_DURATION, "gen_ai.operation.name" => operation, "gen_ai.request.model" => model.clone())
                .record(duration);
        } else {
            histogram!(names::GENAI_OPERATION_DURATION, "gen_ai.operation.name" => operation, "gen_ai.request.model" => model.clone(), "error.type" => error_type)
                .record(duration);
        }
        if self.streamed
            && let Some(first) = self.first_byte
        {
            histogram!(names::GENAI_TIME_TO_FIRST_CHUNK, "gen_ai.operation.name" => operation, "gen_ai.request.model" => model.clone())
                .record(first.duration_since(self.start).as_secs_f64());
        }
        // Billable tokens only, as the convention asks: a hit was billed nothing.
        if let Some(usage) = usage
            && !spend.is_saved()
        {
            histogram!(names::GENAI_TOKEN_USAGE, "gen_ai.operation.name" => operation, "gen_ai.request.model" => model.clone(), "gen_ai.token.type" => "input")
                .record(usage.prompt_tokens as f64);
            if usage.completion_tokens > 0 || operation != "embeddings" {
                histogram!(names::GENAI_TOKEN_USAGE, "gen_ai.operation.name" => operation, "gen_ai.request.model" => model.clone(), "gen_ai.token.type" => "output")
                    .record(usage.completion_tokens as f64);
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
    fn cost_carry_is_exact_per_series() {
        let slot = ModelSlot::new(SharedString::const_str("m"), None);
        let a = SharedString::const_str("a");
        let b = SharedString::const_str("b");
        // 0.42 micro-USD a time: one token of deepseek-v3.2.
        let total: u64 = (0..100)
            .map(|_| slot.add_usd(&a, Spend::Cost, 0.42e-6))
            .sum();
        assert_eq!(total, 42);
        // Another tenant's remainder is its own.
        assert_eq!(slot.add_usd(&b, Spend::Cost, 0.6e-6), 0);
        assert_eq!(slot.add_usd(&a, Spend::Exact, 1.5e-6), 1);
        assert_eq!(slot.add_usd(&a, Spend::Exact, 0.5e-6), 1);
        assert_eq!(slot.add_usd(&a, Spend::Semantic, 0.5e-6), 0);
        assert_eq!(slot.add_usd(&a, Spend::Cost, f64::NAN), 0);
    }

    #[test]
    fn labels_fold_past_the_bound_priced_models_kept() {
        let mut config = crate::MetricsLayer::new().config_for_tests();
        config.max_models = 2;
        let shared = Shared::new(config);
        let value = |m: Option<&str>| shared.model_slot(m).label.to_string();
        assert_eq!(value(Some("a")), "a");
        assert_eq!(value(Some("b")), "b");
        assert_eq!(value(Some("c")), OTHER);
        assert_eq!(value(Some("a")), "a");
        assert_eq!(value(Some("gpt-4.1")), "gpt-4.1");
        assert_eq!(value(None), UNKNOWN_MODEL);
        assert_eq!(value(Some("has space")), OTHER);
        assert_eq!(value(Some(&"x".repeat(200))), OTHER);
        let tenant = |t: Option<&str>| shared.tenant_label(t).to_string();
        assert_eq!(tenant(None), NO_TENANT);
        assert_eq!(tenant(Some("none")), OTHER);
        assert_eq!(tenant(Some("acme")), "acme");
    }

    #[test]
    fn spend_follows_the_cache_signals() {
        assert_eq!(Spend::of(None, false), Spend::Cost);
        assert_eq!(Spend::of(Some(CacheOutcome::Miss), false), Spend::Cost);
        assert_eq!(Spend::of(Some(CacheOutcome::Bypass), true), Spend::Cost);
        assert_eq!(Spend::of(Some(CacheOutcome::Hit), false), Spend::Exact);
        assert_eq!(Spend::of(Some(CacheOutcome::Hit), true), Spend::Semantic);
        assert_eq!(
            Spend::of(Some(CacheOutcome::Coalesced), false),
            Spend::Coalesced
        );
    }
}
