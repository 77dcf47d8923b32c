//! [`Router`], its builder, and how one request is routed.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use holysheep_core::BoxError;
use holysheep_core::error::{AnswerClass, ErrorBody, ErrorClass, Overloaded};
use holysheep_core::signal::{Fallback, RequestModel};
use http::header::CONTENT_LENGTH;
use http::request::Parts;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use rand::Rng;
use serde::Deserialize;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use crate::body::RouterBody;
use crate::deployment::{Deployment, DeploymentStatus, Live};
use crate::health::{Availability, HealthConfig, Verdict, rest_of};

/// The response header that names the model whose deployment answered (the model asked for,
/// or the [fallback](crate#fallbacks) that served).
pub const SERVED_MODEL_HEADER: &str = "x-holysheep-served-model";

/// Counter: requests a fallback model served, by `from` (the model asked for) and `to` (the
/// model that served).
pub const FALLBACKS: &str = "holysheep_fallback_total";

/// Counter: attempts the router sent, by `deployment` and `result`: the answer's
/// [`AnswerClass`] (`success`, `rejected`, `overload`, `timeout`, `server_error`) or, without
/// an answer, the error's [`ErrorClass`] (`connect`, `timeout`, `overload`, `deadline`,
/// `other`).
pub const ATTEMPTS: &str = "holysheep_router_attempts_total";

/// Counter: ejections of a deployment, by `deployment`.
pub const EJECTIONS: &str = "holysheep_router_ejections_total";

/// Spreads requests over several [`Deployment`]s; see [the crate docs](crate).
///
/// A `tower::Service<http::Request<B>>` for any body `B` (it is read into memory once, as the
/// retry layer above needs it anyway), answering `http::Response<`[`RouterBody`]`>`. It is the
/// innermost service of a stack, in the place of `PoolLimit<HolySheepClient>`: each
/// deployment has its own client and pool limit inside. `Clone` is cheap and clones share
/// everything (load, health). `poll_ready` is always ready; each deployment's pool limit
/// queues and sheds on its own.
///
/// Errors are [`BoxError`]s that keep the error of the last attempt in their chain, so
/// [`ErrorClass::of`] and `error_response` read them as usual; when no deployment of the model
/// (or of its fallbacks) may take a request, the error is an [`Overloaded`] that says when the
/// first one reopens.
#[derive(Clone)]
pub struct Router {
    shared: Arc<Shared>,
}

struct Shared {
    deployments: Box<[Live]>,
    /// For each model some deployment lists: the deployments that serve it (those that list
    /// it and those that list none).
    serving: HashMap<String, Box<[usize]>>,
    /// The deployments that list no model: every model not in `serving` goes to them.
    every_model: Box<[usize]>,
    /// Every deployment: requests without a model (`GET /models`) go to any.
    all: Box<[usize]>,
    fallbacks: HashMap<String, Box<[String]>>,
    health: HealthConfig,
    first_byte_timeout: Option<Duration>,
    max_attempts: usize,
}

impl Router {
    /// A [`RouterBuilder`] with no deployment yet.
    pub fn builder() -> RouterBuilder {
        RouterBuilder::new()
    }

    /// Every deployment as it is now: health and requests in flight.
    pub fn status(&self) -> Vec<DeploymentStatus> {
        let now = Instant::now();
        self.shared
            .deployments
            .iter()
            .map(|live| DeploymentStatus {
                name: live.name.clone(),
                health: live.health().state(now),
                in_flight: live.pool.in_flight(),
            })
            .collect()
    }

    /// Every deployment's base URL, in configuration order: what a cache hashes into its keys
    /// (so answers of different upstream sets are never shared) and what spans name as the
    /// server.
    pub fn base_urls(&self) -> Vec<&http::Uri> {
        self.shared
            .deployments
            .iter()
            .map(|live| &live.base_url)
            .collect()
    }

    /// The deployments that would serve `model` (by name, in configuration order).
    pub fn deployments_for(&self, model: &str) -> Vec<&str> {
        self.shared
            .candidates(Some(model))
            .iter()
            .map(|&i| self.shared.deployments[i].name.as_str())
            .collect()
    }

