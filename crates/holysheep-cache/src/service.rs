//! The [`Cache`] service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use holysheep_core::BoxError;
use holysheep_core::signal::{CacheOutcome, Namespace, PoolSlot, RequestModel};
use http::header::{AGE, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
#[cfg(feature = "redis")]
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use tower::Service;

use crate::access::CacheAccess;
use crate::body::{Plan, Recorder, Recording, ResponseBody};
use crate::control::RequestControl;
use crate::convert::{Endpoint, good_entry, json_to_sse, sse_to_json, strip_usage};
use crate::entry::{Entry, EntryBody};
use crate::error::{CoalesceError, share};
use crate::flight::{End, Followed, Follower, Head, Joined, Lead, Shape, join};
use crate::future::ResponseFuture;
use crate::key::{CacheKey, KeyRequest, ParsedBody};
use crate::layer::CacheLayer;
use crate::shared::Shared;
use crate::store::CacheStore;

#[cfg(test)]
mod tests;

/// The RFC 9211 `Cache-Status` response header.
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The plain `x-cache: HIT | MISS | BYPASS` response header.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

const HIT: HeaderValue = HeaderValue::from_static("HIT");
const MISS: HeaderValue = HeaderValue::from_static("MISS");
const BYPASS: HeaderValue = HeaderValue::from_static("BYPASS");

pub(crate) const STATUS_HIT: HeaderValue = HeaderValue::from_static("holysheep; hit");
const STATUS_COLLAPSED: HeaderValue = HeaderValue::from_static("holysheep; fwd=miss; collapsed");
/// An answer another instance fetched (fleet coalescing).
const STATUS_FLEET: HeaderValue =
    HeaderValue::from_static("holysheep; hit; collapsed; detail=fleet");
/// An error answer another instance got, shared as it is.
const STATUS_FLEET_FWD: HeaderValue =
    HeaderValue::from_static("holysheep; fwd=miss; collapsed; detail=fleet");
const STATUS_BYPASS: HeaderValue = HeaderValue::from_static("holysheep; fwd=bypass");
const STATUS_METHOD: HeaderValue = HeaderValue::from_static("holysheep; fwd=method");

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const EVENT_STREAM: HeaderValue = HeaderValue::from_static("text/event-stream");

/// How often a follower may join a new flight after its leader went away, before it goes
/// upstream on its own. Bounds the work when leaders keep getting cancelled.
const MAX_REJOINS: u32 = 2;

/// A response cache for OpenAI-compatible requests in front of an upstream service.
///
/// See the [crate docs](crate) for what is cached, the headers it answers with, and how
/// identical requests in flight are coalesced. Build it with [`CacheLayer`] or [`Cache::new`].
///
/// `poll_ready` is always ready: a hit must not wait for upstream capacity (a pool limit below
/// the cache). The inner service is cloned per request and driven to readiness inside the
/// response future, only when the request goes upstream.
pub struct Cache<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Cache<S> {
    /// Wraps `inner` with a cache over `store`, with the default settings of [`CacheLayer`].
    pub fn new(inner: S, store: impl CacheStore) -> Self {
        tower_layer::Layer::layer(&CacheLayer::new(store), inner)
    }

    /// A [`CacheLayer`] over `store`.
    pub fn layer(store: impl CacheStore) -> CacheLayer {
        CacheLayer::new(store)
    }

    pub(crate) fn from_parts(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the cache, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The store behind the cache.
    pub fn store(&self) -> &dyn CacheStore {
        &*self.shared.store
    }

    /// How many coalesced upstream calls are in flight (keys other requests can join).
    pub fn in_flight(&self) -> usize {
        self.shared.flights().len()
    }

    /// How many values read from the store were not served since the cache was built: values
    /// that are not an entry, and (from a store shared with others, see
    /// [`CacheStore::is_shared`]) entries that are not a good answer. Each was a miss whose
    /// answer replaced it.
    pub fn invalid_entries(&self) -> u64 {
        self.shared.invalid_entries()
    }
}

impl<S: Clone> Clone for Cache<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Cache<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("inner", &self.inner)
            .field("store", &self.shared.store.kind())
            .field("ttl", &self.shared.settings.ttl)
            .field("upstream", &self.shared.settings.upstream)
            .finish_non_exhaustive()
    }
}

