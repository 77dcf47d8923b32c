//! Embeddings: the [`Embedder`] trait, the default [`UpstreamEmbedder`] over the upstream's
//! `POST /embeddings`, and the exact cache of embeddings in front of any embedder.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use holysheep_core::BoxError;
use http::header::CONTENT_TYPE;
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tower::Service;

use crate::index::Quantized;

/// One embedding: the vector, and the tokens it was billed for (0 when unknown).
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    /// The vector.
    pub vector: Vec<f32>,
    /// Prompt tokens the provider billed for it.
    pub tokens: u64,
}

/// Why an embedding could not be had. The semantic cache treats any of them as a miss: the
/// request goes on upstream and the client never sees it.
#[derive(Debug, thiserror::Error)]
#[error("embedding failed: {message}")]
pub struct EmbedError {
    message: String,
}

impl EmbedError {
    /// An error with this message.
    pub fn new(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
        }
    }
}

/// Turns a question into a vector.
///
/// Object-safe, so an embedder can be chosen at run time (`Arc<dyn Embedder>`). The semantic
/// cache bounds each call by its own timeout and caches embeddings exactly, so an implementation
/// needs neither.
pub trait Embedder: Send + Sync + 'static {
    /// The embedding of `text`.
    fn embed<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<Embedding, EmbedError>>;

    /// The embedding model, for metrics and cost (`text-embedding-3-small`, …).
    fn model(&self) -> &str;
}

/// The default [`Embedder`]: `POST {path}` with `{"model", "input", "dimensions"}` through a
/// service, in the semantic cache the same service the chat requests go through (so the same
/// pooled client, key, retries and pool limit).
pub struct UpstreamEmbedder<S> {
    // A mutex only to clone the service per call: tower services need not be `Sync`.
    inner: Mutex<S>,
    path: Arc<str>,
    model: Arc<str>,
    dimensions: Option<u32>,
}

impl<S> UpstreamEmbedder<S> {
    /// Embeds with `model` by calling `inner` at `path` (e.g. `/embeddings` below a
    /// `HolySheepClient`, whose base URL ends in `/v1`).
    pub fn new(inner: S, path: impl Into<Arc<str>>, model: impl Into<Arc<str>>) -> Self {
        Self {
            inner: Mutex::new(inner),
            path: path.into(),
            model: model.into(),
            dimensions: None,
        }
    }

    /// Asks for vectors of this many dimensions (the `dimensions` request field).
    pub fn dimensions(mut self, dimensions: Option<u32>) -> Self {
        self.dimensions = dimensions;
        self
    }
}

impl<S> fmt::Debug for UpstreamEmbedder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamEmbedder")
            .field("path", &self.path)
            .field("model", &self.model)
            .field("dimensions", &self.dimensions)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct EmbeddingsAnswer {
    data: Vec<EmbeddingItem>,
    #[serde(default)]
    usage: Option<EmbeddingsUsage>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct EmbeddingsUsage {
    #[serde(default)]
    prompt_tokens: u64,
}

impl<S, ResBody> Embedder for UpstreamEmbedder<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    fn embed<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<Embedding, EmbedError>> {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Box::pin(async move {
            let mut body = serde_json::json!({"model": &*self.model, "input": text});
            if let Some(dimensions) = self.dimensions {
                body["dimensions"] = dimensions.into();
            }
            let request = Request::post(&*self.path)
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .map_err(EmbedError::new)?;
            std::future::poll_fn(|cx| inner.poll_ready(cx))
                .await
                .map_err(|e| EmbedError::new(e.into()))?;
            let response = inner
                .call(request)
                .await
                .map_err(|e| EmbedError::new(e.into()))?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| EmbedError::new(e.into()))?
                .to_bytes();
            if status != StatusCode::OK {
                return Err(EmbedError::new(format_args!(
                    "the embeddings endpoint answered {status}"
                )));
            }
            let answer: EmbeddingsAnswer =
                serde_json::from_slice(&bytes).map_err(EmbedError::new)?;
            let vector = answer
                .data
                .into_iter()
                .next()
                .map(|item| item.embedding)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| EmbedError::new("the embeddings answer holds no vector"))?;
            Ok(Embedding {
                vector,
                tokens: answer.usage.map_or(0, |u| u.prompt_tokens),
            })
        })
    }

    fn model(&self) -> &str {
        &self.model
    }
}

/// Embeddings already made, by text: a repeated question is never embedded twice while it is
/// remembered. Bounded in bytes, least recently used out first.
pub(crate) struct EmbeddingCache {
    cache: moka::sync::Cache<[u8; 32], Arc<Quantized>>,
}

impl EmbeddingCache {
    pub(crate) fn new(max_bytes: u64) -> Self {
        Self {
            cache: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_, v: &Arc<Quantized>| {
                    u32::try_from(v.dimensions() + 96).unwrap_or(u32::MAX)
                })
                .build(),
        }
    }

    pub(crate) fn key(text: &str) -> [u8; 32] {
        Sha256::digest(text.as_bytes()).into()
    }

    pub(crate) fn get(&self, key: &[u8; 32]) -> Option<Arc<Quantized>> {
        self.cache.get(key)
    }

    pub(crate) fn put(&self, key: [u8; 32], vector: Arc<Quantized>) {
        self.cache.insert(key, vector);
    }
}