    /// Makes one routing decision for `model`, as a request would, without sending anything
    /// (and without taking the trial request of a deployment whose cool-down ended): the
    /// deployment's name, or `None` when none may take a request now. For benchmarks and
    /// diagnostics.
    pub fn choose(&self, model: &str) -> Option<&str> {
        match self
            .shared
            .pick(self.shared.candidates(Some(model)), &[], false)
        {
            Ok((index, _)) => Some(self.shared.deployments[index].name.as_str()),
            Err(_) => None,
        }
    }
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("deployments", &self.shared.deployments)
            .field("fallbacks", &self.shared.fallbacks)
            .field("health", &self.shared.health)
            .field("first_byte_timeout", &self.shared.first_byte_timeout)
            .finish_non_exhaustive()
    }
}

/// The future of a routed call.
pub type RouterFuture =
    Pin<Box<dyn Future<Output = Result<Response<RouterBody>, BoxError>> + Send + 'static>>;

impl<B> Service<Request<B>> for Router
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<RouterBody>;
    type Error = BoxError;
    type Future = RouterFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> RouterFuture {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move { shared.route(request).await })
    }
}

/// What the router reads of a request body.
#[derive(Deserialize, Default)]
struct Head {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    stream: Option<bool>,
}

/// How one attempt ended.
enum Outcome {
    /// The answer to give (a success, a rejection, or an error no other deployment would mend).
    Final(Result<Response<RouterBody>, BoxError>),
    /// A failure another deployment may answer better (kept in case none does).
    Failover(Result<Response<RouterBody>, BoxError>),
}

impl Shared {
    fn candidates(&self, model: Option<&str>) -> &[usize] {
        match model {
            None => &self.all,
            Some(model) => self.serving.get(model).unwrap_or(&self.every_model),
        }
    }

    /// Power of two choices among the deployments of `candidates` not yet `tried`: a
    /// deployment whose cool-down just ended gets its trial request first; otherwise two
    /// distinct replicas are drawn at random among the open ones, a deployment of weight `w`
    /// being `w` replicas; the same deployment twice takes the request, else the one with the
    /// lower Peak-EWMA cost wins. `Err` with the instant the first closed
    /// one reopens when none is open.
    fn pick(
        &self,
        candidates: &[usize],
        tried: &[usize],
        take_trial: bool,
    ) -> Result<(usize, bool), Option<Instant>> {
        let now = Instant::now();
        let mut open: [(usize, u32); 8] = [(0, 0); 8];
        let mut spill: Vec<(usize, u32)> = Vec::new();
        let mut count = 0;
        let mut total: u64 = 0;
        let mut reopens: Option<Instant> = None;
        for &index in candidates {
            if tried.contains(&index) {
                continue;
            }
            let live = &self.deployments[index];
            let mut health = live.health();
            match health.availability(now, &self.health) {
                Availability::Trial => {
                    if take_trial {
                        health.start_trial(now);
                    }
                    return Ok((index, true));
                }
                Availability::Closed(until) => {
                    reopens = Some(reopens.map_or(until, |r| r.min(until)));
                }
                Availability::Open => {
                    let entry = (index, live.weight);
                    if count < open.len() {
                        open[count] = entry;
                    } else {
                        if spill.is_empty() {
                            spill.extend_from_slice(&open);
                        }
                        spill.push(entry);
                    }
                    count += 1;
                    total += u64::from(live.weight);
                }
            }
        }
        let open: &[(usize, u32)] = if spill.is_empty() {
            &open[..count]
        } else {
            &spill
        };
        match open {
            [] => Err(reopens),
            [(only, _)] => Ok((*only, false)),
            _ => {
                let mut rng = rand::rng();
                let a = weighted(open, total, None, &mut rng);
                let b = weighted(open, total - 1, Some(a), &mut rng);
                let (a, b) = (open[a].0, open[b].0);
                if a == b {
                    return Ok((a, false));
                }
                let (load_a, load_b) = (self.deployments[a].load(), self.deployments[b].load());
                Ok((if load_b < load_a { b } else { a }, false))
            }
        }
    }