impl<S, B, ResBody> Service<Request<B>> for Cache<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ResponseFuture::new(Box::pin(serve(
            Arc::clone(&self.shared),
            self.inner.clone(),
            req,
        )))
    }
}

/// What a cacheable request is, once parsed.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) key: CacheKey,
    pub(crate) endpoint: Endpoint,
    shape: Shape,
    pub(crate) control: RequestControl,
    model: Option<RequestModel>,
}

/// Why the upstream was asked, for `Cache-Status: fwd=`.
#[derive(Clone, Copy)]
enum Fwd {
    Miss,
    Request,
    Stale,
}

impl Fwd {
    fn as_str(self) -> &'static str {
        match self {
            Self::Miss => "miss",
            Self::Request => "request",
            Self::Stale => "stale",
        }
    }
}

/// Classifies a request: `Err` carries the `Cache-Status` of a bypass.
fn classify(shared: &Shared, parts: &Parts, bytes: &Bytes) -> Result<Ctx, HeaderValue> {
    if parts.method != Method::POST {
        return Err(STATUS_METHOD);
    }
    let control = RequestControl::from_headers(&parts.headers);
    if control.no_store || bytes.len() > shared.settings.max_body_bytes {
        return Err(STATUS_BYPASS);
    }
    let endpoint = Endpoint::from_path(parts.uri.path()).ok_or(STATUS_BYPASS)?;
    // Parsed once, into a tree that borrows the body's strings: the key and the fields below
    // are all read from it.
    let body = ParsedBody::parse(bytes).map_err(|_| STATUS_BYPASS)?;
    if !body.is_object() {
        return Err(STATUS_BYPASS);
    }
    let namespace = parts.extensions.get::<Namespace>();
    // The query is forwarded, so it is keyed (see `KeyRequest::path`).
    let target = match (parts.uri.query(), parts.uri.path_and_query()) {
        (Some(query), Some(target)) if !query.is_empty() => target.as_str(),
        _ => parts.uri.path(),
    };
    let key = shared
        .policy
        .key(&KeyRequest {
            path: target,
            upstream: &shared.settings.upstream,
            namespace: namespace.map(Namespace::as_str),
            body: &body,
        })
        .ok_or(STATUS_BYPASS)?;
    let stream = body.bool_at(&["stream"]).unwrap_or(false);
    let include_usage = body
        .bool_at(&["stream_options", "include_usage"])
        .unwrap_or(false);
    let model = parts
        .extensions
        .get::<RequestModel>()
        .cloned()
        .or_else(|| body.str_at(&["model"]).map(|m| RequestModel(Arc::from(m))));
    Ok(Ctx {
        key,
        endpoint,
        shape: Shape {
            stream,
            include_usage,
        },
        control,
        model,
    })
}

