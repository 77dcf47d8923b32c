//! The layer stack the gateway forwards through, and the readiness probes.
//!
//! `MetricsLayer → CacheLayer → RetryLayer → PoolLimitLayer → HolySheepClient`, outermost first:
//! metrics see cache hits; a hit costs nothing below the cache; a retried miss fills the cache
//! once; each retry attempt takes its own pool slot and a backoff sleep holds none.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use holysheep_core::BoxError;
use http::{Request, Response};
use http_body_util::Full;
use tower::ServiceBuilder;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use holysheep::cache::{
    CacheLayer, CacheStore, DefaultKeyPolicy, MemoryStore, RedisStore, TieredStore,
};
use holysheep::client::HolySheepClient;
use holysheep::metrics::MetricsLayer;
use holysheep::metrics::prometheus::{self, PrometheusHandle};
use holysheep::pool_limit::PoolLimitLayer;
use holysheep::retry::RetryLayer;

use super::config::{CacheSettings, Config};

/// What the routes send through the stack: a buffered JSON body, cloneable for retries.
pub(crate) type UpstreamRequest = Request<Full<Bytes>>;

/// The assembled stack, boxed once so handlers need not name its type.
pub(crate) type Upstream = BoxCloneSyncService<UpstreamRequest, Response<Body>, BoxError>;

/// The built stack and what the operator routes need beside it.
pub(crate) struct Stack {
    /// The layers around the client.
    pub(crate) upstream: Upstream,
    /// Probes for `/readyz`.
    pub(crate) readiness: Readiness,
    /// Renders `/metrics`.
    pub(crate) render_metrics: Arc<dyn Fn() -> String + Send + Sync>,
}

/// Builds the stack for `upstream_url` with the upstream key.
pub(crate) async fn build(
    config: &Config,
    upstream_url: &str,
    api_key: Option<&str>,
) -> Result<Stack, BoxError> {
    let mut builder = HolySheepClient::builder()
        .base_url(upstream_url)
        .connect_timeout(config.client.connect_timeout)
        .timeout(config.client.timeout)
        .read_timeout(config.client.read_timeout)
        .pool_idle_timeout(config.client.pool_idle_timeout)
        .pool_max_idle_per_host(config.pool.per_host);
    if let Some(key) = api_key {
        builder = builder.api_key(key);
    }
    let client = builder.build()?;

    let retry = RetryLayer::new()
        .max_retries(config.retry.max_retries)
        .backoff(config.retry.base, config.retry.cap)
        .deadline(config.retry.deadline)
        .budget(10, config.retry.budget_percent as f32 / 100.0);

    // All requests go to one upstream host, so the effective cap is the smaller of the two
    // limits, as with the seed's connection pool.
    let pool = PoolLimitLayer::new(config.pool.max_in_flight, config.pool.per_host)
        .queue_timeout(config.pool.queue_timeout)
        .max_queue(config.pool.queue_depth);

    let (store, shared_store) = cache_store(&config.cache).await?;
    let cache = CacheLayer::with_store(store)
        .ttl(config.cache.ttl)
        .max_entry_bytes(config.cache.max_entry_bytes)
        .max_body_bytes(config.server.body_limit_bytes)
        .key_policy(DefaultKeyPolicy::new().scheme(config.cache.key_scheme))
        .upstream(upstream_url);

    let render_metrics = metrics_renderer();

    let service = ServiceBuilder::new()
        .layer(MetricsLayer::new())
        .layer(cache)
        .layer(retry)
        .layer(pool)
        .service(client.clone());
    // Named request type: every layer is generic over the body, so inference needs the anchor.
    let service = ServiceExt::<UpstreamRequest>::map_response(service, into_axum);
    let service = ServiceExt::<UpstreamRequest>::map_err(service, Into::<BoxError>::into);

    Ok(Stack {
        upstream: BoxCloneSyncService::new(service),
        readiness: Readiness {
            client,
            store: shared_store,
            timeout: config.server.ready_timeout,
        },
        render_metrics,
    })
}

/// The cache store: in-process memory alone, or memory in front of Redis (one node, or a
/// Redis Cluster for several URLs). Also returns the shared store, which `/readyz` pings.
///
/// Connecting never waits for Redis: a Redis that is down now is a miss per request, not a
/// failed start, and the store reconnects on its own.
async fn cache_store(
    settings: &CacheSettings,
) -> Result<(Arc<dyn CacheStore>, Option<Arc<dyn CacheStore>>), BoxError> {
    let memory = MemoryStore::new(settings.memory_max_bytes);
    let redis = match settings.redis.as_slice() {
        [] => return Ok((Arc::new(memory), None)),
        [url] => RedisStore::connect(url).await,
        urls => {
            let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
            RedisStore::cluster(&urls).await
        }
    }
    .map_err(|error| format!("redis: {error}"))?;
    let store: Arc<dyn CacheStore> = Arc::new(TieredStore::new(
        memory,
        redis.timeout(settings.redis_timeout),
    ));
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

/// Gives the stack's response body the one type the routes return.
fn into_axum<B>(response: Response<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    response.map(Body::new)
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