    async fn route<B>(&self, request: Request<B>) -> Result<Response<RouterBody>, BoxError>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = request.into_parts();
        let body = body.collect().await.map_err(Into::into)?.to_bytes();
        let head: Head = serde_json::from_slice(&body).unwrap_or_default();
        let asked: Option<Arc<str>> = parts
            .extensions
            .get::<RequestModel>()
            .map(|model| Arc::clone(&model.0))
            .or_else(|| head.model.map(Arc::from));
        let stream = head.stream.unwrap_or(false);
        let fallbacks: &[String] = asked
            .as_deref()
            .and_then(|model| self.fallbacks.get(model))
            .map_or(&[], |list| list);

        let mut last = None;
        for step in 0..=fallbacks.len() {
            let (model, body) = match step {
                0 => (asked.clone(), body.clone()),
                _ => {
                    let model: Arc<str> = Arc::from(fallbacks[step - 1].as_str());
                    let Some(body) = with_model(&body, &model) else {
                        break;
                    };
                    (Some(model), body)
                }
            };
            let candidates = self.candidates(model.as_deref());
            if candidates.is_empty() {
                last.get_or_insert_with(|| Ok(not_served(model.as_deref())));
                continue;
            }
            match self.serve(&parts, body, candidates, stream).await {
                Outcome::Final(result) => {
                    return result.map(|res| served(res, asked.as_ref(), model.as_ref()));
                }
                Outcome::Failover(result) => {
                    if step < fallbacks.len() {
                        tracing::debug!(
                            model = model.as_deref().unwrap_or(""),
                            fallback = fallbacks[step].as_str(),
                            "every deployment of the model failed; falling back"
                        );
                    }
                    last = Some(result.map(|res| served(res, asked.as_ref(), model.as_ref())));
                }
            }
        }
        last.unwrap_or_else(|| Ok(not_served(asked.as_deref())))
    }

    /// Tries the deployments of one model, one after another, until one answers or
    /// `max_attempts` have been tried.
    async fn serve(
        &self,
        parts: &Parts,
        body: Bytes,
        candidates: &[usize],
        stream: bool,
    ) -> Outcome {
        let max = match self.max_attempts {
            0 => candidates.len(),
            n => n.min(candidates.len()),
        };
        let mut tried = Vec::with_capacity(max);
        let mut last = None;
        while tried.len() < max {
            match self.pick(candidates, &tried, true) {
                Ok((index, trial)) => {
                    tried.push(index);
                    match self
                        .attempt(index, trial, parts, body.clone(), stream)
                        .await
                    {
                        Outcome::Final(result) => return Outcome::Final(result),
                        Outcome::Failover(result) => last = Some(result),
                    }
                }
                Err(reopens) => {
                    if last.is_none() {
                        let wait = reopens
                            .map(|at| at.saturating_duration_since(Instant::now()))
                            .unwrap_or(self.health.get_base_ejection());
                        last = Some(Err(Overloaded::new(wait).into()));
                    }
                    break;
                }
            }
        }
        Outcome::Failover(
            last.unwrap_or_else(|| Err(Overloaded::new(self.health.get_base_ejection()).into())),
        )
    }

    /// One attempt on one deployment, with its verdict recorded.
    async fn attempt(
        &self,
        index: usize,
        trial: bool,
        parts: &Parts,
        body: Bytes,
        stream: bool,
    ) -> Outcome {
        let live = &self.deployments[index];
        let (failed, healthy) = match trial {
            true => (Verdict::TrialFailed, Verdict::TrialHealthy),
            false => (Verdict::Failed, Verdict::Healthy),
        };
        let mut parts = parts.clone();
        // A fallback's body has another length than the one the caller declared.
        if parts.headers.contains_key(CONTENT_LENGTH) {
            parts
                .headers
                .insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        let request = Request::from_parts(parts, Full::new(body));
        let call = live.client.clone().oneshot(request);
        // tower's Peak-EWMA times the call to its response head; its handle is dropped (and
        // the time recorded) then, or when a first-byte timeout drops the call.
        let call = live.ewma().call(call);
        let result = match self.first_byte_timeout.filter(|_| stream) {
            None => call.await.map(|res| (res, None)),
            Some(bound) => {
                let first = async {
                    let mut res = call.await?;
                    if !res.status().is_success() {
                        return Ok((res, None));
                    }
                    match res.body_mut().frame().await {
                        Some(Ok(frame)) => Ok((res, Some(frame))),
                        Some(Err(error)) => Err(BoxError::from(error)),
                        None => Ok((res, None)),
                    }
                };
                match tokio::time::timeout(bound, first).await {
                    Ok(result) => result,
                    Err(elapsed) => Err(FirstByteTimeout { bound, elapsed }.into()),
                }
            }
        };
        let now = Instant::now();
        let count = |result: &'static str| {
            metrics::counter!(ATTEMPTS, "deployment" => live.name.clone(), "result" => result)
                .increment(1);
        };
        let ejected = |ejected: bool| {
            if ejected {
                tracing::warn!(deployment = %live.name, "deployment ejected");
                metrics::counter!(EJECTIONS, "deployment" => live.name.clone()).increment(1);
            }
        };
        match result {
            Err(error) => {
                let class = ErrorClass::of(&*error);
                count(class.as_str());
                if matches!(class, ErrorClass::Connect | ErrorClass::Timeout) {
                    tracing::debug!(deployment = %live.name, %class, "attempt failed");
                    ejected(live.health().record(failed, now, &self.health));
                    Outcome::Failover(Err(error))
                } else if class == ErrorClass::Overload {
                    // Its own pool shed the request: nothing reached the upstream, which is
                    // not to blame, but another deployment may have room.
                    Outcome::Failover(Err(error))
                } else {
                    Outcome::Final(Err(error))
                }
            }
            Ok((res, first)) => {
                let class = AnswerClass::of(res.status(), res.headers());
                count(class.as_str());
                let rest = rest_of(res.status(), res.headers(), self.health.get_default_rest());
                {
                    let mut health = live.health();
                    match (class.is_transient(), rest) {
                        (true, Some(_)) => {}
                        (true, None) => ejected(health.record(failed, now, &self.health)),
                        (false, _) => ejected(health.record(healthy, now, &self.health)),
                    }
                    if let Some(rest) = rest {
                        tracing::debug!(deployment = %live.name, ?rest, "upstream asked for a rest");
                        health.record(Verdict::Rest(rest), now, &self.health);
                    }
                }
                let res = res.map(|body| RouterBody::upstream(body, first));
                if class.is_transient() {
                    Outcome::Failover(Ok(res))
                } else {
                    Outcome::Final(Ok(res))
                }
            }
        }
    }
}

