//! [`Router`]: spreads requests over several deployments — HolySheep keys, each with its own
//! rate limit, or other OpenAI-compatible endpoints — picks the least loaded one, skips dead
//! and throttled ones, falls back to other models when every deployment of a model failed, and
//! moves a stream that stalls before its first byte to another deployment.
//!
//! It is a service, not a layer: it sits at the bottom of a stack where
//! `PoolLimit<HolySheepClient>` sits with one upstream, and owns one pooled
//! [`HolySheepClient`](holysheep_client::HolySheepClient) behind its own
//! [`PoolLimitLayer`](holysheep_pool_limit::PoolLimitLayer) per [`Deployment`]. The layers above
//! (retry, cache, metrics) wrap it as they wrap the client; the retry layer's budget stays the
//! one global budget, so an outage cannot multiply load.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use bytes::Bytes;
//! use holysheep_core::BoxError;
//! use holysheep_core::error::error_response;
//! use holysheep_mock::{MockConfig, MockServer};
//! use holysheep_router::{Deployment, Router, RouterBody, SERVED_MODEL_HEADER};
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let a = MockServer::start(MockConfig::default().api_key("sk-a")).await?;
//! let b = MockServer::start(MockConfig::default().api_key("sk-b")).await?;
//!
//! let router = Router::builder()
//!     .deployment(Deployment::new(a.base_url(), "sk-a").name("a").weight(2))
//!     .deployment(Deployment::new(b.base_url(), "sk-b").name("b"))
//!     .fallback("gpt-4.1", ["deepseek-v3.2"])
//!     .build()?;
//!
//! let svc = ServiceBuilder::new()
//!     // Failures become OpenAI-style answers, as the gateway gives them.
//!     .map_result(|result: Result<Response<RouterBody>, BoxError>| {
//!         Ok::<_, BoxError>(match result {
//!             Ok(res) => res.map(BodyExt::boxed_unsync),
//!             Err(error) => error_response(&*error).map(|body| {
//!                 Full::new(body)
//!                     .map_err(|never: Infallible| -> BoxError { match never {} })
//!                     .boxed_unsync()
//!             }),
//!         })
//!     })
//!     .service(router);
//!
//! let request = Request::post("/chat/completions")
//!     .header("content-type", "application/json")
//!     .body(Full::new(Bytes::from_static(
//!         br#"{"model":"gpt-4.1","messages":[{"role":"user","content":"Hello"}]}"#,
//!     )))?;
//! let res = svc.oneshot(request).await?;
//! assert_eq!(res.status(), 200);
//! assert_eq!(res.headers()[SERVED_MODEL_HEADER], "gpt-4.1");
//! assert_eq!(a.stats().chat_requests() + b.stats().chat_requests(), 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Balancing
//!
//! Each request goes to one deployment by the **power of two choices** over **Peak-EWMA**
//! load: two deployments that serve the request's model are drawn at random, and the one with
//! the lower cost takes the request. Weights enter the draw: a deployment of
//! [`weight`](Deployment::weight) `w` is `w` replicas, and two distinct replicas are drawn, so
//! with equal weights two distinct deployments always meet (plain P2C), while a weight-9
//! deployment beside a weight-1 one is drawn twice 80 % of the time and takes the request
//! without a contest. The cost is tower's own
//! [`PeakEwma`](tower::load::PeakEwma) [`Load`](tower::load::Load): the peak-sensitive moving
//! average of the time to the response head, times the requests waiting for their head plus
//! one, so a slow deployment and a busy one both lose the draw.
//!
//! What is tower's and what is not:
//!
//! - **`tower::load::PeakEwma` is used as it is**: one per deployment, timing every attempt
//!   (an attempt dropped by a first-byte timeout counts with the time it waited). Like any
//!   latency measure, it sees a deployment that fails fast (a refused connection, a quick
//!   `500`) as fast; [health](#health) is what takes such a deployment out, after
//!   [`consecutive_failures`](HealthConfig::consecutive_failures), and each of those requests
//!   is answered by another deployment meanwhile.
//! - **`tower::balance::p2c::Balance` is not**, for four reasons. It draws uniformly and has no
//!   weights (and tower's `Cost` is opaque, so a weight cannot scale it); here the weights
//!   shape the draw as above. It balances one fixed set of services, where a request
//!   here may go only to the deployments that serve its model (a per-model subset of the
//!   deployments). It leaves a service only when that service fails `poll_ready` for good or
//!   its `Discover` removes it, where a deployment here is ejected for a cool-down and comes
//!   back on a trial request; and one request here may try a second deployment when the first
//!   fails, which `Balance` (one `call`, one service) cannot do. Last, its `ReadyCache` keeps
//!   every service polled ready, which with `PoolLimit` would reserve a pool slot of every
//!   deployment per clone. The choice itself is a few dozen lines in [`Router`]; with 8
//!   deployments it costs about half a microsecond (`benches/router.rs`).
//!
//! A deployment lists the models it serves; one that lists none serves every model. A request
//! whose model no deployment serves is answered `404` with the code `model_not_found`. The
//! model is read from the [`RequestModel`](holysheep_core::signal::RequestModel) request
//! extension when the gateway set it, else from the body's `model` field; a request without
//! one (`GET /models`) may go to any deployment. Models the stack asks for itself count too: with
//! a semantic cache, some deployment must serve its embedding model (list it, or leave one
//! deployment without a list).
//!
//! # Health
//!
//! Passive outlier ejection, classified with `holysheep-core`'s one vocabulary,
//! [`ErrorClass`](holysheep_core::error::ErrorClass) and
//! [`AnswerClass`](holysheep_core::error::AnswerClass): consecutive connect errors, timeouts,
//! `5xx` and `429`s eject a deployment for a cool-down that doubles on each failed trial, and
//! an upstream's own `Retry-After` or exhausted `x-ratelimit-remaining-*` rests a throttled key
//! before it fails again. See [`HealthConfig`] for the rules and defaults.
//!
//! Within one request, an attempt that failed in a way another deployment may mend — a connect
//! error, a timeout, an answer of a [transient](holysheep_core::error::AnswerClass::is_transient)
//! class (`429`, `5xx`, `408`), or a shed by the deployment's own pool limit — is tried again on
//! another deployment of the model, up to [`max_attempts`](RouterBuilder::max_attempts)
//! (default: all of them). A rejection (`400`, `401`, `404`, …) is the answer, from the first
//! deployment that gave it. When no deployment of the model is open, the call fails with
//! [`Overloaded`](holysheep_core::error::Overloaded) and the time until the first one reopens,
//! which `error_response` answers `503` with `Retry-After`.
//!
//! # Fallbacks
//!
//! [`RouterBuilder::fallback`] gives a model an ordered list of others, e.g.
//! `gpt-4.1 → claude-sonnet-4.5 → deepseek-v3.2`. When every deployment of the first choice
//! failed as above (after its failovers, with a `429`, a `5xx`, a timeout or no deployment open),
//! the request is sent again with its body's `model` replaced by the next model of the list,
//! to that model's deployments; never after a rejection such as a `400`. The answer keeps its
//! `model` field as the upstream gave it, carries the header [`SERVED_MODEL_HEADER`]
//! (`x-holysheep-served-model`, on every routed answer with a model) and, from a fallback, the
//! [`Fallback`](holysheep_core::signal::Fallback) response extension; the counter
//! [`FALLBACKS`] (`holysheep_fallback_total{from,to}`) counts fallbacks that answered well.
//!
//! A cache above keys on the request as the client sent it, so on the model asked for. A
//! fallback answer is therefore not what that key promises: `CacheLayer` reads the `Fallback`
//! extension and stores such an answer only when built with
//! `CacheLayer::cache_fallbacks(true)`.
//!
//! # Metrics
//!
//! Through the `metrics` facade, beside [`FALLBACKS`]: [`ATTEMPTS`]
//! (`holysheep_router_attempts_total{deployment,result}`, every attempt by the class of what it
//! got) and [`EJECTIONS`] (`holysheep_router_ejections_total{deployment}`), with a warning in the
//! log at each ejection. Deployment names are configured, so the labels stay few.
//!
//! # Time-to-first-byte failover
//!
//! With [`first_byte_timeout`](RouterBuilder::first_byte_timeout), a streamed request
//! (`"stream": true`) whose first body byte has not come within the bound — counted from the
//! moment it was sent, so a stalled response head counts too — is dropped, counted as a
//! timeout against its deployment, and sent to the next one. This happens only before the
//! router returns: the router reads the first frame itself and hands it on in front of the
//! rest ([`RouterBody`]), so once the client has received anything, the stream is never
//! switched.

mod body;
mod deployment;
mod health;
mod router;
mod upstream;

pub use body::RouterBody;
pub use deployment::{Deployment, DeploymentStatus};
pub use health::{HealthConfig, HealthState};
pub use router::{
    ATTEMPTS, BuildError, EJECTIONS, FALLBACKS, FirstByteTimeout, Router, RouterBuilder,
    RouterFuture, SERVED_MODEL_HEADER,
};
pub use upstream::{Upstream, UpstreamFuture};
