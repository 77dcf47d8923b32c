//! The [`SemanticCache`] service.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use holysheep_cache::{CacheAccess, EntryLookup};
use holysheep_core::BoxError;
use holysheep_core::price::ModelPrice;
use holysheep_core::signal::{Namespace, SemanticHit};
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::Full;
use metrics::{counter, histogram};
use tower::{Service, ServiceExt};

use crate::body::{Record, ResponseBody};
use crate::embed::{Embedder, EmbeddingCache};
#[cfg(feature = "redis")]
use crate::fleet::FleetHandle;
use crate::future::ResponseFuture;
use crate::index::{BucketId, Quantized, SemanticIndex, now_millis};
use crate::layer::SemanticCacheLayer;
use crate::names;
use crate::request::{Context as BucketContext, Question, Skip, SkipRules, question};

/// The request header that turns the semantic cache `on` or `off` for one request. It is
/// removed before the request goes on.
pub const SEMANTIC_CACHE: HeaderName = HeaderName::from_static("x-holysheep-semantic-cache");

/// The response header of a semantic hit: the cosine similarity of the request's question to
/// the stored one, with four decimals.
pub const SIMILARITY: HeaderName = HeaderName::from_static("x-holysheep-semantic-similarity");

/// How long a vector whose entry the store does not have is kept anyway: the exact cache writes
/// its entry in a task once the answer ended, a moment after the vector is recorded.
const MISSING_GRACE_MS: u64 = 5_000;

/// A semantic cache inside a `Cache` (see the [crate docs](crate)). Build it with
/// [`SemanticCacheLayer`].
///
/// `poll_ready` is always ready, as the exact cache's: a hit must not wait for upstream
/// capacity. The inner service is cloned per request and driven to readiness only when the
/// request goes upstream.
pub struct SemanticCache<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// The state a service shares with its clones, bodies and tasks.
pub(crate) struct Shared {
    enabled: bool,
    tenants: Arc<HashMap<String, bool>>,
    threshold: f32,
    skip: SkipRules,
    embedder: Arc<dyn Embedder>,
    dimensions: Option<u32>,
    embedding_timeout: Duration,
    embedding_price: ModelPrice,
    embedding_pico_usd: AtomicU64,
    embeddings: EmbeddingCache,
    ttl: Option<Duration>,
    off: bool,
    pub(crate) index: Arc<SemanticIndex>,
    #[cfg(feature = "redis")]
    fleet: Option<FleetHandle>,
}

impl Shared {
    pub(crate) fn new(layer: &SemanticCacheLayer, embedder: Arc<dyn Embedder>) -> Self {
        let index = Arc::new(SemanticIndex::new(layer.max_bytes));
        Self {
            #[cfg(feature = "redis")]
            fleet: layer
                .fleet_config()
                .and_then(|fleet| fleet.start(&index, layer.ttl)),
            enabled: layer.enabled,
            tenants: Arc::clone(&layer.tenants),
            threshold: layer.threshold,
            skip: layer.skip.clone(),
            embedder,
            dimensions: layer.dimensions(),
            embedding_timeout: layer.embedding_timeout,
            embedding_price: layer.embedding_price,
            embedding_pico_usd: AtomicU64::new(0),
            embeddings: EmbeddingCache::new(layer.embedding_cache_bytes),
            ttl: layer.ttl,
            off: layer.off,
            index,
        }
    }

    /// Whether the request is to be looked up, and what it asks.
    fn plan(&self, req: &mut Request<Full<Bytes>>) -> Result<(Question, CacheAccess), Skip> {
        let directive = match req.headers_mut().remove(SEMANTIC_CACHE) {
            Some(v) if v.as_bytes().eq_ignore_ascii_case(b"on") => Some(true),
            Some(v) if v.as_bytes().eq_ignore_ascii_case(b"off") => Some(false),
            _ => None,
        };
        let namespace = req.extensions().get::<Namespace>().map(Namespace::as_str);
        let tenant = namespace.and_then(|ns| self.tenants.get(ns).copied());
        let on = !self.off
            && match (directive, tenant) {
                (Some(false), _) | (_, Some(false)) => false,
                (Some(true), _) => true,
                (None, tenant) => tenant.unwrap_or(self.enabled),
            };
        if !on {
            return Err(Skip::Off);
        }
        let access = req
            .extensions()
            .get::<CacheAccess>()
            .cloned()
            .ok_or(Skip::NoCache)?;
        if !access.control().may_read() {
            return Err(Skip::NoRead);
        }
        let body = http_body_util::BodyExt::collect(req.body().clone());
        // A `Full` body is ready at once; its one frame is the whole body.
        let bytes = futures_util::FutureExt::now_or_never(body)
            .and_then(Result::ok)
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        let question = question(
            &self.skip,
            &bytes,
            &BucketContext {
                path: req.uri().path(),
                upstream: access.upstream(),
                namespace,
                embedder: self.embedder.model(),
                dimensions: self.dimensions,
            },
        )?;
        Ok((question, access))
    }

