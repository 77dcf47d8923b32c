//! The layer stack the gateway forwards through ([`holysheep::Stack`]), built from the
//! configuration, and the readiness probes.
//!
//! Only settings the configuration sets are passed on; the rest keep their crate's default.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use holysheep::cache::{
    CacheLayer, CacheStore, DefaultKeyPolicy, FleetCoalescing, MemoryStore, RedisStore, TieredStore,
};
use holysheep::client::{self, HolySheepClient};
use holysheep::metrics::MetricsLayer;
use holysheep::pool_limit::PoolLimitLayer;
use holysheep::retry::RetryLayer;
use holysheep::router::Upstream;
use holysheep::semantic::{RedisFleet, SemanticCacheLayer};
use holysheep::{Stack, StackBuilder};
use holysheep_core::BoxError;
use holysheep_core::price::PriceTable;
use holysheep_metrics::prometheus::{self, PrometheusHandle};
use http::Request;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

use crate::config::{CacheSettings, Config, MetricsSettings, SemanticSettings};
use crate::tenants::{self, Tenants};

/// What the routes send through the stack: a buffered JSON body, cloneable for retries.
pub(crate) type UpstreamRequest = Request<Full<Bytes>>;

/// The built stack and what the operator routes need beside it.
pub(crate) struct Built {
    /// The layers around the client.
    pub(crate) stack: Stack,
    /// Probes for `/readyz`.
    pub(crate) readiness: Readiness,
    /// Renders `/metrics`.
    pub(crate) render_metrics: Arc<dyn Fn() -> String + Send + Sync>,
}

/// `set(target, value)` when the configuration has a value, else `target` unchanged, so an
/// unset setting keeps its crate's default.
fn set<T, V>(target: T, value: Option<V>, setter: impl FnOnce(T, V) -> T) -> T {
    match value {
        Some(value) => setter(target, value),
        None => target,
    }
}

/// Builds the stack for the upstream at `base_url` (the configured one when `None`) with the
/// upstream key.
pub(crate) async fn build(
    config: &Config,
    base_url: Option<&str>,
    api_key: Option<&str>,
) -> Result<Built, BoxError> {
    let s = &config.settings;
    let secs = |v: Option<u64>| v.map(Duration::from_secs);
    let millis = |v: Option<u64>| v.map(Duration::from_millis);

    // The `[client]` settings every client shares (each deployment's too).
    let client_settings = || {
        let mut client = HolySheepClient::builder();
        client = set(
            client,
            secs(s.client.connect_timeout_secs),
            client::Builder::connect_timeout,
        );
        client = set(
            client,
            secs(s.client.timeout_secs),
            client::Builder::timeout,
        );
        client = set(
            client,
            secs(s.client.read_timeout_secs),
            client::Builder::read_timeout,
        );
        set(
            client,
            secs(s.client.pool_idle_timeout_secs),
            client::Builder::pool_idle_timeout,
        )
    };
    let mut client = client_settings();
    client = set(
        client,
        base_url.or(s.client.base_url.as_deref()),
        client::Builder::base_url,
    );
    client = set(client, api_key, client::Builder::api_key);

    let mut retry = RetryLayer::new();
    retry = set(retry, s.retry.max_retries, RetryLayer::max_retries);
    retry = set(retry, millis(s.retry.base_ms), RetryLayer::backoff_base);
    retry = set(retry, millis(s.retry.cap_ms), RetryLayer::backoff_max);
    retry = set(retry, secs(s.retry.deadline_secs), RetryLayer::deadline);
    retry = set(
        retry,
        s.retry.budget_percent.map(|p| p as f32 / 100.0),
        RetryLayer::budget_ratio,
    );

    // A new pool limit of the `[pool]` settings (each deployment has its own).
    let pool_settings = || {
        let mut pool = PoolLimitLayer::default();
        pool = set(pool, s.pool.max_in_flight, PoolLimitLayer::total);
        pool = set(pool, s.pool.per_host, PoolLimitLayer::per_host);
        pool = set(
            pool,
            millis(s.pool.queue_timeout_ms),
            PoolLimitLayer::queue_timeout,
        );
        set(pool, s.pool.queue_depth, PoolLimitLayer::max_queue)
    };
    let pool = pool_settings();
    let router = crate::deployments::router(config, client_settings, pool_settings)?;

    let (store, shared_store, redis) = cache_store(&s.cache, &config.redis_urls()).await?;
    let mut cache = CacheLayer::with_store(store).max_body_bytes(config.body_limit());
    if let Some(redis) = redis.filter(|_| s.cache.fleet_coalescing.unwrap_or(true)) {
        let max_wait = s
            .cache
            .fleet_max_wait_secs
            .or(s.client.timeout_secs)
            .map_or(client::Builder::DEFAULT_TIMEOUT, Duration::from_secs);
        cache = cache.fleet(FleetCoalescing::new(redis).max_wait(max_wait));
    }
    cache = set(cache, secs(s.cache.ttl_secs), CacheLayer::ttl);
    cache = set(cache, s.cache.max_entry_bytes, CacheLayer::max_entry_bytes);
    cache = set(cache, s.cache.key_scheme, |cache, scheme| {
        cache.key_policy(DefaultKeyPolicy::new().scheme(scheme))
    });
    cache = set(cache, s.router.cache_fallbacks, CacheLayer::cache_fallbacks);

    // A clone shares the pool: the readiness probe takes its slots like any call.
    let probe_pool = pool.clone();
    let prices = price_table(&s.metrics)?;
    let tenants = Tenants::load_all(s.quota.tenant_files.as_deref().unwrap_or_default())?;
    let mut builder = Stack::builder()
        .client(client)
        .retry(retry)
        .pool_limit(pool)
        .cache(cache)
        .metrics(metrics_layer(&s.metrics, prices.clone()))
        .quota(tenants::quota_layer(config, &tenants, prices)?);
    let switches = tenants::semantic_switches(&tenants);
    if let Some(semantic) = semantic_cache(
        &s.semantic,
        &config.redis_urls(),
        s.cache.ttl_secs,
        &switches,
    )? {
        builder = builder.semantic_cache(semantic);
    }
    if let Some(router) = router {
        builder = builder.router(router);
    }
    let stack = builder.build()?;
    // With deployments, `/readyz` asks through the router: ready when one of them answers.
    let probe = match stack.router() {
        Some(router) => Upstream::Routed(router.clone()),
        None => Upstream::One(probe_pool.layer(stack.client().clone())),
    };
    Ok(Built {
        readiness: Readiness {
            inner: Arc::new(Probes {
                upstream: probe,
                store: shared_store,
                timeout: config.ready_timeout(),
                interval: config.ready_cache(),
                last: tokio::sync::Mutex::new(None),
            }),
        },
        stack,
        render_metrics: metrics_renderer(),
    })
}

