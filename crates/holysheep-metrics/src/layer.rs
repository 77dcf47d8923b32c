use std::fmt;
use std::sync::Arc;

use holysheep_core::price::PriceTable;
use tower_layer::Layer;

use crate::classify::{ClassifyError, DefaultClassifyError};
use crate::record::{Config, Shared};
use crate::service::Metrics;

/// Applies [`Metrics`] to a service: counts and times every request, and reads tokens, cost and
/// cache savings from OpenAI answers. See the [crate docs](crate) for what is recorded.
///
/// Every service built from one layer (and every clone of it) shares one bounded set of model
/// label values, so build the layer once and reuse it.
#[derive(Clone)]
pub struct MetricsLayer {
    shared: Arc<Shared>,
}

impl MetricsLayer {
    /// Default bound on distinct `model` label values beyond the models of the price table.
    pub const DEFAULT_MAX_MODELS: usize = 64;
    /// Default bound on the bytes of a JSON answer kept to read its `usage` (1 MiB).
    pub const DEFAULT_MAX_BODY_CAPTURE: usize = 1024 * 1024;

    /// A layer with the seed's prices ([`PriceTable::default`]), 64 extra model names, 1 MiB of
    /// JSON capture and [`DefaultClassifyError`]. Also [describes](crate::names::describe) the
    /// metrics to the recorder installed now.
    pub fn new() -> Self {
        crate::names::describe();
        Self::from_config(Config {
            prices: PriceTable::default(),
            max_models: Self::DEFAULT_MAX_MODELS,
            max_capture: Self::DEFAULT_MAX_BODY_CAPTURE,
            classifier: Arc::new(DefaultClassifyError::new()),
        })
    }

    fn from_config(config: Config) -> Self {
        Self {
            shared: Arc::new(Shared::new(config)),
        }
    }

    fn map_config(self, f: impl FnOnce(&mut Config)) -> Self {
        let mut config = self.shared.config.clone();
        f(&mut config);
        Self::from_config(config)
    }

    /// The prices used for `holysheep_cost_microusd_total` and
    /// `holysheep_cost_saved_microusd_total`. Models of the table always keep their own label.
    pub fn price_table(self, prices: PriceTable) -> Self {
        self.map_config(|c| c.prices = prices)
    }

    /// How many distinct model names, beyond those of the price table, get a `model` label of
    /// their own; later ones are counted as `model="other"`.
    pub fn max_models(self, max: usize) -> Self {
        self.map_config(|c| c.max_models = max)
    }

    /// How many bytes of a JSON answer are kept to read its `usage` at the end (larger answers
    /// are counted but not parsed), and how long an unfinished SSE line may grow before a stream
    /// is no longer parsed. `0` turns body parsing off.
    pub fn max_body_capture(self, bytes: usize) -> Self {
        self.map_config(|c| c.max_capture = bytes)
    }

    /// How failures are sorted into `holysheep_errors_total{class}` and `holysheep_shed_total`.
    pub fn classify_errors(self, classifier: impl ClassifyError) -> Self {
        self.map_config(|c| c.classifier = Arc::new(classifier))
    }
}

impl Default for MetricsLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MetricsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("MetricsLayer").field(&self.shared).finish()
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics::from_shared(inner, self.shared.clone())
    }
}
