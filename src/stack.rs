//! [`Stack`]: the recommended composition of the layers, built in one place.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use tower::{Layer, Service};

use crate::cache::{Cache, CacheLayer, MemoryStore};
use crate::client::{self, HolySheepClient};
use crate::metrics::{AttemptTrace, AttemptTraceLayer, Metrics, MetricsLayer};
use crate::pool_limit::{PoolLimitHandle, PoolLimitLayer};
use crate::retry::{Retry, RetryLayer};
#[cfg(feature = "semantic")]
use crate::semantic::{SemanticCache, SemanticCacheLayer};
use crate::usage::{IncludeUsage, IncludeUsageLayer};

#[cfg(feature = "quota")]
use crate::quota::{Quota, QuotaLayer, QuotaPolicy};

/// The service at the bottom: the pooled client, or with the `router` feature, the client or a
/// router over several deployments.
#[cfg(not(feature = "router"))]
type Bottom = crate::pool_limit::PoolLimit<HolySheepClient>;
#[cfg(feature = "router")]
type Bottom = crate::router::Upstream;

#[cfg(not(feature = "semantic"))]
type BelowCache = Retry<AttemptTrace<Bottom>>;
#[cfg(feature = "semantic")]
type BelowCache = SemanticCache<Retry<AttemptTrace<Bottom>>>;
#[cfg(not(feature = "quota"))]
type Inner = IncludeUsage<Metrics<Cache<BelowCache>>>;
#[cfg(feature = "quota")]
type Inner = IncludeUsage<Metrics<Quota<Cache<BelowCache>>>>;

/// The recommended stack, outermost first:
///
/// ```text
/// IncludeUsageLayer → MetricsLayer → [QuotaLayer →] CacheLayer → RetryLayer → AttemptTraceLayer → PoolLimitLayer → HolySheepClient
/// ```
///
/// - `IncludeUsageLayer` is outermost so that every layer below sees a streamed answer's usage
///   (it asks the upstream for it) while a client that did not ask never sees it (it takes the
///   usage chunk out again on the way back). Counting layers need no code for streams, and the
///   cache stores every stream with its usage and serves askers and non-askers from one entry.
/// - `MetricsLayer` sees every request, hits too, and opens the request's span.
/// - With the `quota` feature and [`StackBuilder::quota`], `QuotaLayer` sits between the
///   metrics and the cache: it counts every request (hits too) and refuses a tenant over its
///   limits before the cache (a refusal is still measured); tokens and dollars count only what
///   the cache did not answer.
/// - A hit costs nothing below the cache; a retried miss fills the cache once.
/// - With the `semantic` feature and [`StackBuilder::semantic_cache`], `SemanticCacheLayer`
///   sits between the cache and the retries: exact hits never pay for an embedding, and the
///   semantic cache answers from the exact cache's own entries.
/// - `AttemptTraceLayer` opens one child span per upstream attempt, below the retries; above
///   the pool limit, so the span shows the wait for a slot.
/// - With the `router` feature and [`StackBuilder::router`], a `Router` takes the place of the
///   pool limit and the client: each of its deployments has its own client and pool limit, and
///   the retries above spend their one budget on whichever deployment each attempt reaches.
/// - Each attempt takes its own pool slot and a backoff sleep holds none.
///
/// Build it with [`Stack::builder`]. The builder wires the settings that span layers, so no
/// composition has to repeat them:
/// - the cache hashes the client's base URL into its keys ([`CacheLayer::upstream`]), so two
///   upstreams never share answers;
/// - the client keeps as many idle connections per host as the pool limit lets run per host;
/// - the metrics count the pool limit's sheds as `holysheep_shed_total` (the error vocabulary
///   of `holysheep-core` is shared by every layer, so nothing needs registering);
/// - the request and attempt spans name the client's host and port as `server.address` and
///   `server.port`.
///
/// Each layer still works alone: [`Stack`] is only the composition the gateway, the examples,
/// the load harness and the benches share. It is a `tower::Service` over `http::Request<B>` for
/// any body the cache can read, and cheap to clone (every layer shares its state).
///
/// ```
/// use bytes::Bytes;
/// use http::Request;
/// use http_body_util::{BodyExt, Full};
/// use tower::ServiceExt;
///
/// use holysheep::Stack;
/// use holysheep::client::HolySheepClient;
/// use holysheep::retry::RetryLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), holysheep::core::BoxError> {
/// # let mock = holysheep_mock::MockServer::start(holysheep_mock::MockConfig::new().api_key("sk-test")).await?;
/// # let base_url = mock.base_url();
/// let stack = Stack::builder()
///     .client(HolySheepClient::builder().base_url(base_url).api_key("sk-test"))
///     .retry(RetryLayer::new().max_retries(2))
///     .build()?;
///
/// let body = r#"{"model":"gpt-4.1","messages":[{"role":"user","content":"Hello"}]}"#;
/// let request = Request::post("/chat/completions")
///     .header("content-type", "application/json")
///     .body(Full::new(Bytes::from(body)))?;
/// let response = stack.oneshot(request).await?;
/// assert_eq!(response.headers()["x-cache"], "MISS");
/// let answer = response.into_body().collect().await?.to_bytes();
/// assert!(answer.starts_with(b"{"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Stack {
    inner: Inner,
    // Behind one `Arc`: a request clones the stack, and only `inner` is on its path.
    parts: Arc<Parts>,
}