async fn serve<S, B, ResBody>(
    shared: Arc<Shared>,
    inner: S,
    req: Request<B>,
) -> Result<Response<ResponseBody>, BoxError>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    let (parts, body) = req.into_parts();
    let bytes = body.collect().await.map_err(Into::into)?.to_bytes();
    let ctx = match classify(&shared, &parts, &bytes) {
        Ok(ctx) => ctx,
        Err(status) => {
            let model = parts.extensions.get::<RequestModel>().cloned();
            let req = Request::from_parts(parts, Full::new(bytes));
            let res = call_upstream(inner, req).await?;
            let mut res = res.map(ResponseBody::passthrough);
            mark(&mut res, CacheOutcome::Bypass, status, model);
            return Ok(res);
        }
    };

    let mut fwd = Fwd::Request;
    if ctx.control.may_read() {
        fwd = Fwd::Miss;
        match shared.store.get(ctx.key.as_str()).await {
            Ok(Some(value)) => match Entry::decode(value) {
                // Read back from a store others may write to: served only if it is still the
                // good answer it was when stored. Otherwise a miss, whose answer replaces it.
                Some(entry) if shared.check_reads && !good_entry(ctx.endpoint, &entry) => {
                    shared.invalid_entry(ctx.key.as_str(), "not a good answer");
                }
                Some(entry) if ctx.control.accepts_age(entry.age()) => {
                    if let Some(res) = from_entry(&entry, &ctx, CacheOutcome::Hit, STATUS_HIT) {
                        return Ok(res);
                    }
                }
                Some(_) => fwd = Fwd::Stale,
                None => shared.invalid_entry(ctx.key.as_str(), "not an entry"),
            },
            Ok(None) => {}
            Err(error) => shared.store_failed("get", &error),
        }
    }

    let mut rejoins = 0;
    let mut joined = shared
        .settings
        .coalesce
        .then(|| join(&shared, &ctx.key, ctx.shape));
    let lead = loop {
        let follower = match joined.take() {
            None => break Lead::alone(ctx.shape),
            Some(Joined::Leader(lead)) => break lead,
            Some(Joined::Follower(follower)) => follower,
        };
        let mut follower = follower;
        match follower.wait().await {
            Followed::Live(head) => return Ok(live(&head, follower, &ctx)),
            Followed::Entry(entry) => {
                match from_entry(&entry, &ctx, CacheOutcome::Coalesced, STATUS_COLLAPSED) {
                    Some(res) => return Ok(res),
                    // Not in this shape without a loss: to the flight made for this shape.
                    None => joined = Some(follower.hand_off(&shared, &ctx.key)),
                }
            }
            Followed::HandOff => joined = Some(follower.hand_off(&shared, &ctx.key)),
            Followed::Failed(error) => {
                return Err(CoalesceError::leader_failed(error).into());
            }
            Followed::Rejoin => {
                drop(follower);
                rejoins += 1;
                if rejoins < MAX_REJOINS {
                    joined = Some(join(&shared, &ctx.key, ctx.shape));
                }
            }
        }
    };
    #[cfg(feature = "redis")]
    let lead = match fleet_role(&shared, &ctx, lead).await {
        FleetTurn::Lead(lead) => lead,
        FleetTurn::Answer(lead, res) => {
            return lead_answer(shared, res, ctx, lead, Origin::Fleet).await;
        }
    };
    lead_call(shared, inner, parts, bytes, ctx, lead, fwd).await
}

#[cfg(feature = "redis")]
enum FleetTurn {
    /// Call upstream (as the fleet's leader, or coalescing locally only).
    Lead(Lead),
    /// Another instance's answer, to serve as if it came from upstream.
    Answer(Lead, Response<UnsyncBoxBody<Bytes, BoxError>>),
}

/// Asks the fleet lease for a local leader's key: lead the fleet (the answer is mirrored),
/// follow another instance, or coalesce locally only.
#[cfg(feature = "redis")]
async fn fleet_role(shared: &Arc<Shared>, ctx: &Ctx, mut lead: Lead) -> FleetTurn {
    use crate::fleet::{Followed, Role};
    let Some(fleet) = shared.fleet.as_ref().filter(|_| lead.is_registered()) else {
        return FleetTurn::Lead(lead);
    };
    let max_bytes = shared.settings.max_entry_bytes;
    let remote = match fleet.claim(&ctx.key, max_bytes).await {
        Role::Leader(mirror, lease) => {
            lead.attach(mirror, lease);
            return FleetTurn::Lead(lead);
        }
        Role::Local => return FleetTurn::Lead(lead),
        Role::Stored => return stored_turn(shared, ctx, lead).await,
        Role::Follower(remote) => remote,
    };
    match remote.follow(ctx.shape, max_bytes).await {
        Followed::Live {
            status,
            headers,
            body,
        } => {
            let mut res = Response::new(body);
            *res.status_mut() = status;
            *res.headers_mut() = headers;
            FleetTurn::Answer(lead, res)
        }
        Followed::Stored => stored_turn(shared, ctx, lead).await,
        Followed::TakeOver(mirror, lease) => {
            lead.attach(mirror, lease);
            FleetTurn::Lead(lead)
        }
        Followed::Alone => FleetTurn::Lead(lead),
    }
}

