//! The [`SemanticCacheLayer`].

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use holysheep_core::BoxError;
use holysheep_core::price::ModelPrice;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use tower::Service;
use tower_layer::Layer;

use crate::embed::{Embedder, UpstreamEmbedder};
#[cfg(feature = "redis")]
use crate::fleet::RedisFleet;
use crate::request::SkipRules;
use crate::service::{SemanticCache, Shared};

#[derive(Clone)]
enum EmbedderChoice {
    Upstream {
        path: Arc<str>,
        model: Arc<str>,
        dimensions: Option<u32>,
    },
    Custom(Arc<dyn Embedder>),
}

/// Builds [`SemanticCache`] services. Holds configuration only; each service it builds gets its
/// own index (and, with a [`fleet`](Self::fleet), its own tail of the shared stream).
///
/// ```
/// use std::time::Duration;
/// use holysheep_semantic::SemanticCacheLayer;
///
/// let layer = SemanticCacheLayer::new()
///     .threshold(0.95)
///     .embedding_model("text-embedding-3-small")
///     .embedding_dimensions(Some(512))
///     .embedding_timeout(Duration::from_millis(300))
///     .tenant("tenant-with-agents", false);
/// # let _ = layer;
/// ```
#[derive(Clone)]
pub struct SemanticCacheLayer {
    pub(crate) enabled: bool,
    pub(crate) tenants: Arc<HashMap<String, bool>>,
    pub(crate) threshold: f32,
    embedder: EmbedderChoice,
    pub(crate) embedding_timeout: Duration,
    pub(crate) embedding_price: ModelPrice,
    pub(crate) max_bytes: usize,
    pub(crate) embedding_cache_bytes: u64,
    pub(crate) ttl: Option<Duration>,
    pub(crate) skip: SkipRules,
    pub(crate) off: bool,
    #[cfg(feature = "redis")]
    fleet: Option<RedisFleet>,
}

impl SemanticCacheLayer {
    /// The default similarity a paraphrase needs: cosine 0.95, the HolySheep article's
    /// `similarity_threshold`.
    pub const DEFAULT_THRESHOLD: f32 = 0.95;
    /// The default embedding model.
    pub const DEFAULT_EMBEDDING_MODEL: &'static str = "text-embedding-3-small";
    /// The default `dimensions` asked for: 1,536, `text-embedding-3-small`'s own.
    pub const DEFAULT_EMBEDDING_DIMENSIONS: u32 = 1536;
    /// The default path embeddings are asked at, below the inner service (a `HolySheepClient`
    /// whose base URL ends in `/v1`).
    pub const DEFAULT_EMBEDDINGS_PATH: &'static str = "/embeddings";
    /// The default bound of one embedding call: 300 ms. Slower is a miss.
    pub const DEFAULT_EMBEDDING_TIMEOUT: Duration = Duration::from_millis(300);
    /// The default price of embeddings: $0.02 per million tokens (text-embedding-3-small).
    pub const DEFAULT_EMBEDDING_PRICE: ModelPrice = ModelPrice::flat(0.02);
    /// The default bound of the index: 256 MiB.
    pub const DEFAULT_MAX_BYTES: usize = 256 << 20;
    /// The default bound of the exact cache of embeddings: 16 MiB.
    pub const DEFAULT_EMBEDDING_CACHE_BYTES: u64 = 16 << 20;

    /// A layer with the defaults: on for every request, threshold 0.95, embeddings from the
    /// inner service's `POST /embeddings` with `text-embedding-3-small` in 300 ms, an index of
    /// up to 256 MiB, vectors living as long as their answers' entries, this instance only.
    pub fn new() -> Self {
        Self {
            enabled: true,
            tenants: Arc::new(HashMap::new()),
            threshold: Self::DEFAULT_THRESHOLD,
            embedder: EmbedderChoice::Upstream {
                path: Arc::from(Self::DEFAULT_EMBEDDINGS_PATH),
                model: Arc::from(Self::DEFAULT_EMBEDDING_MODEL),
                dimensions: Some(Self::DEFAULT_EMBEDDING_DIMENSIONS),
            },
            embedding_timeout: Self::DEFAULT_EMBEDDING_TIMEOUT,
            embedding_price: Self::DEFAULT_EMBEDDING_PRICE,
            max_bytes: Self::DEFAULT_MAX_BYTES,
            embedding_cache_bytes: Self::DEFAULT_EMBEDDING_CACHE_BYTES,
            ttl: None,
            skip: SkipRules::default(),
            off: false,
            #[cfg(feature = "redis")]
            fleet: None,
        }
    }

    /// Whether requests use the semantic cache unless their tenant or they themselves say
    /// otherwise. Default: on. Off, only opted-in tenants ([`tenant`](Self::tenant)) and
    /// requests sending `x-holysheep-semantic-cache: on` use it.
    pub fn enabled(mut self, on: bool) -> Self {
        self.enabled = on;
        self
    }

    /// Opts a tenant (the `Namespace` request extension) in or out, whatever
    /// [`enabled`](Self::enabled) says. A tenant opted out is never looked up, even when a
    /// request asks.
    pub fn tenant(mut self, namespace: impl Into<String>, on: bool) -> Self {
        Arc::make_mut(&mut self.tenants).insert(namespace.into(), on);
        self
    }