/// Index into `open` of a deployment drawn with a chance proportional to its weight, a weight
/// `w` counting as `w` replicas of the deployment; `drawn`, one replica already drawn (its
/// deployment's weight counts one less). `total` is the sum of the weights drawn from.
fn weighted(open: &[(usize, u32)], total: u64, drawn: Option<usize>, rng: &mut impl Rng) -> usize {
    let mut point = rng.random_range(0..total.max(1));
    let mut last = 0;
    for (i, &(_, weight)) in open.iter().enumerate() {
        let weight = u64::from(weight) - u64::from(Some(i) == drawn);
        if weight == 0 {
            continue;
        }
        last = i;
        match point.checked_sub(weight) {
            Some(rest) => point = rest,
            None => return i,
        }
    }
    last
}

/// The body with its `model` replaced; `None` when it is not a JSON object.
fn with_model(body: &Bytes, model: &str) -> Option<Bytes> {
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(body).ok()?;
    object.insert("model".to_owned(), serde_json::Value::from(model));
    serde_json::to_vec(&object).ok().map(Bytes::from)
}

/// Marks an answer with the model that served it, and, for a fallback, the [`Fallback`]
/// extension and the counter.
fn served(
    mut res: Response<RouterBody>,
    asked: Option<&Arc<str>>,
    model: Option<&Arc<str>>,
) -> Response<RouterBody> {
    let Some(model) = model else {
        return res;
    };
    if let Ok(value) = HeaderValue::from_str(model) {
        res.headers_mut().insert(SERVED_MODEL_HEADER, value);
    }
    if let Some(asked) = asked.filter(|asked| *asked != model) {
        if res.status().is_success() {
            metrics::counter!(FALLBACKS, "from" => asked.to_string(), "to" => model.to_string())
                .increment(1);
        }
        res.extensions_mut().insert(Fallback {
            from: Arc::clone(asked),
            to: Arc::clone(model),
        });
    }
    res
}