/// Serves the entry another instance stored, or calls upstream when it cannot.
#[cfg(feature = "redis")]
async fn stored_turn(shared: &Shared, ctx: &Ctx, lead: Lead) -> FleetTurn {
    match stored_entry(shared, ctx).await {
        Some(res) => FleetTurn::Answer(lead, res.map(UnsyncBoxBody::new)),
        None => FleetTurn::Lead(lead),
    }
}

/// The entry another instance stored, in this request's shape.
#[cfg(feature = "redis")]
async fn stored_entry(shared: &Shared, ctx: &Ctx) -> Option<Response<ResponseBody>> {
    let value = match shared.store.get(ctx.key.as_str()).await {
        Ok(value) => value?,
        Err(error) => {
            shared.store_failed("get", &error);
            return None;
        }
    };
    let entry = Entry::decode(value)?;
    if shared.check_reads && !good_entry(ctx.endpoint, &entry) {
        shared.invalid_entry(ctx.key.as_str(), "not a good answer");
        return None;
    }
    let mut res = from_entry(&entry, ctx, CacheOutcome::Coalesced, STATUS_FLEET)?;
    // Served again below as a replay: the head is rebuilt there.
    res.headers_mut().remove(CACHE_STATUS);
    res.headers_mut().remove(X_CACHE);
    Some(res)
}

/// Goes upstream as the leader of a flight: publishes the answer to followers, records it, and
/// stores it when it ends well.
async fn lead_call<S, ResBody>(
    shared: Arc<Shared>,
    inner: S,
    mut parts: Parts,
    bytes: Bytes,
    ctx: Ctx,
    mut lead: Lead,
    fwd: Fwd,
) -> Result<Response<ResponseBody>, BoxError>
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResBody>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    let access = CacheAccess::new(Arc::clone(&shared), ctx.clone());
    parts.extensions.insert(access);
    let req = Request::from_parts(parts, Full::new(bytes));
    match call_upstream(inner, req).await {
        Ok(res) => lead_answer(shared, res, ctx, lead, Origin::Upstream(fwd)).await,
        Err(error) => {
            // Followers get the leader's own error (in their chain), so they are answered as
            // it is: a shed's 503 and Retry-After, a timeout's 504.
            lead.unregister();
            let followers = lead.flight().state().followers;
            let (error, shared) = share(error, followers);
            lead.fail(shared);
            Err(error)
        }
    }
}

/// Where a leader's answer came from.
#[derive(Clone, Copy)]
enum Origin {
    /// This instance's upstream call.
    Upstream(Fwd),
    /// Another instance's, replayed (fleet coalescing): never stored again here.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Fleet,
}

