//! Who may call the gateway.
//!
//! With client keys, a caller sends `Authorization: Bearer <key>` (what OpenAI SDKs send) and
//! becomes the tenant of that key: its cache entries live in their own namespace, named by a hash
//! of the key so the key itself is never stored or logged. Without keys, only loopback callers
//! are served, as one tenant.
//!
//! Tenants of the tenants files (`crate::tenants`) are keys too, named by their tenant; their
//! list of models travels with the request as an [`AllowedModels`] extension. The rule is
//! swapped whole when the files are reloaded.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::task::{Context, Poll, ready};

use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use holysheep_core::signal::Namespace;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use pin_project_lite::pin_project;
use sha2::{Digest, Sha256};
use tower::{Layer, Service};

use crate::config::Secret;
use crate::errors::ApiError;
use crate::tenants::{AllowedModels, Tenants};

/// The access rule, built from the configuration (and rebuilt when the tenants are reloaded).
#[derive(Clone)]
pub(crate) struct Auth {
    inner: Arc<RwLock<Arc<Rule>>>,
}

pub(crate) enum Rule {
    /// Callers must present one of these keys, stored only as SHA-256 digests.
    Keys(Vec<Tenant>, HashMap<Namespace, Extras>),
    /// No keys configured: loopback peers only.
    LoopbackOnly,
}

pub(crate) struct Tenant {
    digest: [u8; 32],
    namespace: Namespace,
}

/// What a tenant of the tenants files adds to its requests.
#[derive(Default)]
pub(crate) struct Extras {
    models: Option<AllowedModels>,
    cache_control: Option<HeaderValue>,
}

impl Auth {
    /// The rule for these client keys; none means loopback only.
    #[cfg(test)]
    pub(crate) fn new(keys: &[Secret]) -> Self {
        Self::with_tenants(keys, &Tenants::default())
    }

    /// The rule for these client keys and the tenants' keys; none at all means loopback only.
    pub(crate) fn with_tenants(keys: &[Secret], tenants: &Tenants) -> Self {
        Self {
            inner: Arc::new(RwLock::new(Arc::new(Self::rule(keys, tenants)))),
        }
    }

    /// Swaps in the rule for new tenants: the next request is checked against it.
    pub(crate) fn replace(&self, keys: &[Secret], tenants: &Tenants) {
        let rule = Arc::new(Self::rule(keys, tenants));
        *self.inner.write().unwrap_or_else(PoisonError::into_inner) = rule;
    }

    /// A reference that does not keep the rule alive (for the reload task).
    pub(crate) fn downgrade(&self) -> Weak<RwLock<Arc<Rule>>> {
        Arc::downgrade(&self.inner)
    }

    /// The check again, while the gateway that made it still runs.
    pub(crate) fn upgrade(weak: &Weak<RwLock<Arc<Rule>>>) -> Option<Self> {
        weak.upgrade().map(|inner| Self { inner })
    }

    fn rule(keys: &[Secret], tenants: &Tenants) -> Rule {
        let mut entries: Vec<Tenant> = keys
            .iter()
            .map(|key| {
                let digest: [u8; 32] = Sha256::digest(key.expose().as_bytes()).into();
                Tenant {
                    digest,
                    namespace: namespace_of(&digest),
                }
            })
            .collect();
        let mut models = HashMap::new();
        for tenant in &tenants.tenants {
            for digest in &tenant.digests {
                entries.push(Tenant {
                    digest: *digest,
                    namespace: tenant.namespace.clone(),
                });
            }
            if tenant.models.is_some() || tenant.cache_control.is_some() {
                models.insert(
                    tenant.namespace.clone(),
                    Extras {
                        models: tenant.models.clone(),
                        cache_control: tenant.cache_control.clone(),
                    },
                );
            }
        }
        if entries.is_empty() {
            Rule::LoopbackOnly
        } else {
            Rule::Keys(entries, models)
        }
    }

    fn current(&self) -> Arc<Rule> {
        Arc::clone(&self.inner.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Decides on one request: `Ok(Some(ns))` for a keyed tenant, `Ok(None)` for the single
    /// loopback tenant, `Err` with the answer to send otherwise.
    fn check(
        &self,
        headers: &HeaderMap,
        peer: Option<SocketAddr>,
    ) -> Result<Option<Namespace>, ApiError> {
        match &*self.current() {
            Rule::LoopbackOnly => match peer {
                // `to_canonical` so an IPv4-mapped `::ffff:127.0.0.1` counts as loopback too.
                Some(peer) if peer.ip().to_canonical().is_loopback() => Ok(None),
                _ => Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "This gateway has no client keys configured and serves loopback callers \
                     only. Set HOLYSHEEP_GATEWAY_KEYS to serve other hosts.",
                    "permission_error",
                )
                .code("loopback_only")),
            },
            Rule::Keys(tenants, _) => {
                let Some(presented) = bearer_token(headers) else {
                    return Err(unauthorized(
                        "You didn't provide an API key. You need to provide your API key in an \
                         Authorization header using Bearer auth (i.e. Authorization: Bearer \
                         YOUR_KEY).",
                    ));
                };
                let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
                // Compare with every key and without early exit: the time taken does not tell
                // which key, or how much of one, matched. Digests have a fixed length, so the
                // length of a key is not revealed either.
                let mut found: Option<&Namespace> = None;
                for tenant in tenants {
                    if constant_time_eq(&digest, &tenant.digest) {
                        found = Some(&tenant.namespace);
                    }
                }
                found
                    .cloned()
                    .map(Some)
                    .ok_or_else(|| unauthorized("Incorrect API key provided."))
            }
        }
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, message, "invalid_request_error")
        .code("invalid_api_key")
}

