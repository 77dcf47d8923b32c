//! [`Deployment`]: one upstream (base URL + key) the router may send a request to.

use std::future::Future;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use holysheep_client::{Builder as ClientBuilder, HolySheepClient};
use holysheep_pool_limit::{PoolLimit, PoolLimitHandle, PoolLimitLayer};
use tower::Service;
use tower::load::{CompleteOnResponse, Load, PeakEwma};

use crate::health::{Health, HealthState};

/// One upstream the router may send a request to: a base URL and a key (one HolySheep key, or
/// another OpenAI-compatible endpoint), its weight, and the models it serves.
///
/// Each deployment gets its own pooled [`HolySheepClient`] and its own [`PoolLimitLayer`], so
/// one slow or throttled key cannot take the connection slots of the others.
///
/// ```
/// use holysheep_pool_limit::PoolLimitLayer;
/// use holysheep_router::Deployment;
///
/// let deployment = Deployment::new("https://api.holysheep.ai/v1", "sk-team-a")
///     .name("holysheep-a")
///     .weight(2)
///     .models(["gpt-4.1", "claude-sonnet-4.5"])
///     .pool_limit(PoolLimitLayer::new(50, 50));
/// assert_eq!(deployment.get_name(), "holysheep-a");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Deployment {
    pub(crate) name: String,
    pub(crate) client: ClientBuilder,
    pub(crate) weight: u32,
    pub(crate) models: Vec<String>,
    pub(crate) pool_limit: Option<PoolLimitLayer>,
}

impl Deployment {
    /// Default of [`weight`](Self::weight): 1.
    pub const DEFAULT_WEIGHT: u32 = 1;

    /// A deployment at `base_url` with this key, weight 1, serving every model, named after its
    /// base URL (the key is never part of a name), with a pool limit of its own at
    /// [`PoolLimitLayer::default`].
    pub fn new(base_url: impl Into<String>, api_key: impl Into<String>) -> Self {
        let base_url = base_url.into();
        Self::from_client(
            HolySheepClient::builder()
                .base_url(base_url.clone())
                .api_key(api_key),
        )
        .name(base_url)
    }

    /// A deployment whose client is configured in full (timeouts, HTTP/2, …). Named
    /// `deployment` until [`name`](Self::name) says otherwise.
    pub fn from_client(client: ClientBuilder) -> Self {
        Self {
            name: "deployment".to_owned(),
            client,
            weight: Self::DEFAULT_WEIGHT,
            models: Vec::new(),
            pool_limit: None,
        }
    }

    /// The name logs and [`DeploymentStatus`] show (default: the base URL).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Its share of traffic relative to the other deployments of a model (default 1; 0 is
    /// raised to 1). See [the crate docs](crate#balancing) for how it enters the choice.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight.max(1);
        self
    }

    /// The models it serves (default: none listed, which means every model).
    pub fn models<I, S>(mut self, models: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.models = models.into_iter().map(Into::into).collect();
        self
    }

    /// Its pool limit (default: [`PoolLimitLayer::default`], a pool of its own). Give each
    /// deployment its own layer: clones of one layer share one pool.
    pub fn pool_limit(mut self, pool_limit: PoolLimitLayer) -> Self {
        self.pool_limit = Some(pool_limit);
        self
    }

    /// The configured name.
    pub fn get_name(&self) -> &str {
        &self.name
    }

    /// The configured weight.
    pub fn get_weight(&self) -> u32 {
        self.weight
    }

    /// The configured models (empty: every model).
    pub fn get_models(&self) -> &[String] {
        &self.models
    }
}

/// Gives a future to [`PeakEwma`] as if it were a service's answer, so tower's Peak-EWMA
/// measures the time to the response head of whatever the router sends through it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Measure;

impl<F, T, E> Service<F> for Measure
where
    F: Future<Output = Result<T, E>>,
{
    type Response = T;
    type Error = E;
    type Future = F;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, future: F) -> F {
        future
    }
}

/// The load measure of a deployment: tower's Peak-EWMA over a [`Measure`].
pub(crate) type Ewma = PeakEwma<Measure, CompleteOnResponse>;

/// The running deployment: its client behind its own pool limit, its load and its health.
pub(crate) struct Live {
    pub(crate) name: String,
    pub(crate) base_url: http::Uri,
    pub(crate) weight: u32,
    pub(crate) models: Vec<String>,
    pub(crate) client: PoolLimit<HolySheepClient>,
    pub(crate) pool: PoolLimitHandle,
    pub(crate) ewma: Mutex<Ewma>,
    pub(crate) health: Mutex<Health>,
}

impl Live {
    pub(crate) fn build(
        deployment: Deployment,
        default_rtt: Duration,
        decay: Duration,
    ) -> Result<Self, holysheep_client::Error> {
        let pool_limit = deployment.pool_limit.unwrap_or_default();
        let client = deployment
            .client
            .pool_max_idle_per_host(pool_limit.limits().1)
            .build()?;
        let pool = pool_limit.handle();
        let decay_ns = (decay.as_nanos() as f64).max(1.0);
        Ok(Self {
            base_url: client.base_url().clone(),
            name: deployment.name,
            weight: deployment.weight,
            models: deployment.models,
            client: tower::Layer::layer(&pool_limit, client),
            pool,
            ewma: Mutex::new(PeakEwma::new(
                Measure,
                default_rtt,
                decay_ns,
                CompleteOnResponse::default(),
            )),
            health: Mutex::new(Health::new()),
        })
    }

    pub(crate) fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        // The health state is counters and instants; a panic elsewhere cannot corrupt it.
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn ewma(&self) -> std::sync::MutexGuard<'_, Ewma> {
        self.ewma.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Peak-EWMA latency times (requests waiting for their head + 1).
    pub(crate) fn load(&self) -> tower::load::peak_ewma::Cost {
        self.ewma().load()
    }
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployment")
            .field("name", &self.name)
            .field("weight", &self.weight)
            .field("models", &self.models)
            .finish_non_exhaustive()
    }
}

/// A deployment as the router sees it now, from [`Router::status`](crate::Router::status).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeploymentStatus {
    /// Its name.
    pub name: String,
    /// In rotation, ejected or resting.
    pub health: HealthState,
    /// Requests holding one of its pool slots (a stream holds one until it ends).
    pub in_flight: usize,
}