    /// The cosine similarity a stored question needs to answer a new one (default 0.95).
    pub fn threshold(mut self, threshold: f32) -> Self {
        self.threshold = threshold;
        self
    }

    /// The embedding model asked for at the upstream (default `text-embedding-3-small`).
    /// Ignored with a custom [`embedder`](Self::embedder).
    pub fn embedding_model(mut self, model: impl AsRef<str>) -> Self {
        if let EmbedderChoice::Upstream { model: m, .. } = &mut self.embedder {
            *m = Arc::from(model.as_ref());
        }
        self
    }

    /// The `dimensions` asked for at the upstream (default 1,536; `None` sends none, for models
    /// that take no `dimensions`).
    pub fn embedding_dimensions(mut self, dimensions: Option<u32>) -> Self {
        if let EmbedderChoice::Upstream { dimensions: d, .. } = &mut self.embedder {
            *d = dimensions;
        }
        self
    }

    /// The path embeddings are asked at below the inner service (default `/embeddings`; a
    /// service that takes full paths wants `/v1/embeddings`).
    pub fn embeddings_path(mut self, path: impl AsRef<str>) -> Self {
        if let EmbedderChoice::Upstream { path: p, .. } = &mut self.embedder {
            *p = Arc::from(path.as_ref());
        }
        self
    }

    /// Embeds with `embedder` instead of the upstream's `/embeddings`.
    pub fn embedder(mut self, embedder: impl Embedder) -> Self {
        self.embedder = EmbedderChoice::Custom(Arc::new(embedder));
        self
    }

    /// Bounds each embedding call (default 300 ms); a slower one is a miss.
    pub fn embedding_timeout(mut self, timeout: Duration) -> Self {
        self.embedding_timeout = timeout;
        self
    }

    /// The price of embeddings, for `holysheep_semantic_embedding_cost_microusd_total`
    /// (default $0.02 per million tokens).
    pub fn embedding_price(mut self, price: ModelPrice) -> Self {
        self.embedding_price = price;
        self
    }

    /// Bounds the index, in bytes (default 256 MiB); the vectors closest to expiry go first.
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Bounds the exact cache of embeddings, in bytes (default 16 MiB).
    pub fn embedding_cache_bytes(mut self, bytes: u64) -> Self {
        self.embedding_cache_bytes = bytes;
        self
    }

    /// Bounds how long a vector lives. By default a vector lives exactly as long as the exact
    /// cache's entry of its answer (the cache's TTL, lowered by the request's `max-age`).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// A layer that looks nothing up and records nothing: every request passes straight
    /// through (an `x-holysheep-semantic-cache` header is still removed). What
    /// `holysheep::StackBuilder` puts in place when no semantic cache is configured.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            off: true,
            ..Self::new()
        }
    }

    /// When requests are left alone (see [`SkipRules`]).
    pub fn skip_rules(mut self, rules: SkipRules) -> Self {
        self.skip = rules;
        self
    }

    /// Shares vectors with every instance using the same Redis (see [`RedisFleet`]).
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn fleet(mut self, fleet: RedisFleet) -> Self {
        self.fleet = Some(fleet);
        self
    }

    pub(crate) fn embedder_for<S, ResBody>(&self, inner: &S) -> Arc<dyn Embedder>
    where
        S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send,
        ResBody: Body + Send + 'static,
        ResBody::Data: Send,
        ResBody::Error: Into<BoxError>,
    {
        match &self.embedder {
            EmbedderChoice::Upstream {
                path,
                model,
                dimensions,
            } => Arc::new(
                UpstreamEmbedder::new(inner.clone(), Arc::clone(path), Arc::clone(model))
                    .dimensions(*dimensions),
            ),
            EmbedderChoice::Custom(embedder) => Arc::clone(embedder),
        }
    }

    /// The `dimensions` asked for, hashed into buckets so vectors of another size never meet.
    pub(crate) fn dimensions(&self) -> Option<u32> {
        match &self.embedder {
            EmbedderChoice::Upstream { dimensions, .. } => *dimensions,
            EmbedderChoice::Custom(_) => None,
        }
    }

    #[cfg(feature = "redis")]
    pub(crate) fn fleet_config(&self) -> Option<&RedisFleet> {
        self.fleet.as_ref()
    }
}

impl Default for SemanticCacheLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SemanticCacheLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("SemanticCacheLayer");
        d.field("enabled", &self.enabled)
            .field("threshold", &self.threshold)
            .field("embedding_timeout", &self.embedding_timeout)
            .field("max_bytes", &self.max_bytes)
            .field("skip", &self.skip);
        if let EmbedderChoice::Upstream {
            model, dimensions, ..
        } = &self.embedder
        {
            d.field("embedding_model", model)
                .field("embedding_dimensions", dimensions);
        }
        #[cfg(feature = "redis")]
        d.field("fleet", &self.fleet);
        d.finish_non_exhaustive()
    }
}

impl<S, ResBody> Layer<S> for SemanticCacheLayer
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    type Service = SemanticCache<S>;

    fn layer(&self, inner: S) -> SemanticCache<S> {
        let shared = Shared::new(self, self.embedder_for(&inner));
        SemanticCache::from_parts(inner, Arc::new(shared))
    }
}