/// What a [`Stack`] keeps for probes and handles besides the layers.
struct Parts {
    client: HolySheepClient,
    pool: PoolLimitHandle,
    #[cfg(feature = "router")]
    router: Option<crate::router::Router>,
    #[cfg(feature = "quota")]
    quota: QuotaLayer,
}

impl Stack {
    /// A builder with every layer at its defaults: the HolySheep base URL and no key, an
    /// in-memory cache of [`StackBuilder::DEFAULT_MEMORY_CACHE_BYTES`].
    pub fn builder() -> StackBuilder {
        StackBuilder::new()
    }

    /// The client at the bottom of the stack, for probes that must bypass the layers.
    pub fn client(&self) -> &HolySheepClient {
        &self.parts.client
    }

    /// The pool limit's counters (in flight, queued, shed).
    pub fn pool_limit(&self) -> &PoolLimitHandle {
        &self.parts.pool
    }

    /// The router at the bottom, when the stack was built with one
    /// ([`StackBuilder::router`]); then [`client`](Self::client) and
    /// [`pool_limit`](Self::pool_limit) are not on the path of requests.
    #[cfg(feature = "router")]
    #[cfg_attr(docsrs, doc(cfg(feature = "router")))]
    pub fn router(&self) -> Option<&crate::router::Router> {
        self.parts.router.as_ref()
    }

    /// The stack's quota layer: its [`handle`](QuotaLayer::handle) reloads the tenants and
    /// reads one's usage, and wrapping another service in it (a route answered by the
    /// application itself) counts that service's requests against the same limits.
    #[cfg(feature = "quota")]
    #[cfg_attr(docsrs, doc(cfg(feature = "quota")))]
    pub fn quota(&self) -> &QuotaLayer {
        &self.parts.quota
    }
}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack")
            .field("client", &self.parts.client)
            .finish_non_exhaustive()
    }
}

impl<B> Service<Request<B>> for Stack
where
    Inner: Service<Request<B>>,
{
    type Response = <Inner as Service<Request<B>>>::Response;
    type Error = <Inner as Service<Request<B>>>::Error;
    type Future = <Inner as Service<Request<B>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        self.inner.call(request)
    }
}

/// Configures a [`Stack`]: each layer as you would configure it alone, handed over whole.
#[derive(Debug, Clone)]
#[must_use]
pub struct StackBuilder {
    client: client::Builder,
    cache: Option<CacheLayer>,
    retry: RetryLayer,
    pool_limit: PoolLimitLayer,
    metrics: MetricsLayer,
    #[cfg(feature = "semantic")]
    semantic: Option<SemanticCacheLayer>,
    #[cfg(feature = "quota")]
    quota: Option<QuotaLayer>,
    usage: IncludeUsageLayer,
    #[cfg(feature = "router")]
    router: Option<crate::router::Router>,
}

impl Default for StackBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl StackBuilder {
    /// The bound of the in-memory cache used when no [`cache`](Self::cache) layer is given:
    /// 256 MiB.
    pub const DEFAULT_MEMORY_CACHE_BYTES: u64 = 256 << 20;

    /// Every layer at its defaults.
    pub fn new() -> Self {
        Self {
            client: HolySheepClient::builder(),
            cache: None,
            retry: RetryLayer::new(),
            pool_limit: PoolLimitLayer::default(),
            metrics: MetricsLayer::new(),
            #[cfg(feature = "semantic")]
            semantic: None,
            #[cfg(feature = "quota")]
            quota: None,
            usage: IncludeUsageLayer::new(),
            #[cfg(feature = "router")]
            router: None,
        }
    }

    /// The upstream client: base URL, key, timeouts. Its idle connections per host are set
    /// from the pool limit at [`build`](Self::build).
    pub fn client(mut self, client: client::Builder) -> Self {
        self.client = client;
        self
    }

    /// The cache layer (default: [`CacheLayer::new`] over a [`MemoryStore`] of
    /// [`DEFAULT_MEMORY_CACHE_BYTES`](Self::DEFAULT_MEMORY_CACHE_BYTES)). Its upstream is set
    /// from the client's base URL at [`build`](Self::build).
    pub fn cache(mut self, cache: CacheLayer) -> Self {
        self.cache = Some(cache);
        self
    }

    /// A semantic cache inside the exact cache (default: none, every request passes it
    /// untouched). It answers from the exact cache's entries, so it shares the cache layer's
    /// store, TTL and upstream with nothing to repeat; its embeddings go through the same retry,
    /// pool limit and client as the chat requests.
    #[cfg(feature = "semantic")]
    #[cfg_attr(docsrs, doc(cfg(feature = "semantic")))]
    pub fn semantic_cache(mut self, semantic: SemanticCacheLayer) -> Self {
        self.semantic = Some(semantic);
        self
    }

