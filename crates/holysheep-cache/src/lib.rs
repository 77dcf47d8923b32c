//! `CacheLayer`: an exact, streaming-native, coalescing response cache for OpenAI-compatible
//! requests, over memory, Redis and Redis Cluster.
//!
//! The same prompt should not be paid for twice. [`Cache`] sits in front of an upstream service
//! (a pooled HTTP client for `https://api.holysheep.ai/v1`) and answers repeated
//! `POST /chat/completions`, `/completions` and `/embeddings` requests from a [`CacheStore`];
//! identical requests that arrive while the first is still being answered share its one
//! upstream call.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use holysheep_cache::{CacheLayer, MemoryStore};
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), holysheep_core::BoxError> {
//! # let upstream = service_fn(|_req: Request<Full<Bytes>>| async {
//! #     let body = r#"{"id":"c1","object":"chat.completion","created":1,"model":"gpt-4.1",
//! #         "choices":[{"index":0,"message":{"role":"assistant","content":"Hi!"},"finish_reason":"stop"}]}"#;
//! #     Ok::<_, holysheep_core::BoxError>(
//! #         Response::builder().header("content-type", "application/json").body(Full::new(Bytes::from(body)))?,
//! #     )
//! # });
//! let svc = ServiceBuilder::new()
//!     .layer(CacheLayer::new(MemoryStore::new(64 << 20)).ttl(Duration::from_secs(3600)))
//!     .service(upstream);
//!
//! let request = || {
//!     Request::post("/v1/chat/completions")
//!         .header("content-type", "application/json")
//!         .body(Full::new(Bytes::from(r#"{"model":"gpt-4.1","messages":[{"role":"user","content":"Hi"}]}"#)))
//! };
//! let first = svc.clone().oneshot(request()?).await?;
//! assert_eq!(first.headers()["x-cache"], "MISS");
//! first.into_body().collect().await?; // the entry is judged when the body ends
//! # tokio::task::yield_now().await; // the store write runs in a task
//!
//! let second = svc.oneshot(request()?).await?;
//! assert_eq!(second.headers()["x-cache"], "HIT");
//! assert_eq!(second.headers()["cache-status"], "holysheep; hit");
//! # Ok(())
//! # }
//! ```
//!
//! # What is cached
//!
//! Only good answers: status `200` and a well-formed completion — a JSON `chat.completion` or
//! `text_completion` with choices, an embeddings `list` with data, or a Server-Sent-Events
//! stream that ended with `[DONE]` after a chunk with a `finish_reason`. Never an error, never a
//! stream the upstream cut. Answers over [`CacheLayer::max_entry_bytes`] (1 MiB) pass through
//! uncached. Requests that are not `POST`, whose body is not a JSON object, or that yield no
//! key ([`KeyPolicy`]) pass through marked bypass.
//!
//! A stream is **recorded while it is forwarded**: the client gets each chunk as it arrives,
//! and the entry is written (in a spawned task, never delaying the client) only when the stream
//! completed. The upstream is read at most [`CacheLayer::read_ahead`] (256 KiB) ahead of the
//! slowest reader, so memory stays bounded whatever clients do. If the client goes away
//! mid-stream, the rest is still read in a task and the answer stored if it completes, within
//! [`CacheLayer::finish_budget`] (15 s, 256 KiB) and only while no request waits for the pool
//! slot it holds (see [`ResponseBody`]). A whole JSON answer is read before its head is sent (up
//! to the entry bound), so its head can say whether it was stored, and so that no JSON answer
//! the upstream cut ever reaches anyone with a `200` head.
//!
//! A hit answers in the shape the request asked for: a `stream: true` request gets SSE (a stored
//! stream replays its chunks; a stored JSON answer becomes role, content, finish, optional usage
//! chunks and `[DONE]`), a plain request gets one JSON (a stored stream is assembled: content
//! deltas concatenated per choice, tool call deltas merged, finish reason, usage). A stored
//! stream's usage chunk is left out for a request without `stream_options.include_usage`.
//! Conversions carry every field (`logprobs`, fields this crate does not know); where the entry
//! lacks what the request asks for (a usage chunk, or the `usage` every JSON answer has), the
//! lookup is a miss instead, and the fresh answer replaces the entry.
//!
//! # Stored values
//!
//! Two formats, chosen by the key scheme ([`KeyScheme`]):
//!
//! - **Python-compatible scheme** ([`KeyScheme::PythonCompat`]): the value is the plain
//!   completion JSON, exactly what the reference Python client (from the HolySheep article)
//!   stores with `json.dumps(response)`, so a Redis shared with that client serves hits both
//!   ways. A streamed answer is assembled into one completion JSON before it is stored.
//! - **Canonical scheme**: a small versioned binary envelope that keeps a stream's chunks as they
//!   were sent, so a streamed hit replays them byte for byte:
//!
//! ```text
//! "HSC" 0x01 | kind u8 (1 json, 2 stream) | flags u8 (bit 0: has a usage chunk)
//! | stored_at u64 BE (unix seconds, 0 = unknown) | content-type length u16 BE | content-type
//! | json: the body to the end | stream: count u32 BE, then per chunk length u32 BE + bytes
//! ```
//!
//! Both are read back whatever the layer's scheme: a value that starts with `{` is taken as plain
//! JSON. Anything else that is not a well-formed envelope is a miss.
//!
//! A value read from a store others may write to ([`CacheStore::is_shared`]: Redis, and tiers in
//! front of it) is served only if it passes the check an answer passed before it was stored (a
//! good completion, a complete stream whose usage flag is true), and always with the route's
//! content type (`application/json` or `text/event-stream`; a stored one is kept only when it
//! names the same media type). Anything else is a miss, counted in [`Cache::invalid_entries`] and
//! logged, and the fresh answer replaces it.
//!
//! # Coalescing
//!
//! Concurrent identical misses make one upstream call. A follower asking for the same shape as
//! the leader replays the leader's response live: the head at once, the chunks so far, then
//! each chunk as it arrives (a JSON answer only once it is whole). A follower asking for the
//! other shape waits for the end and is served from the finished entry; when the answer cannot
//! serve it (too large to store, not a good answer, or not convertible without loss), it goes to
//! the one new flight made for its shape, so the whole group costs at most one more upstream
//! call per shape. An error answer (a `429`, a `500`) is replayed to every follower rather than
//! multiplied upstream. If the leader's upstream call fails, or a JSON answer is cut, followers
//! get a [`CoalesceError`] at once whose `source()` is the leader's own error, so they are
//! answered as the leader is (a shed's `503` with `Retry-After`, a timeout's `504`); if the
//! leader's request is dropped (or panics) before an answer, followers form a new flight (at
//! most twice, then each goes upstream alone). The leader's
//! client going away mid-answer does not cut the followers' answer: an upstream body is read by
//! a spawned task, never by one client, so no follower waits on the leader's client.
//!
//! # Request controls
//!
//! `Cache-Control: no-store` neither reads nor writes, `no-cache` and `max-age=0` skip the lookup
//! and refresh the entry, `max-age=N` accepts only entries at most `N` s old and sets the TTL of
//! the entry it writes (capped by [`CacheLayer::ttl`]). See [`RequestControl`].
//!
//! # Signals
//!
//! Every response carries an RFC 9211 `Cache-Status` and a plain `x-cache`:
//!
//! | case | `Cache-Status` | `x-cache` | [`CacheOutcome`] |
//! |---|---|---|---|
//! | hit | `holysheep; hit` (and `Age`) | `HIT` | `Hit` |
//! | answered by a layer inside from an entry ([`CacheAccess`]) | `holysheep; hit; detail=semantic` (and `Age`) | `HIT` | `Hit` |
//! | coalesced follower | `holysheep; fwd=miss; collapsed` | `HIT` | `Coalesced` |
//! | remote follower (another instance's answer, [fleet coalescing](#fleet-coalescing)) | `holysheep; hit; collapsed; detail=fleet` | `HIT` | `Coalesced` |
//! | remote follower of an error answer | `holysheep; fwd=miss; collapsed; detail=fleet` | `HIT` | `Coalesced` |
//! | miss, JSON answer stored | `holysheep; fwd=miss; stored` | `MISS` | `Miss` |
//! | miss, streamed answer (stored or not is known only at its end) | `holysheep; fwd=miss` | `MISS` | `Miss` |
//! | `no-cache` / `max-age=0` | `holysheep; fwd=request` (`; stored`) | `MISS` | `Miss` |
//! | entry older than `max-age=N` | `holysheep; fwd=stale` (`; stored`) | `MISS` | `Miss` |
//! | upstream answered non-200 | `holysheep; fwd=miss; fwd-status=429` | `MISS` | `Miss` |
//! | `no-store`, not cacheable | `holysheep; fwd=bypass` | `BYPASS` | `Bypass` |
//! | not `POST` | `holysheep; fwd=method` | `BYPASS` | `Bypass` |
//!
//! A follower reports `HIT` in `x-cache` because it made no upstream call of its own.
//! [`CacheOutcome`] and the request's [`RequestModel`] are put into the response extensions for
//! `MetricsLayer`.
//!
//! # Layers inside the cache
//!
//! After a miss, every request the cache sends to its inner service carries a [`CacheAccess`]
//! extension: the key its answer will be stored under, and a way to answer it from another
//! entry of the same store, rendered as the cache renders its own hits. The semantic cache
//! (`holysheep-semantic`) is built on it. An answer made that way carries
//! [`CacheOutcome::Hit`]; the cache passes it on as it is and does not store it again.
//!
//! # Fleet coalescing
//!
//! Coalescing is per instance; with [`CacheLayer::fleet`] and a `RedisStore` it is across every
//! instance that shares the Redis (one node or a Cluster): the first instance to miss on a key
//! takes a short lease on it (`SET … NX PX`, renewed while the answer is produced) and mirrors its
//! answer into a Redis Stream as it arrives; the others call no upstream and replay that stream
//! live (`XREAD BLOCK`), or read the stored entry when they asked for the other shape. A leader
//! that fails or dies loses the lease within seconds and a follower takes over — at most one more
//! upstream call per failure — and a follower never waits longer than
//! `FleetCoalescing::max_wait` before it calls upstream itself. Redis down or slow: each instance
//! coalesces on its own, and no request waits for Redis longer than the store's timeout. The
//! `fleet` module docs have the details and the metrics (`holysheep_fleet_*`).
//!
//! # Stores
//!
//! A [`CacheStore`] is an async byte store with a time to live, object-safe so a store can be
//! picked at run time (`Arc<dyn CacheStore>`). Three ship with the crate:
//!
//! - [`MemoryStore`]: in-process, bounded by total bytes, per-entry TTL.
//! - `RedisStore`: one Redis node or a Redis Cluster, shared by every gateway instance (cargo
//!   feature `redis`, on by default).
//! - [`TieredStore`]: a fast front store (memory) in front of a shared back store (Redis). A
//!   front copy lives no longer than the back entry has left, and at most
//!   [`TieredStore::front_ttl`] (10 s): the bound on how stale an instance is after another
//!   refreshed an entry.
//!
//! A store is a soft dependency: a failing get is a miss, a failing put is ignored; both are
//! logged at warn, at most once every 10 s (the rest at debug). Never an error to the client.
//! In a Redis Cluster, health is kept per master: a dead master costs only its own keys.
//!
//! # Keys
//!
//! [`DefaultKeyPolicy`] keys a request on everything in it that can change the answer, plus the
//! upstream, the path and the tenant ([`KeyScheme::Canonical`]), or exactly as the reference
//! Python client does ([`KeyScheme::PythonCompat`]). Each request body is parsed once, into a
//! [`ParsedBody`] that any [`KeyPolicy`] reads.
//!
//! [`CacheOutcome`]: holysheep_core::signal::CacheOutcome
//! [`CacheOutcome::Hit`]: holysheep_core::signal::CacheOutcome::Hit
//! [`RequestModel`]: holysheep_core::signal::RequestModel

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod __fuzzing;
mod access;
mod body;
mod control;
mod convert;
mod entry;
mod error;
#[cfg(feature = "redis")]
pub mod fleet;
mod flight;
mod future;
mod key;
mod layer;
mod service;
mod shared;
mod store;

pub use self::access::{CacheAccess, EntryLookup};
pub use self::body::ResponseBody;
pub use self::control::RequestControl;
pub use self::error::CoalesceError;
#[cfg(feature = "redis")]
pub use self::fleet::FleetCoalescing;
pub use self::future::ResponseFuture;
pub use self::key::{
    CacheKey, DefaultKeyPolicy, KeyPolicy, KeyRequest, KeyScheme, ParseKeySchemeError, ParsedBody,
};
pub use self::layer::CacheLayer;
pub use self::service::{CACHE_STATUS, Cache, X_CACHE};
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::store::RedisStore;
pub use self::store::{
    BoxFuture, CacheStore, MemoryStore, StoreError, StoreErrorKind, TieredStore, ValueTtl,
};

/// Internals the crate's benchmarks measure. **Not public API**: no stability promise, may change
/// or go away in any release.
#[doc(hidden)]
pub mod __bench {
    use crate::ParsedBody;

    /// A body held as a `serde_json::Value`, so its key is written from the `Value`: the path a
    /// body takes when it was parsed into a `Value` first.
    pub fn parsed_from_value(value: serde_json::Value) -> ParsedBody<'static> {
        ParsedBody::from_value(value)
    }
}
