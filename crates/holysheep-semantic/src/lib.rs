//! `SemanticCacheLayer`: the same question in other words, answered from the cache — in the same
//! context only, never a different question.
//!
//! The HolySheep article configures a semantic cache (`similarity_threshold = 0.95`) and never
//! builds it. This is it. It sits **inside** the exact `CacheLayer` of `holysheep-cache`: exact
//! hits never pay for an embedding; on an exact miss it embeds the request's last user message,
//! looks for a stored question close enough (cosine ≥ [threshold](SemanticCacheLayer::threshold),
//! 0.95 by default) among the questions asked **in the same context**, and answers with that
//! question's stored answer. On a real miss the request goes upstream, the exact cache stores
//! the answer, and the question's vector is recorded when the answer ended well.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use futures_util::future::BoxFuture;
//! use holysheep_cache::{CacheLayer, MemoryStore};
//! use holysheep_semantic::{EmbedError, Embedder, Embedding, SemanticCacheLayer};
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! /// A stand-in embedder: the mock upstream's word-overlap vectors.
//! struct Words;
//!
//! impl Embedder for Words {
//!     fn embed<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<Embedding, EmbedError>> {
//!         let vector = holysheep_mock::word_overlap_embedding(text, 256);
//!         Box::pin(async move { Ok(Embedding { vector, tokens: 0 }) })
//!     }
//!     fn model(&self) -> &str {
//!         "word-overlap"
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), holysheep_core::BoxError> {
//! # let upstream = service_fn(|_req: Request<Full<Bytes>>| async {
//! #     let body = r#"{"id":"c1","object":"chat.completion","created":1,"model":"gpt-4.1",
//! #         "choices":[{"index":0,"message":{"role":"assistant","content":"Paris."},"finish_reason":"stop"}]}"#;
//! #     Ok::<_, holysheep_core::BoxError>(
//! #         Response::builder().header("content-type", "application/json").body(Full::new(Bytes::from(body)))?,
//! #     )
//! # });
//! let svc = ServiceBuilder::new()
//!     .layer(CacheLayer::new(MemoryStore::new(64 << 20)))
//!     .layer(SemanticCacheLayer::new().embedder(Words)) // default: the upstream's /embeddings
//!     .service(upstream);
//!
//! let ask = |question: &str| {
//!     let body = serde_json::json!({"model": "gpt-4.1", "messages": [{"role": "user", "content": question}]});
//!     Request::post("/v1/chat/completions")
//!         .header("content-type", "application/json")
//!         .body(Full::new(Bytes::from(body.to_string())))
//! };
//! let first = svc.clone().oneshot(ask("What's the capital of France?")?).await?;
//! assert_eq!(first.headers()["x-cache"], "MISS");
//! first.into_body().collect().await?; // recorded when the answer ends
//! # tokio::task::yield_now().await; // the exact cache writes its entry in a task
//!
//! let second = svc.oneshot(ask("what is the capital of france")?).await?;
//! assert_eq!(second.headers()["x-cache"], "HIT");
//! assert_eq!(second.headers()["cache-status"], "holysheep; hit; detail=semantic");
//! assert_eq!(second.headers()["x-holysheep-semantic-similarity"], "1.0000");
//! # Ok(())
//! # }
//! ```
//!
//! # What must match exactly
//!
//! Only the **last user message** is compared by meaning. Everything else — the tenant
//! (`Namespace`), the upstream, the path, the model, every sampling and output parameter
//! (`temperature`, `max_tokens`, `response_format`, `seed`, …), the system prompt and every
//! earlier turn — is hashed, as the exact cache keys it, into a **context bucket**, and only the
//! questions of the request's own bucket are compared. The embedding model and dimension are in
//! the bucket too, so vectors of two embedders never meet. A multi-turn conversation or an agent
//! loop therefore never gets the answer of another conversation's turn.
//!
//! # When it is skipped
//!
//! Each rule is documented and can be turned off in [`SkipRules`]: `n` > 1; tools or functions
//! in the request or tool calls among its messages; a last message that is not user text; a
//! prompt under 10 characters; a streamed request with `logprobs`. Always skipped: a request
//! whose `Cache-Control` forbids reading the cache (`no-store`, `no-cache`, `max-age=0`), a
//! request that is not a chat completion, and one the exact cache bypassed.
//!
//! It is **opt-in**: a layer is on for every request by default
//! ([`enabled`](SemanticCacheLayer::enabled)), a tenant can be opted in or out
//! ([`tenant`](SemanticCacheLayer::tenant)), and a request can say
//! `x-holysheep-semantic-cache: on` or `off` (the header is removed before the request goes on;
//! `on` cannot override a tenant opted out). The gateway leaves the layer out unless configured.
//!
//! # A hit
//!
//! A hit is the stored answer, unchanged (its `id` and `created` too), rendered by the exact
//! cache in the shape the request asks for (JSON or SSE), with `x-cache: HIT`,
//! `Cache-Status: holysheep; hit; detail=semantic`, `Age`, and the similarity in
//! `x-holysheep-semantic-similarity`. The response carries the
//! [`SemanticHit`](holysheep_core::signal::SemanticHit) extension for `MetricsLayer`, which
//! counts what semantic hits saved apart from exact hits.
//!
//! # Embeddings
//!
//! An [`Embedder`] turns the question into a vector. The default, [`UpstreamEmbedder`], asks the
//! inner service (the same pooled client, key, retries and pool limit as the chat requests) at
//! `POST /embeddings` with `text-embedding-3-small` (model and `dimensions` configurable). Each
//! call is bounded by its own timeout (300 ms by default) and embeddings are cached exactly, by
//! text. An embedding that fails or times out is a miss: the request goes on upstream and the
//! client never sees the failure.
//!
//! # Index
//!
//! A [`SemanticIndex`](index::SemanticIndex) per service: per bucket, `i8`-quantised vectors,
//! scanned exactly up to 256 per bucket and in an HNSW graph ([`usearch`]) beyond; bounded in
//! bytes (256 MiB by default), each vector expiring with its answer's entry. A vector whose
//! entry the store no longer has is deleted when it is next found.
//!
//! # Fleet
//!
//! With [`fleet`](SemanticCacheLayer::fleet) (cargo feature `redis`, on by default), instances
//! sharing a Redis (one node or a Cluster) share their vectors through one Redis Stream
//! ([`RedisFleet`]); the answers are the exact cache's entries in the shared store. Redis down,
//! each instance serves from its own index; never an error.
//!
//! # Metrics
//!
//! Through the [`metrics`] facade (see [`names`]): lookups by result, skips by reason, the
//! similarity of hits, embedding calls by outcome, their tokens and micro-dollars, vectors shared
//! through the fleet. Call [`describe`] once a recorder is installed.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod body;
mod embed;
#[cfg(feature = "redis")]
mod fleet;
mod future;
pub mod index;
mod layer;
pub mod names;
mod request;
mod service;

pub use self::body::ResponseBody;
pub use self::embed::{EmbedError, Embedder, Embedding, UpstreamEmbedder};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::fleet::RedisFleet;
pub use self::future::ResponseFuture;
pub use self::layer::SemanticCacheLayer;
pub use self::names::describe;
pub use self::request::SkipRules;
pub use self::service::{SEMANTIC_CACHE, SIMILARITY, SemanticCache};