/// The tenant's namespace: the first 16 hex digits of the key's SHA-256, never the key.
fn namespace_of(digest: &[u8; 32]) -> Namespace {
    Namespace(Arc::from(hex::encode(&digest[..8])))
}

/// The token of `Authorization: Bearer <token>`; the scheme is case-insensitive.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

/// Layer: admits or rejects the caller, records its tenant, and removes its credentials so they
/// can never travel further (the upstream gets the gateway's own key from the client). The
/// tenant goes on the response too, for the request's log line (its name, never its key).
#[derive(Clone)]
pub(crate) struct RequireCallerLayer {
    auth: Auth,
}

impl RequireCallerLayer {
    pub(crate) fn new(auth: Auth) -> Self {
        Self { auth }
    }
}

impl<S> Layer<S> for RequireCallerLayer {
    type Service = RequireCaller<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireCaller {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// The service of [`RequireCallerLayer`].
#[derive(Clone)]
pub(crate) struct RequireCaller<S> {
    inner: S,
    auth: Auth,
}

impl<S> Service<Request> for RequireCaller<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = CallerFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        match admit(&self.auth, &mut request) {
            Ok(namespace) => CallerFuture::Admitted {
                inner: self.inner.call(request),
                namespace,
            },
            Err(error) => CallerFuture::Refused {
                answer: Some(error.into_response()),
            },
        }
    }
}

pin_project! {
    /// The response future of [`RequireCaller`].
    #[project = CallerProj]
    pub(crate) enum CallerFuture<F> {
        Admitted { #[pin] inner: F, namespace: Option<Namespace> },
        Refused { answer: Option<Response> },
    }
}

impl<F, E> Future for CallerFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CallerProj::Admitted { inner, namespace } => {
                let mut response = ready!(inner.poll(cx))?;
                if let Some(namespace) = namespace.take() {
                    response.extensions_mut().insert(namespace);
                }
                Poll::Ready(Ok(response))
            }
            CallerProj::Refused { answer } => Poll::Ready(Ok(answer
                .take()
                .expect("CallerFuture polled after it completed"))),
        }
    }
}

/// The caller's tenant (`None` for the single loopback tenant), with its credentials removed
/// from the request and its tenant's extras added; or the answer refusing it.
fn admit(auth: &Auth, request: &mut Request) -> Result<Option<Namespace>, ApiError> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    let namespace = auth.check(request.headers(), peer)?;
    let headers = request.headers_mut();
    headers.remove(header::AUTHORIZATION);
    headers.remove("x-api-key");
    headers.remove("api-key");
    if let Some(namespace) = &namespace {
        if let Rule::Keys(_, extras) = &*auth.current()
            && let Some(extras) = extras.get(namespace)
        {
            if let Some(allowed) = &extras.models {
                request.extensions_mut().insert(allowed.clone());
            }
            // Beside the caller's own directives: the cache takes the strictest.
            if let Some(value) = &extras.cache_control {
                request
                    .headers_mut()
                    .append(header::CACHE_CONTROL, value.clone());
            }
        }
        request.extensions_mut().insert(namespace.clone());
    }
    Ok(namespace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn peer(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 50000))
    }

    #[test]
    fn keys_select_their_own_tenant() {
        let auth = Auth::new(&[Secret::new("alpha"), Secret::new("beta")]);
        let a = auth
            .check(&headers(Some("Bearer alpha")), peer("10.0.0.1"))
            .unwrap();
        let b = auth
            .check(&headers(Some("bearer  beta ")), peer("10.0.0.1"))
            .unwrap();
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 16);
        assert!(!a.as_str().contains("alpha"));
        assert_eq!(a.as_str(), &hex::encode(Sha256::digest(b"alpha"))[..16]);
    }

    #[test]
    fn missing_or_wrong_keys_get_401() {
        let auth = Auth::new(&[Secret::new("alpha")]);
        for h in [
            headers(None),
            headers(Some("Bearer alph")),
            headers(Some("Bearer alphaa")),
            headers(Some("Basic alpha")),
            headers(Some("Bearer ")),
        ] {
            let res = auth.check(&h, peer("127.0.0.1")).unwrap_err();
            assert_eq!(res.status, StatusCode::UNAUTHORIZED);
        }
    }

    #[test]
    fn without_keys_only_loopback_is_served() {
        let auth = Auth::new(&[]);
        assert_eq!(auth.check(&headers(None), peer("127.0.0.1")).unwrap(), None);
        assert_eq!(auth.check(&headers(None), peer("::1")).unwrap(), None);
        assert_eq!(
            auth.check(&headers(None), peer("::ffff:127.0.0.1"))
                .unwrap(),
            None
        );
        let res = auth.check(&headers(None), peer("192.168.1.9")).unwrap_err();
        assert_eq!(res.status, StatusCode::FORBIDDEN);
        assert!(auth.check(&headers(None), None).is_err());
    }
}