/// The answer for a model no deployment serves: `404 model_not_found`, as OpenAI answers it.
fn not_served(model: Option<&str>) -> Response<RouterBody> {
    let message = match model {
        Some(model) => format!("The model '{model}' is not served by any deployment"),
        None => "No deployment serves this request".to_owned(),
    };
    ErrorBody::new(message, "invalid_request_error")
        .with_param("model")
        .with_code("model_not_found")
        .into_response(StatusCode::NOT_FOUND)
        .map(RouterBody::full)
}

/// No first byte of a stream came within the bound: the attempt is given up and the next
/// deployment tried. Its source is tokio's `Elapsed`, so its class is
/// [`Timeout`](ErrorClass::Timeout).
#[derive(Debug)]
pub struct FirstByteTimeout {
    bound: Duration,
    elapsed: tokio::time::error::Elapsed,
}

impl FirstByteTimeout {
    /// The bound that passed.
    pub fn bound(&self) -> Duration {
        self.bound
    }
}

impl fmt::Display for FirstByteTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no first byte from the upstream within {:?}", self.bound)
    }
}

impl std::error::Error for FirstByteTimeout {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.elapsed)
    }
}

/// Configures a [`Router`]; start from [`Router::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RouterBuilder {
    deployments: Vec<Deployment>,
    fallbacks: Vec<(String, Vec<String>)>,
    health: HealthConfig,
    first_byte_timeout: Option<Duration>,
    max_attempts: usize,
    default_rtt: Duration,
    decay: Duration,
}

impl Default for RouterBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RouterBuilder {
    /// Default of the latency a deployment is assumed to have before it answered once: 1 s.
    pub const DEFAULT_RTT: Duration = Duration::from_secs(1);
    /// Default of the Peak-EWMA decay: 10 s.
    pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);

    /// No deployment, no fallback, [`HealthConfig::default`], no first-byte timeout, every
    /// deployment of a model tried before giving up on it.
    pub fn new() -> Self {
        Self {
            deployments: Vec::new(),
            fallbacks: Vec::new(),
            health: HealthConfig::default(),
            first_byte_timeout: None,
            max_attempts: 0,
            default_rtt: Self::DEFAULT_RTT,
            decay: Self::DEFAULT_DECAY,
        }
    }

    /// Adds a deployment.
    pub fn deployment(mut self, deployment: Deployment) -> Self {
        self.deployments.push(deployment);
        self
    }

    /// Adds deployments.
    pub fn deployments(mut self, deployments: impl IntoIterator<Item = Deployment>) -> Self {
        self.deployments.extend(deployments);
        self
    }

    /// The models tried, in order, when every deployment of `model` failed (see
    /// [Fallbacks](crate#fallbacks)). Replaces an earlier list for the same model.
    pub fn fallback<I, S>(mut self, model: impl Into<String>, then: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let model = model.into();
        self.fallbacks.retain(|(m, _)| *m != model);
        self.fallbacks
            .push((model, then.into_iter().map(Into::into).collect()));
        self
    }

    /// When deployments are ejected and rested (default [`HealthConfig::default`]).
    pub fn health(mut self, health: HealthConfig) -> Self {
        self.health = health;
        self
    }

    /// For a streamed request (`"stream": true`), the longest wait from sending it to the
    /// first byte of the answer's body; past it the next deployment is tried (see
    /// [Time-to-first-byte failover](crate#time-to-first-byte-failover)). Default: none.
    pub fn first_byte_timeout(mut self, bound: Option<Duration>) -> Self {
        self.first_byte_timeout = bound;
        self
    }

    /// How many deployments of one model a request may try (default 0: all of them).
    pub fn max_attempts(mut self, attempts: usize) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// tower's Peak-EWMA settings: the latency assumed before a deployment answered once
    /// (default 1 s), and how fast a peak decays towards the moving average (default 10 s).
    pub fn peak_ewma(mut self, default_rtt: Duration, decay: Duration) -> Self {
        self.default_rtt = default_rtt;
        self.decay = decay;
        self
    }

    /// Builds each deployment's client and pool. Fails with no deployment, or when a
    /// deployment's client configuration is invalid (bad base URL or key).
    pub fn build(self) -> Result<Router, BuildError> {
        if self.deployments.is_empty() {
            return Err(BuildError::NoDeployment);
        }
        let mut deployments = Vec::with_capacity(self.deployments.len());
        for deployment in self.deployments {
            let name = deployment.name.clone();
            let live = Live::build(deployment, self.default_rtt, self.decay)
                .map_err(|source| BuildError::Client { name, source })?;
            deployments.push(live);
        }
        let every_model: Box<[usize]> = deployments
            .iter()
            .enumerate()
            .filter(|(_, live)| live.models.is_empty())
            .map(|(i, _)| i)
            .collect();
        let mut serving: HashMap<String, Box<[usize]>> = HashMap::new();
        for live in &deployments {
            for model in &live.models {
                if serving.contains_key(model) {
                    continue;
                }
                let serves: Box<[usize]> = deployments
                    .iter()
                    .enumerate()
                    .filter(|(_, d)| d.models.is_empty() || d.models.contains(model))
                    .map(|(i, _)| i)
                    .collect();
                serving.insert(model.clone(), serves);
            }
        }
        let all = (0..deployments.len()).collect();
        Ok(Router {
            shared: Arc::new(Shared {
                deployments: deployments.into_boxed_slice(),
                serving,
                every_model,
                all,
                fallbacks: self
                    .fallbacks
                    .into_iter()
                    .map(|(model, then)| (model, then.into_boxed_slice()))
                    .collect(),
                health: self.health,
                first_byte_timeout: self.first_byte_timeout,
                max_attempts: self.max_attempts,
            }),
        })
    }
}