    /// Tenants' limits between the metrics and the cache (default: a [`QuotaLayer`] with an
    /// empty policy, which limits no one until its [`handle`](QuotaLayer::handle) (from
    /// [`Stack::quota`]) is given one).
    #[cfg(feature = "quota")]
    #[cfg_attr(docsrs, doc(cfg(feature = "quota")))]
    pub fn quota(mut self, quota: QuotaLayer) -> Self {
        self.quota = Some(quota);
        self
    }

    /// The retry layer (default: [`RetryLayer::new`]).
    pub fn retry(mut self, retry: RetryLayer) -> Self {
        self.retry = retry;
        self
    }

    /// The pool limit (default: [`PoolLimitLayer::default`], 100 in total, 30 per host).
    pub fn pool_limit(mut self, pool_limit: PoolLimitLayer) -> Self {
        self.pool_limit = pool_limit;
        self
    }

    /// The metrics layer (default: [`MetricsLayer::new`]).
    pub fn metrics(mut self, metrics: MetricsLayer) -> Self {
        self.metrics = metrics;
        self
    }

    /// Several deployments instead of one upstream: the router takes the place of the pool
    /// limit and the client (default: none, the one [`client`](Self::client) behind the
    /// [`pool_limit`](Self::pool_limit)). The cache hashes every deployment's base URL into its
    /// keys, and spans name the first deployment as the server.
    ///
    /// ```
    /// use holysheep::Stack;
    /// use holysheep::router::{Deployment, Router};
    ///
    /// let router = Router::builder()
    ///     .deployment(Deployment::new("https://api.holysheep.ai/v1", "sk-team-a").name("a"))
    ///     .deployment(Deployment::new("https://api.holysheep.ai/v1", "sk-team-b").name("b"))
    ///     .fallback("gpt-4.1", ["deepseek-v3.2"])
    ///     .build()?;
    /// let stack = Stack::builder().router(router).build()?;
    /// assert_eq!(stack.router().map(|r| r.status().len()), Some(2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "router")]
    #[cfg_attr(docsrs, doc(cfg(feature = "router")))]
    pub fn router(mut self, router: crate::router::Router) -> Self {
        self.router = Some(router);
        self
    }

    /// The usage layer (default: [`IncludeUsageLayer::new`]).
    pub fn include_usage(mut self, usage: IncludeUsageLayer) -> Self {
        self.usage = usage;
        self
    }

    /// Builds the client and wraps it in the layers. Fails only if the client's configuration
    /// is invalid (a bad base URL or key).
    pub fn build(self) -> Result<Stack, client::Error> {
        let client = self
            .client
            .pool_max_idle_per_host(self.pool_limit.limits().1)
            .build()?;
        #[cfg(not(feature = "router"))]
        let (upstream, base) = (client.base_url().to_string(), client.base_url());
        #[cfg(feature = "router")]
        let (upstream, base) = match &self.router {
            None => (client.base_url().to_string(), client.base_url()),
            Some(router) => {
                let urls = router.base_urls();
                let joined: Vec<String> = urls.iter().map(ToString::to_string).collect();
                (
                    format!("router {}", joined.join(" ")),
                    urls.first().copied().unwrap_or(client.base_url()),
                )
            }
        };
        let cache = self
            .cache
            .unwrap_or_else(|| CacheLayer::new(MemoryStore::new(Self::DEFAULT_MEMORY_CACHE_BYTES)))
            .upstream(upstream);
        let pool = self.pool_limit.handle();
        let (host, port) = (
            base.host().unwrap_or_default().to_owned(),
            base.port_u16().or(match base.scheme_str() {
                Some("https") => Some(443),
                Some("http") => Some(80),
                _ => None,
            }),
        );
        let attempts = AttemptTraceLayer::new().server(host.as_str(), port);
        let metrics = self.metrics.server(host, port);
        let bottom = self.pool_limit.layer(client.clone());
        #[cfg(feature = "router")]
        let bottom = match &self.router {
            None => crate::router::Upstream::One(bottom),
            Some(router) => crate::router::Upstream::Routed(router.clone()),
        };
        let below = self.retry.layer(attempts.layer(bottom));
        #[cfg(feature = "semantic")]
        let below = self
            .semantic
            .unwrap_or_else(SemanticCacheLayer::disabled)
            .layer(below);
        let cached = cache.layer(below);
        #[cfg(feature = "quota")]
        let quota_layer = self
            .quota
            .unwrap_or_else(|| QuotaLayer::new(QuotaPolicy::new()));
        #[cfg(feature = "quota")]
        let cached = quota_layer.layer(cached);
        let inner = self.usage.layer(metrics.layer(cached));
        Ok(Stack {
            inner,
            parts: Arc::new(Parts {
                client,
                pool,
                #[cfg(feature = "router")]
                router: self.router,
                #[cfg(feature = "quota")]
                quota: quota_layer,
            }),
        })
    }
}
