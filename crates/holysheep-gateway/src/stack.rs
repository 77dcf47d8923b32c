//! The layer stack the gateway forwards through ([`holysheep::Stack`]), built from the
//! configuration, and the readiness probes.
//!
//! Only settings the configuration sets are passed on; the rest keep their crate's default.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use holysheep::cache::{
    CacheLayer, CacheStore, DefaultKeyPolicy, MemoryStore, RedisStore, TieredStore,
};
use holysheep::client::{self, HolySheepClient};
use holysheep::pool_limit::PoolLimitLayer;
use holysheep::retry::RetryLayer;
use holysheep::{Stack, StackBuilder};
use holysheep_core::BoxError;
use holysheep_metrics::prometheus::{self, PrometheusHandle};
use http::Request;
use http_body_util::Full;
use tower::ServiceExt;

use crate::config::{CacheSettings, Config};

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

    let mut client = HolySheepClient::builder();
    client = set(
        client,
        base_url.or(s.client.base_url.as_deref()),
        client::Builder::base_url,
    );
    client = set(client, api_key, client::Builder::api_key);
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
    client = set(
        client,
        secs(s.client.pool_idle_timeout_secs),
        client::Builder::pool_idle_timeout,
    );

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

    let mut pool = PoolLimitLayer::default();
    pool = set(pool, s.pool.max_in_flight, PoolLimitLayer::total);
    pool = set(pool, s.pool.per_host, PoolLimitLayer::per_host);
    pool = set(
        pool,
        millis(s.pool.queue_timeout_ms),
        PoolLimitLayer::queue_timeout,
    );
    pool = set(pool, s.pool.queue_depth, PoolLimitLayer::max_queue);

    let (store, shared_store) = cache_store(&s.cache, &config.redis_urls()).await?;
    let mut cache = CacheLayer::with_store(store).max_body_bytes(config.body_limit());
    cache = set(cache, secs(s.cache.ttl_secs), CacheLayer::ttl);
    cache = set(cache, s.cache.max_entry_bytes, CacheLayer::max_entry_bytes);
    cache = set(cache, s.cache.key_scheme, |cache, scheme| {
        cache.key_policy(DefaultKeyPolicy::new().scheme(scheme))
    });

    let stack = Stack::builder()
        .client(client)
        .retry(retry)
        .pool_limit(pool)
        .cache(cache)
        .build()?;
    Ok(Built {
        readiness: Readiness {
            client: stack.client().clone(),
            store: shared_store,
            timeout: config.ready_timeout(),
        },
        stack,
        render_metrics: metrics_renderer(),
    })
}

/// The cache store: in-process memory alone, or memory in front of Redis (one node, or a
/// Redis Cluster for several URLs). Also returns the shared store, which `/readyz` pings.
///
/// Connecting never waits for Redis: a Redis that is down now is a miss per request, not a
/// failed start, and the store reconnects on its own.
async fn cache_store(
    settings: &CacheSettings,
    urls: &[String],
) -> Result<(Arc<dyn CacheStore>, Option<Arc<dyn CacheStore>>), BoxError> {
    let memory = MemoryStore::new(
        settings
            .memory_max_bytes
            .unwrap_or(StackBuilder::DEFAULT_MEMORY_CACHE_BYTES),
    );
    let redis = match urls {
        [] => return Ok((Arc::new(memory), None)),
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
        TieredStore::new(memory, redis),
        settings.front_ttl_secs.map(Duration::from_secs),
        TieredStore::front_ttl,
    );
    let store: Arc<dyn CacheStore> = Arc::new(tiered);
    Ok((Arc::clone(&store), Some(store)))
}

/// The Prometheus text renderer. The recorder is process-global and can be installed once, so
/// every gateway in the process (tests start several) shares it.
fn metrics_renderer() -> Arc<dyn Fn() -> String + Send + Sync> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    let handle = HANDLE.get_or_init(|| match prometheus::install() {
        Ok(handle) => Some(handle),
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

/// The probes behind `/readyz`.
#[derive(Clone)]
pub(crate) struct Readiness {
    client: HolySheepClient,
    store: Option<Arc<dyn CacheStore>>,
    timeout: Duration,
}

impl Readiness {
    /// `Ok` when the upstream answers at all (any status: a 401 still proves it is reachable)
    /// and, with Redis configured, the store answers a ping, each within the bound; otherwise
    /// why not.
    pub(crate) async fn check(&self) -> Result<(), String> {
        let (upstream, store) = tokio::join!(self.check_upstream(), self.check_store());
        upstream.and(store)
    }

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
        match tokio::time::timeout(self.timeout, self.client.clone().oneshot(request)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!("upstream: {error}")),
            Err(_) => Err(format!(
                "upstream did not answer within {} ms",
                self.timeout.as_millis()
            )),
        }
    }
}