/// Why [`RouterBuilder::build`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// No deployment was given.
    NoDeployment,
    /// A deployment's client could not be built.
    Client {
        /// The deployment's name.
        name: String,
        /// The client's configuration error.
        source: holysheep_client::Error,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoDeployment => f.write_str("a router needs at least one deployment"),
            Self::Client { name, .. } => write!(f, "deployment {name}: invalid client settings"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::NoDeployment => None,
            Self::Client { source, .. } => Some(source),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_draws_follow_weights_and_replicas() {
        let open = [(0, 1), (1, 3)];
        let mut rng = rand::rng();
        let mut hits = [0u32; 2];
        for _ in 0..4000 {
            hits[weighted(&open, 4, None, &mut rng)] += 1;
        }
        assert!((2700..3300).contains(&hits[1]), "{hits:?}");
        // One replica of the weight-1 deployment drawn: the second draw is the other one.
        for _ in 0..100 {
            assert_eq!(weighted(&open, 3, Some(0), &mut rng), 1);
        }
        // One of three replicas drawn: two of three left against one.
        let mut hits = [0u32; 2];
        for _ in 0..3000 {
            hits[weighted(&open, 3, Some(1), &mut rng)] += 1;
        }
        assert!((1800..2200).contains(&hits[1]), "{hits:?}");
        // Equal weights of one: never the same deployment twice.
        let even = [(0, 1), (1, 1)];
        for _ in 0..100 {
            assert_eq!(weighted(&even, 1, Some(0), &mut rng), 1);
        }
    }

    #[test]
    fn model_rewrite_keeps_the_rest() {
        let body = Bytes::from_static(br#"{"model":"gpt-4.1","stream":true,"messages":[]}"#);
        let rewritten = with_model(&body, "deepseek-v3.2").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&rewritten).unwrap();
        assert_eq!(v["model"], "deepseek-v3.2");
        assert_eq!(v["stream"], true);
        assert!(with_model(&Bytes::from_static(b"[1]"), "m").is_none());
    }
}