/// Serves a leader's answer: publishes it to followers, records it, and stores it when it
/// ends well.
async fn lead_answer<ResBody>(
    shared: Arc<Shared>,
    res: Response<ResBody>,
    ctx: Ctx,
    lead: Lead,
    origin: Origin,
) -> Result<Response<ResponseBody>, BoxError>
where
    ResBody: Body + Send + 'static,
    ResBody::Data: Send,
    ResBody::Error: Into<BoxError>,
{
    let mut lead = lead;
    let (head, body) = res.into_parts();
    let content_type = head.headers.get(CONTENT_TYPE).cloned();
    let is_sse = content_type
        .as_ref()
        .and_then(|ct| ct.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .get(..17)
                .is_some_and(|p| p.eq_ignore_ascii_case("text/event-stream"))
        });
    let slot = head.extensions.get::<PoolSlot>().cloned();
    let shared_head = Head {
        status: head.status,
        version: head.version,
        headers: head.headers.clone(),
    };
    let Ctx {
        key,
        endpoint,
        control,
        model,
        ..
    } = ctx;

    // A layer inside answered from this cache's entries (`CacheAccess`): passed on as it is,
    // and never stored again under this request's key.
    let inner_hit = head.extensions.get::<CacheOutcome>() == Some(&CacheOutcome::Hit);
    let ok = head.status == StatusCode::OK;
    if !ok || inner_hit {
        // Never stored. Kept only for followers that already joined; nobody new may join.
        lead.unregister();
        if lead.flight().state().followers == 0 {
            lead.end(End::Complete(None));
            let (outcome, status) = origin.status(head.status, false);
            let mut res = Response::from_parts(head, ResponseBody::passthrough(body));
            if !inner_hit {
                mark(&mut res, outcome, status, model);
            }
            return Ok(res);
        }
    }
    let plan = control
        .ttl(shared.settings.ttl)
        .filter(|_| matches!(origin, Origin::Upstream(_)))
        .filter(|_| ok && !inner_hit && (!is_sse || shared.settings.cache_streams))
        .map(|ttl| Plan { ttl });
    let default_type = if ok && is_sse { EVENT_STREAM } else { JSON };
    let recorder = Recorder::new(
        Arc::clone(&shared),
        key,
        lead,
        endpoint,
        shared_head,
        content_type.unwrap_or(default_type),
        ok,
        plan,
        ok && is_sse,
        slot,
    );
    let mut recording = Recording::new(body, recorder);
    // A stream is forwarded chunk by chunk (followers follow it live); whether it is stored is
    // known only at its end. A JSON answer (or error body) arrives whole anyway: it is read
    // first (up to the entry bound), so its head can say `stored`, and so that neither the
    // caller nor a follower ever gets the head of a JSON answer whose body was then cut: that
    // is a failed call, for all.
    let stored = if is_sse {
        recording.publish();
        false
    } else {
        recording.prefetch(shared.settings.max_entry_bytes).await?
    };
    let (outcome, status) = origin.status(head.status, stored);
    let mut res = Response::from_parts(head, recording.into_body());
    if !inner_hit {
        mark(&mut res, outcome, status, model);
    }
    Ok(res)
}

impl Origin {
    /// How a leader's answer is marked: its outcome and `Cache-Status`.
    fn status(self, upstream: StatusCode, stored: bool) -> (CacheOutcome, HeaderValue) {
        let fwd = match self {
            Origin::Fleet if upstream == StatusCode::OK => {
                return (CacheOutcome::Coalesced, STATUS_FLEET);
            }
            Origin::Fleet => return (CacheOutcome::Coalesced, STATUS_FLEET_FWD),
            Origin::Upstream(fwd) => fwd,
        };
        let status = match (upstream == StatusCode::OK, fwd, stored) {
            (false, fwd, _) => forwarded_status(fwd, upstream),
            (true, Fwd::Miss, false) => HeaderValue::from_static("holysheep; fwd=miss"),
            (true, Fwd::Miss, true) => HeaderValue::from_static("holysheep; fwd=miss; stored"),
            (true, Fwd::Request, false) => HeaderValue::from_static("holysheep; fwd=request"),
            (true, Fwd::Request, true) => {
                HeaderValue::from_static("holysheep; fwd=request; stored")
            }
            (true, Fwd::Stale, false) => HeaderValue::from_static("holysheep; fwd=stale"),
            (true, Fwd::Stale, true) => HeaderValue::from_static("holysheep; fwd=stale; stored"),
        };
        (CacheOutcome::Miss, status)
    }
}

/// `Cache-Status` of an answer that is not a `200`: never stored.
fn forwarded_status(fwd: Fwd, status: StatusCode) -> HeaderValue {
    let status = format!(
        "holysheep; fwd={}; fwd-status={}",
        fwd.as_str(),
        status.as_u16()
    );
    HeaderValue::from_str(&status).unwrap_or(STATUS_BYPASS)
}