/// HolySheep's published prices with the price files laid over them, in order: what the
/// metrics and the quota count dollars with.
fn price_table(settings: &MetricsSettings) -> Result<PriceTable, BoxError> {
    let mut prices = PriceTable::default();
    for file in settings.price_files.as_deref().unwrap_or_default() {
        let table = PriceTable::load(file)?;
        tracing::info!(file = %file.display(), models = table.len(), "price file loaded");
        prices = prices.merge(table);
    }
    Ok(prices)
}

/// The metrics layer with its prices and the metric settings that are set.
fn metrics_layer(settings: &MetricsSettings, prices: PriceTable) -> MetricsLayer {
    let mut metrics = MetricsLayer::new().price_table(prices);
    metrics = set(metrics, settings.genai_metrics, MetricsLayer::genai_metrics);
    metrics = set(metrics, settings.max_tenants, MetricsLayer::max_tenants);
    metrics
}

/// The cache store: in-process memory alone, or memory in front of Redis (one node, or a
/// Redis Cluster for several URLs). Also returns the shared store, which `/readyz` pings, and
/// the Redis store for fleet coalescing.
///
/// Connecting never waits for Redis: a Redis that is down now is a miss per request, not a
/// failed start, and the store reconnects on its own.
async fn cache_store(
    settings: &CacheSettings,
    urls: &[String],
) -> Result<
    (
        Arc<dyn CacheStore>,
        Option<Arc<dyn CacheStore>>,
        Option<RedisStore>,
    ),
    BoxError,
> {
    let memory = MemoryStore::new(
        settings
            .memory_max_bytes
            .unwrap_or(StackBuilder::DEFAULT_MEMORY_CACHE_BYTES),
    );
    let redis = match urls {
        [] => return Ok((Arc::new(memory), None, None)),
        [url] => RedisStore::connect(url).await,
        urls => {
            let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
            RedisStore::cluster(&urls).await
        }
    }
    .map_err(|error| format!("redis: {error}"))?;
    let redis = set(
        redis,
        settings.redis_timeout_ms.map(Duration::from_millis),
        RedisStore::timeout,
    );
    let tiered = set(
        TieredStore::new(memory, redis.clone()),
        settings.front_ttl_secs.map(Duration::from_secs),
        TieredStore::front_ttl,
    );
    let store: Arc<dyn CacheStore> = Arc::new(tiered);
    Ok((Arc::clone(&store), Some(store), Some(redis)))
}

