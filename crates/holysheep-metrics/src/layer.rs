use std::fmt;
use std::sync::{Arc, OnceLock};

use holysheep_core::price::PriceTable;
use tower_layer::Layer;

use crate::classify::{ClassifyError, DefaultClassifyError};
use crate::record::{Config, Server, Shared};
use crate::service::Metrics;

/// Applies [`Metrics`] to a service: counts and times every request, and reads tokens, cost and
/// cache savings from OpenAI answers. See the [crate docs](crate) for what is recorded.
///
/// # Configuration and shared state
///
/// The layer holds plain configuration and one shared state: the bounded set of `model` label
/// values and the sub-micro-dollar remainders of the cost counters. Creating the layer and
/// calling its setters only records configuration, and touches no recorder: the metrics are
/// described by [`describe`](crate::describe), which [`prometheus::install`](crate#prometheus)
/// calls. The shared state is created once, from the configuration in force, when a service is
/// first built from the layer ([`Layer::layer`]); from then on every service built from this
/// layer uses it and that configuration.
///
/// Clones of the layer, and the layers its setters return, share the state too: everything
/// derived from one [`new`](Self::new) is one set of model labels, whichever of them builds
/// first. So configure the layer completely before building from it; a setter called after the
/// state exists changes nothing of it (and logs a warning). For independent state, start from
/// another `MetricsLayer::new`.
///
/// The shared state also keeps each model's request and token series as metric handles,
/// resolved with the recorder at the series' first request (so a request records without
/// building a label set): **install the recorder before the first request**. A recorder
/// installed later sees only series that start after it.
#[derive(Clone)]
pub struct MetricsLayer {
    config: Config,
    shared: Arc<OnceLock<Arc<Shared>>>,
}

impl MetricsLayer {
    /// Default bound on distinct `model` label values beyond the models of the price table.
    pub const DEFAULT_MAX_MODELS: usize = 64;
    /// Default bound on the bytes of a JSON answer kept to read its `usage` (1 MiB).
    pub const DEFAULT_MAX_BODY_CAPTURE: usize = 1024 * 1024;
    /// Default bound on distinct `tenant` label values.
    pub const DEFAULT_MAX_TENANTS: usize = 64;
    /// Whether the OpenTelemetry GenAI metric names are emitted by default: no.
    pub const DEFAULT_GENAI_METRICS: bool = false;

    /// A layer with HolySheep's published prices ([`PriceTable::default`]), 64 extra model
    /// names, 64 tenant names, 1 MiB of JSON capture, [`DefaultClassifyError`], and no
    /// OpenTelemetry GenAI metric names.
    pub fn new() -> Self {
        Self {
            config: Config {
                prices: PriceTable::default(),
                max_models: Self::DEFAULT_MAX_MODELS,
                max_tenants: Self::DEFAULT_MAX_TENANTS,
                max_capture: Self::DEFAULT_MAX_BODY_CAPTURE,
                classifier: Arc::new(DefaultClassifyError::new()),
                genai_metrics: Self::DEFAULT_GENAI_METRICS,
                server: None,
            },
            shared: Arc::default(),
        }
    }

    fn with(mut self, f: impl FnOnce(&mut Config)) -> Self {
        if self.shared.get().is_some() {
            tracing::warn!(
                "MetricsLayer configured after it built a service; the setting does not apply"
            );
        }
        f(&mut self.config);
        self
    }

    /// The prices used for `holysheep_cost_microusd_total` and
    /// `holysheep_cost_saved_microusd_total`. Models of the table always keep their own label.
    pub fn price_table(self, prices: PriceTable) -> Self {
        self.with(|c| c.prices = prices)
    }

    /// How many distinct model names, beyond those of the price table, get a `model` label of
    /// their own; later ones are counted as `model="other"`.
    pub fn max_models(self, max: usize) -> Self {
        self.with(|c| c.max_models = max)
    }

    /// How many distinct tenants ([`Namespace`](holysheep_core::signal::Namespace) request
    /// extensions) get a `tenant` label of their own on the cost counters; later ones are
    /// counted as `tenant="other"`.
    pub fn max_tenants(self, max: usize) -> Self {
        self.with(|c| c.max_tenants = max)
    }

    /// Also emits the OpenTelemetry GenAI client metrics (`gen_ai.client.token.usage`,
    /// `gen_ai.client.operation.duration`, `gen_ai.client.operation.time_to_first_chunk`)
    /// beside the `holysheep_*` ones. Off by default: they repeat what ours say, under the
    /// names OpenTelemetry dashboards expect.
    pub fn genai_metrics(self, on: bool) -> Self {
        self.with(|c| c.genai_metrics = on)
    }

    /// The upstream's host and port, recorded on each request span as `server.address` and
    /// `server.port` (`holysheep::Stack` sets them from the client's base URL).
    pub fn server(self, address: impl Into<Arc<str>>, port: Option<u16>) -> Self {
        let address = address.into();
        self.with(|c| c.server = Some(Server { address, port }))
    }

    /// How many bytes of a JSON answer are kept to read its `usage` at the end (larger answers
    /// are counted but not parsed), and how long an unfinished SSE line may grow before a stream
    /// is no longer parsed. `0` turns body parsing off.
    pub fn max_body_capture(self, bytes: usize) -> Self {
        self.with(|c| c.max_capture = bytes)
    }

    /// How failures are sorted into `holysheep_errors_total{class}` and `holysheep_shed_total`
    /// (default [`DefaultClassifyError`], which needs no setup for the HolySheep layers).
    pub fn classify_errors(self, classifier: impl ClassifyError) -> Self {
        self.with(|c| c.classifier = Arc::new(classifier))
    }
}

#[cfg(test)]
impl MetricsLayer {
    pub(crate) fn config_for_tests(&self) -> Config {
        self.config.clone()
    }
}

impl Default for MetricsLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MetricsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsLayer")
            .field("config", &self.config)
            .field("built", &self.shared.get().is_some())
            .finish()
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let shared = self
            .shared
            .get_or_init(|| Arc::new(Shared::new(self.config.clone())));
        Metrics::from_shared(inner, Arc::clone(shared))
    }
}