/// Drives a clone of the inner service to readiness, then calls it.
async fn call_upstream<S, R>(mut inner: S, req: R) -> Result<S::Response, BoxError>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
{
    std::future::poll_fn(|cx| inner.poll_ready(cx))
        .await
        .map_err(Into::into)?;
    inner.call(req).await.map_err(Into::into)
}

/// A follower's replay of the leader's response: same head, body fed live.
fn live(head: &Head, follower: Follower, ctx: &Ctx) -> Response<ResponseBody> {
    let mut res = Response::new(ResponseBody::follow(follower));
    *res.status_mut() = head.status;
    *res.version_mut() = head.version;
    *res.headers_mut() = head.headers.clone();
    mark(
        &mut res,
        CacheOutcome::Coalesced,
        STATUS_COLLAPSED,
        ctx.model.clone(),
    );
    res
}

/// An answer from an entry, in the shape the request asked for. `None` when the entry cannot
/// give that shape without losing something the request asked for (the request then goes
/// upstream, and its answer replaces the entry):
///
/// - a stream with a usage chunk (`stream_options.include_usage`) from an entry without usage;
/// - one JSON (which always carries `usage`) from a stream recorded without a usage chunk;
/// - a shape the answer has no form for (multi-part assistant content as a stream, embeddings
///   as a stream).
///
/// The content type is the route's own (`application/json`, `text/event-stream`): the stored
/// one is kept only when it names the same media type (e.g. with a `charset`).
pub(crate) fn from_entry(
    entry: &Entry,
    ctx: &Ctx,
    outcome: CacheOutcome,
    status: HeaderValue,
) -> Option<Response<ResponseBody>> {
    let include_usage = ctx.shape.include_usage;
    let (body, content_type) = match (entry.body(), ctx.shape.stream) {
        (EntryBody::Json(body), false) => (
            ResponseBody::full(body.clone()),
            route_type(entry.content_type(), JSON),
        ),
        (EntryBody::Json(body), true) => (
            ResponseBody::chunks(json_to_sse(ctx.endpoint, body, include_usage)?),
            EVENT_STREAM,
        ),
        (EntryBody::Stream { chunks, has_usage }, true) => {
            let chunks = match (*has_usage, include_usage) {
                (false, true) => return None,
                (true, false) => strip_usage(chunks),
                _ => chunks.clone(),
            };
            (
                ResponseBody::chunks(chunks),
                route_type(entry.content_type(), EVENT_STREAM),
            )
        }
        (EntryBody::Stream { chunks, has_usage }, false) => {
            if !has_usage {
                return None;
            }
            (ResponseBody::full(sse_to_json(ctx.endpoint, chunks)?), JSON)
        }
    };
    let mut res = Response::new(body);
    res.headers_mut().insert(CONTENT_TYPE, content_type);
    if outcome == CacheOutcome::Hit
        && let Some(age) = entry.age()
    {
        res.headers_mut().insert(AGE, HeaderValue::from(age));
    }
    mark(&mut res, outcome, status, ctx.model.clone());
    Some(res)
}

/// `stored` when its media type is `expected`'s, else `expected`.
fn route_type(stored: &HeaderValue, expected: HeaderValue) -> HeaderValue {
    let media = stored
        .as_bytes()
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if media.eq_ignore_ascii_case(expected.as_bytes()) {
        stored.clone()
    } else {
        expected
    }
}

fn mark<B>(
    res: &mut Response<B>,
    outcome: CacheOutcome,
    status: HeaderValue,
    model: Option<RequestModel>,
) {
    let x_cache = match outcome {
        // A follower made no upstream call of its own; Cache-Status tells the detail.
        CacheOutcome::Hit | CacheOutcome::Coalesced => HIT,
        CacheOutcome::Miss => MISS,
        CacheOutcome::Bypass => BYPASS,
    };
    let headers = res.headers_mut();
    headers.insert(CACHE_STATUS, status);
    headers.insert(X_CACHE, x_cache);
    let extensions = res.extensions_mut();
    extensions.insert(outcome);
    if let Some(model) = model {
        extensions.insert(model);
    }
}