/// The semantic cache, when it is on for all or for some tenants; its vectors are shared through
/// the cache's Redis when there is one.
fn semantic_cache(
    s: &SemanticSettings,
    urls: &[String],
    cache_ttl_secs: Option<u64>,
    switches: &std::collections::HashMap<Arc<str>, bool>,
) -> Result<Option<SemanticCacheLayer>, BoxError> {
    let tenants = s.tenants.as_deref().unwrap_or_default();
    let enabled = s.enabled.unwrap_or(false);
    if !enabled && tenants.is_empty() && !switches.values().any(|on| *on) {
        return Ok(None);
    }
    let mut layer = SemanticCacheLayer::new().enabled(enabled);
    for tenant in tenants.iter().flat_map(|t| t.split(',')).map(str::trim) {
        if !tenant.is_empty() {
            layer = layer.tenant(tenant, true);
        }
    }
    // A tenants file's `semantic` switch wins over the lists above.
    for (tenant, on) in switches {
        layer = layer.tenant(&**tenant, *on);
    }
    layer = set(layer, s.threshold, SemanticCacheLayer::threshold);
    layer = set(
        layer,
        s.embedding_model.as_deref(),
        SemanticCacheLayer::embedding_model,
    );
    layer = set(layer, s.embedding_dimensions, |l, d| {
        l.embedding_dimensions(Some(d))
    });
    layer = set(
        layer,
        s.embedding_timeout_ms.map(Duration::from_millis),
        SemanticCacheLayer::embedding_timeout,
    );
    layer = set(layer, s.index_max_bytes, SemanticCacheLayer::max_bytes);
    // Vectors live as long as their entries; the bound also trims the shared stream by age.
    layer = layer.ttl(cache_ttl_secs.map_or(CacheLayer::DEFAULT_TTL, Duration::from_secs));
    let fleet = match urls {
        [] => None,
        [url] => Some(RedisFleet::connect(url)),
        urls => {
            let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
            Some(RedisFleet::cluster(&urls))
        }
    };
    if let Some(fleet) = fleet {
        layer = layer.fleet(fleet.map_err(|error| format!("redis: {error}"))?);
    }
    Ok(Some(layer))
}

/// The metrics layer's Prometheus builder, with the semantic cache's similarity histogram.
fn prometheus_builder() -> Result<prometheus::PrometheusBuilder, prometheus::BuildError> {
    prometheus::builder()?.set_buckets_for_metric(
        prometheus::Matcher::Full(holysheep::semantic::names::SIMILARITY.to_owned()),
        holysheep::semantic::names::SIMILARITY_BUCKETS,
    )
}

/// The Prometheus text renderer. The recorder is process-global and can be installed once, so
/// every gateway in the process (tests start several) shares it.
fn metrics_renderer() -> Arc<dyn Fn() -> String + Send + Sync> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    let handle = HANDLE.get_or_init(|| match prometheus_builder().and_then(prometheus::install_from) {
        Ok(handle) => {
            holysheep::semantic::describe();
            Some(handle)
        }
        Err(error) => {
            tracing::warn!(error = %error, "cannot install the Prometheus recorder; /metrics is empty");
            None
        }
    });
    match handle {
        Some(handle) => {
            let handle = handle.clone();
            Arc::new(move || handle.render())
        }
        None => Arc::new(String::new),
    }
}

/// The probes behind `/readyz`: the upstream, called through the pool limit like any call (so
/// probes count against its caps and wait their turn) or, with `[[deployments]]`, through the
/// router (ready when one deployment answers), and the shared cache store when Redis is
/// configured, each within the readiness timeout.
///
/// One probe runs per interval whatever the request rate: callers within the interval share
/// the last answer, and callers arriving while a probe runs wait for it. Why a probe failed is
/// logged, never answered: the route is open to anyone who can reach it.
#[derive(Clone)]
pub(crate) struct Readiness {
    inner: Arc<Probes>,
}

struct Probes {
    upstream: Upstream,
    store: Option<Arc<dyn CacheStore>>,
    timeout: Duration,
    interval: Duration,
    /// When the last probe ended, and whether everything answered.
    last: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

impl Readiness {
    /// Whether the upstream answers at all (any status: a 401 still proves it is reachable)
    /// and, with Redis configured, the store answers a ping; from the last probe while it is
    /// fresh.
    pub(crate) async fn check(&self) -> bool {
        let probes = &self.inner;
        // Held across the probe: whoever comes meanwhile waits for its answer.
        let mut last = probes.last.lock().await;
        if let Some((at, ready)) = *last
            && at.elapsed() < probes.interval
        {
            return ready;
        }
        let (upstream, store) = tokio::join!(probes.check_upstream(), probes.check_store());
        let mut ready = true;
        for failure in [upstream, store].into_iter().filter_map(Result::err) {
            tracing::warn!(reason = %failure, "not ready");
            ready = false;
        }
        *last = Some((Instant::now(), ready));
        ready
    }
}

impl Probes {
    async fn check_store(&self) -> Result<(), String> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        match tokio::time::timeout(self.timeout, store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(format!("cache store ({}): {error}", store.kind())),
            Err(_) => Err(format!(
                "cache store ({}) did not answer within {} ms",
                store.kind(),
                self.timeout.as_millis()
            )),
        }
    }

    async fn check_upstream(&self) -> Result<(), String> {
        let request = Request::get("/models")
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let call = async {
            let response = self.upstream.clone().oneshot(request).await?;
            // Read to the end, so the connection goes back to the pool (and the slot with it).
            response.into_body().collect().await?;
            Ok::<_, BoxError>(())
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(format!("upstream: {error}")),
            Err(_) => Err(format!(
                "upstream did not answer within {} ms",
                self.timeout.as_millis()
            )),
        }
    }
}