    /// The question's vector: from the exact cache of embeddings, or from the embedder within
    /// the timeout. `None` is a miss, never an error.
    async fn embed(&self, text: &str) -> Option<Arc<Quantized>> {
        let model = self.embedder.model().to_owned();
        let key = EmbeddingCache::key(text);
        if let Some(vector) = self.embeddings.get(&key) {
            counter!(names::EMBEDDINGS, "model" => model, "outcome" => "cached").increment(1);
            return Some(vector);
        }
        let outcome = tokio::time::timeout(self.embedding_timeout, self.embedder.embed(text)).await;
        let embedding = match outcome {
            Ok(Ok(embedding)) => embedding,
            Ok(Err(error)) => {
                tracing::debug!(%error, "embedding failed; the request is a semantic miss");
                counter!(names::EMBEDDINGS, "model" => model, "outcome" => "error").increment(1);
                return None;
            }
            Err(_) => {
                tracing::debug!("embedding timed out; the request is a semantic miss");
                counter!(names::EMBEDDINGS, "model" => model, "outcome" => "timeout").increment(1);
                return None;
            }
        };
        counter!(names::EMBEDDINGS, "model" => model.clone(), "outcome" => "ok").increment(1);
        if embedding.tokens > 0 {
            counter!(names::EMBEDDING_TOKENS, "model" => model.clone()).increment(embedding.tokens);
            let pico = (self.embedding_price.cost(embedding.tokens, 0) * 1e12).round() as u64;
            // Whole micro-dollars are counted; the remainder is carried to the next call.
            let before = self.embedding_pico_usd.fetch_add(pico, Ordering::Relaxed);
            let micro = (before + pico) / 1_000_000 - before / 1_000_000;
            if micro > 0 {
                counter!(names::EMBEDDING_COST, "model" => model).increment(micro);
            }
        }
        let vector = Arc::new(Quantized::new(&embedding.vector)?);
        self.embeddings.put(key, Arc::clone(&vector));
        Some(vector)
    }

    /// Remembers an answered question: in this instance's index, and in the fleet's stream.
    pub(crate) fn record(
        &self,
        bucket: BucketId,
        key: Arc<str>,
        vector: Quantized,
        expires_at: u64,
    ) {
        #[cfg(feature = "redis")]
        if let Some(fleet) = &self.fleet {
            fleet.publish(bucket, &key, &vector, expires_at);
        }
        self.index.insert(bucket, key, vector, expires_at);
    }
}

impl<S> SemanticCache<S> {
    pub(crate) fn from_parts(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// A [`SemanticCacheLayer`] with the defaults.
    pub fn layer() -> SemanticCacheLayer {
        SemanticCacheLayer::new()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the service, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The index of this service and its clones.
    pub fn index(&self) -> &SemanticIndex {
        &self.shared.index
    }
}

impl<S: Clone> Clone for SemanticCache<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for SemanticCache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemanticCache")
            .field("inner", &self.inner)
            .field("threshold", &self.shared.threshold)
            .field("index", &self.shared.index)
            .finish_non_exhaustive()
    }
}

impl<S, ResBody> Service<Request<Full<Bytes>>> for SemanticCache<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, ResBody>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Full<Bytes>>) -> Self::Future {
        match self.shared.plan(&mut req) {
            Ok((question, access)) => ResponseFuture::serve(Box::pin(serve(
                Arc::clone(&self.shared),
                self.inner.clone(),
                req,
                question,
                access,
            ))),
            Err(skip) => {
                counter!(names::SKIPPED, "reason" => skip.as_str()).increment(1);
                ResponseFuture::pass(self.inner.clone().oneshot(req))
            }
        }
    }
}

async fn serve<S, ResBody>(
    shared: Arc<Shared>,
    inner: S,
    req: Request<Full<Bytes>>,
    question: Question,
    access: CacheAccess,
) -> Result<Response<ResponseBody<ResBody>>, BoxError>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    let vector = shared.embed(&question.prompt).await;
    if let Some(vector) = &vector
        && let Some(found) = shared.index.search(question.bucket, vector)
        && found.similarity >= shared.threshold
    {
        match access.answer_from(&found.key, "semantic").await {
            EntryLookup::Hit(mut res) => {
                counter!(names::LOOKUPS, "result" => "hit").increment(1);
                histogram!(names::SIMILARITY).record(f64::from(found.similarity));
                res.extensions_mut().insert(SemanticHit {
                    similarity: found.similarity,
                });
                if let Ok(value) = HeaderValue::from_str(&format!("{:.4}", found.similarity)) {
                    res.headers_mut().insert(SIMILARITY, value);
                }
                return Ok(res.map(ResponseBody::hit));
            }
            EntryLookup::Missing
                if now_millis().saturating_sub(found.inserted_at) > MISSING_GRACE_MS =>
            {
                // The answer is gone (evicted, or never stored): so is the question.
                shared.index.remove(question.bucket, &found.key);
            }
            _ => {}
        }
    }
    counter!(names::LOOKUPS, "result" => "miss").increment(1);

    let res = inner.oneshot(req).await.map_err(Into::into)?;
    let ttl = access
        .ttl()
        .map(|ttl| shared.ttl.map_or(ttl, |cap| ttl.min(cap)));
    let record = match (vector, ttl) {
        (Some(vector), Some(ttl)) if res.status() == StatusCode::OK => Some(Record {
            shared: Arc::clone(&shared),
            bucket: question.bucket,
            key: Arc::from(access.key().as_str()),
            vector: Arc::unwrap_or_clone(vector),
            expires_at: now_millis() + ttl.as_millis() as u64,
        }),
        _ => None,
    };
    Ok(res.map(|body| ResponseBody::inner(body, record)))
}
