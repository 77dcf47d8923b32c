//! Tenants with limits: the tenants files, their keys, the quota layer built from them, the
//! usage route, and reloading on SIGHUP.
//!
//! A tenants file is TOML with one `[[tenant]]` table per tenant:
//!
//! ```toml
//! [[tenant]]
//! name = "acme"                       # the tenant's name: cache namespace, metric label, logs
//! keys = ["<sha256 hex of a key>"]    # client keys, as SHA-256 digests (never the key)
//! key_env = "ACME_GATEWAY_KEY"        # and/or one plain key from this environment variable
//! requests_per_minute = 600
//! tokens_per_minute = 200000
//! dollars_per_day = 50.0
//! dollars_per_month = 1000.0
//! max_concurrent = 20
//! models = ["gpt-4.1", "deepseek-v3.2"]  # allowed models; absent or empty: all
//! cache_ttl_secs = 600                # its cached answers live (and are served) at most this long
//! semantic = true                     # the semantic cache on (or off) for this tenant
//! ```
//!
//! The keys of `HOLYSHEEP_GATEWAY_KEYS` keep working beside these, as tenants without limits.
//! On SIGHUP the files are read again: the new keys and limits apply to the next request,
//! requests in flight finish under the old ones, and the counters carry over. A file that does
//! not read or parse, or names a missing key variable, is refused whole and logged; the old
//! tenants stay. (`semantic` is read at start only: the semantic cache is built once.)

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use holysheep::Stack;
use holysheep::quota::{Limits, QuotaHandle, QuotaLayer, QuotaPolicy, RedisQuota};
use holysheep_core::price::PriceTable;
use holysheep_core::signal::Namespace;
use http::{HeaderValue, StatusCode, header};
use http_body_util::Full;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tower::{Layer, ServiceExt, service_fn};

use crate::auth::Auth;
use crate::config::{Config, Secret};
use crate::errors::ApiError;

/// One `[[tenant]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    #[serde(default)]
    keys: Vec<String>,
    key_env: Option<String>,
    requests_per_minute: Option<u64>,
    tokens_per_minute: Option<u64>,
    dollars_per_day: Option<f64>,
    dollars_per_month: Option<f64>,
    max_concurrent: Option<u32>,
    #[serde(default)]
    models: Vec<String>,
    cache_ttl_secs: Option<u64>,
    semantic: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tenant: Vec<Entry>,
}

/// A tenant, ready for use.
#[derive(Debug, Clone)]
pub(crate) struct Tenant {
    pub(crate) namespace: Namespace,
    pub(crate) digests: Vec<[u8; 32]>,
    pub(crate) limits: Limits,
    /// The models it may call; `None`: all.
    pub(crate) models: Option<AllowedModels>,
    /// The `Cache-Control` its requests carry to the cache: `max-age` of its cache TTL
    /// (`no-store` for 0), so its entries live at most that long and no older one answers it.
    pub(crate) cache_control: Option<HeaderValue>,
    pub(crate) semantic: Option<bool>,
}

/// The models a tenant may call: a request extension the caller check sets, which the routes
/// read once they know the request's model.
#[derive(Debug, Clone)]
pub(crate) struct AllowedModels(pub(crate) Arc<HashSet<String>>);

impl AllowedModels {
    /// `Err` with the caller's answer when `model` is not allowed.
    pub(crate) fn check(&self, model: &str) -> Result<(), ApiError> {
        if self.0.contains(model) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("The model `{model}` does not exist or you do not have access to it."),
                "invalid_request_error",
            )
            .param("model")
            .code("model_not_found"))
        }
    }
}

/// Every tenant of the tenants files.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tenants {
    pub(crate) tenants: Vec<Tenant>,
}

impl Tenants {
    /// Reads and checks every file; the first problem is the error, naming its file.
    pub(crate) fn load_all(paths: &[PathBuf]) -> Result<Self, String> {
        let mut tenants = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read tenants file {}: {e}", path.display()))?;
            tenants.extend(Self::parse(&text, path)?.tenants);
        }
        let mut names = HashSet::new();
        let mut digests = HashSet::new();
        for t in &tenants {
            if !names.insert(t.namespace.as_str().to_owned()) {
                return Err(format!("tenant {} is defined twice", t.namespace.as_str()));
            }
            for d in &t.digests {
                if !digests.insert(*d) {
                    return Err(format!(
                        "a key of tenant {} belongs to another tenant too",
                        t.namespace.as_str()
                    ));
                }
            }
        }
        Ok(Self { tenants })
    }

    fn parse(text: &str, path: &Path) -> Result<Self, String> {
        let origin = path.display();
        let file: File = toml::from_str(text).map_err(|e| format!("{origin}: {}", e.message()))?;
        let mut tenants = Vec::new();
        for entry in file.tenant {
            let name = entry.name.trim();
            if name.is_empty() || name.len() > 64 || name.chars().any(|c| c.is_control()) {
                return Err(format!(
                    "{origin}: a tenant name must have 1 to 64 printable characters"
                ));
            }
            let mut digests = Vec::new();
            for key in &entry.keys {
                let mut digest = [0u8; 32];
                hex::decode_to_slice(key.trim(), &mut digest).map_err(|_| {
                    format!("{origin}: tenant {name}: keys are SHA-256 digests, 64 hex digits")
                })?;
                digests.push(digest);
            }
            if let Some(var) = &entry.key_env {
                let key = std::env::var(var)
                    .ok()
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| {
                        format!("{origin}: tenant {name}: environment variable {var} is not set")
                    })?;
                digests.push(Sha256::digest(key.as_bytes()).into());
            }
            if digests.is_empty() {
                return Err(format!(
                    "{origin}: tenant {name} has no key (keys or key_env)"
                ));
            }
            let mut limits = Limits::new();
            if let Some(n) = entry.requests_per_minute {
                limits = limits.requests_per_minute(n);
            }
            if let Some(n) = entry.tokens_per_minute {
                limits = limits.tokens_per_minute(n);
            }
            for (what, usd) in [
                ("dollars_per_day", entry.dollars_per_day),
                ("dollars_per_month", entry.dollars_per_month),
            ] {
                if usd.is_some_and(|d| !d.is_finite() || d < 0.0) {
                    return Err(format!("{origin}: tenant {name}: {what} must be 0 or more"));
                }
            }
            if let Some(d) = entry.dollars_per_day {
                limits = limits.dollars_per_day(d);
            }
            if let Some(d) = entry.dollars_per_month {
                limits = limits.dollars_per_month(d);
            }
            if let Some(n) = entry.max_concurrent {
                limits = limits.max_concurrent(n);
            }
            let models = (!entry.models.is_empty())
                .then(|| AllowedModels(Arc::new(entry.models.into_iter().collect())));
            let cache_control = entry.cache_ttl_secs.map(|ttl| match ttl {
                0 => HeaderValue::from_static("no-store"),
                ttl => HeaderValue::try_from(format!("max-age={ttl}"))
                    .unwrap_or(HeaderValue::from_static("no-store")),
            });
            tenants.push(Tenant {
                namespace: Namespace(Arc::from(name)),
                digests,
                limits,
                models,
                cache_control,
                semantic: entry.semantic,
            });
        }
        Ok(Self { tenants })
    }

    /// Whether any tenant has a key (then the gateway may serve other hosts than loopback).
    pub(crate) fn has_keys(&self) -> bool {
        self.tenants.iter().any(|t| !t.digests.is_empty())
    }

    /// The quota policy: every tenant with its limits; everyone else unlimited.
    pub(crate) fn policy(&self) -> QuotaPolicy {
        self.tenants.iter().fold(QuotaPolicy::new(), |policy, t| {
            policy.tenant(Arc::clone(&t.namespace.0), t.limits)
        })
    }
}

/// The quota layer of the stack: the tenants' limits, counted in the cache's Redis when there
/// is one (the same node or Cluster), else in this process.
pub(crate) fn quota_layer(
    config: &Config,
    tenants: &Tenants,
    prices: PriceTable,
) -> Result<QuotaLayer, String> {
    let q = &config.settings.quota;
    let urls = config.redis_urls();
    let redis = match urls.as_slice() {
        [] => None,
        [url] => Some(RedisQuota::connect(url)),
        urls => {
            let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
            Some(RedisQuota::cluster(&urls))
        }
    };
    let mut layer = match redis {
        None => QuotaLayer::new(tenants.policy()),
        Some(redis) => {
            let mut redis = redis.map_err(|e| format!("redis: {e}"))?;
            if let Some(percent) = q.fallback_percent {
                redis = redis.fallback_share(percent as f64 / 100.0);
            }
            if let Some(ms) = q.fleet_timeout_ms {
                redis = redis.timeout(Duration::from_millis(ms));
            }
            QuotaLayer::with_redis(tenants.policy(), redis)
        }
    };
    layer = layer.prices(prices);
    if let Some(tokens) = q.completion_reserve {
        layer = layer.completion_reserve(tokens);
    }
    Ok(layer)
}

/// The caller check for `config`'s keys and tenants; rereads the tenants files on SIGHUP for
/// as long as the returned check lives.
pub(crate) fn auth(config: &Config, stack: &Stack) -> Auth {
    let files = config
        .settings
        .quota
        .tenant_files
        .clone()
        .unwrap_or_default();
    // `validate` read them already; a file changed since is refused the same way.
    let tenants = Tenants::load_all(&files).unwrap_or_else(|error| {
        tracing::error!(%error, "tenants not loaded");
        Tenants::default()
    });
    let auth = Auth::with_tenants(&config.gateway_keys, &tenants);
    if !files.is_empty() {
        watch_sighup(Reload {
            files,
            keys: config.gateway_keys.clone(),
            auth: auth.downgrade(),
            quota: stack.quota().handle(),
        });
    }
    auth
}

/// What a reload needs.
struct Reload {
    files: Vec<PathBuf>,
    keys: Vec<Secret>,
    auth: Weak<std::sync::RwLock<Arc<crate::auth::Rule>>>,
    quota: QuotaHandle,
}

impl Reload {
    /// Reads the files again and swaps keys and limits; `false` when the gateway is gone.
    fn run(&self) -> bool {
        let Some(auth) = Auth::upgrade(&self.auth) else {
            return false;
        };
        match Tenants::load_all(&self.files) {
            Ok(tenants) => {
                auth.replace(&self.keys, &tenants);
                self.quota.set_policy(tenants.policy());
                tracing::info!(tenants = tenants.tenants.len(), "tenants reloaded");
            }
            Err(error) => {
                tracing::error!(%error, "tenants file refused; the previous tenants stay");
            }
        }
        true
    }
}

#[cfg(unix)]
fn watch_sighup(reload: Reload) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(error) => {
            tracing::warn!(%error, "cannot watch SIGHUP; tenants will not reload");
            return;
        }
    };
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            if !reload.run() {
                break;
            }
        }
    });
}

#[cfg(not(unix))]
fn watch_sighup(_reload: Reload) {}

/// `GET /v1/holysheep/usage`: the calling tenant's limits and what is left of them, behind the
/// same quota layer as the other routes (so it is limited too, and answers with the rate-limit
/// headers).
pub(crate) fn usage_service(
    stack: &Stack,
) -> impl tower::Service<Request, Response = Response, Error = Infallible, Future = impl Send + 'static>
+ Clone
+ Send
+ 'static {
    let handle = stack.quota().handle();
    let inner = service_fn(move |request: http::Request<Full<Bytes>>| {
        let handle = handle.clone();
        async move {
            let namespace = request.extensions().get::<Namespace>().cloned();
            let usage = handle.usage(namespace.as_ref()).await;
            let tenant = namespace
                .as_ref()
                .map_or(QuotaPolicy::ANONYMOUS, Namespace::as_str);
            let mut body = serde_json::to_value(&usage).unwrap_or_default();
            if let Some(object) = body.as_object_mut() {
                object.insert("tenant".into(), tenant.into());
            }
            let mut response = http::Response::new(Full::new(Bytes::from(body.to_string())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok::<_, Infallible>(response)
        }
    });
    let limited = stack.quota().layer(inner);
    service_fn(move |request: Request| {
        let limited = limited.clone();
        async move {
            Ok::<_, Infallible>(match limited.oneshot(request).await {
                Ok(response) => response.map(Body::new),
                Err(error) => crate::errors::stack_error(&*error).into_response(),
            })
        }
    })
}

/// The semantic cache's per-tenant switches from the tenants files.
pub(crate) fn semantic_switches(tenants: &Tenants) -> HashMap<Arc<str>, bool> {
    tenants
        .tenants
        .iter()
        .filter_map(|t| t.semantic.map(|on| (Arc::clone(&t.namespace.0), on)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_parses_with_its_documented_keys() {
        let path = PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/gateway.tenants.example.toml"
        ));
        let tenants = Tenants::load_all(&[path]).unwrap();
        let acme = &tenants.tenants[0];
        assert_eq!(acme.namespace.as_str(), "acme");
        let digest: [u8; 32] = Sha256::digest(b"sk-acme-1").into();
        assert_eq!(acme.digests, vec![digest]);
        assert_eq!(acme.limits.requests_per_minute_limit(), Some(600));
        assert!(acme.models.as_ref().unwrap().check("gpt-4.1").is_ok());
        assert!(acme.models.as_ref().unwrap().check("gpt-5").is_err());
        let hobby = &tenants.tenants[1];
        let digest: [u8; 32] = Sha256::digest(b"sk-hobby-1").into();
        assert_eq!(hobby.digests, vec![digest]);
        assert!(hobby.models.is_none());
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        let digest = "ab".repeat(32);
        for (text, reason) in [
            ("[[tenant]]\nname = \"a\"\n", "has no key"),
            (
                "[[tenant]]\nname = \"a\"\nkeys = [\"xyz\"]\n",
                "64 hex digits",
            ),
            (
                "[[tenant]]\nname = \"a\"\nkey_env = \"HOLYSHEEP_TEST_NO_SUCH_VAR\"\n",
                "is not set",
            ),
            ("[[tenant]]\nname = \"a\"\nkeyz = []\n", "unknown field"),
            (
                &format!(
                    "[[tenant]]\nname = \"a\"\nkeys = [\"{digest}\"]\ndollars_per_day = -1.0\n"
                ),
                "0 or more",
            ),
            (
                &format!(
                    "[[tenant]]\nname = \"a\"\nkeys = [\"{digest}\"]\n[[tenant]]\nname = \"a\"\nkeys = [\"{}\"]\n",
                    "cd".repeat(32)
                ),
                "defined twice",
            ),
            (
                &format!(
                    "[[tenant]]\nname = \"a\"\nkeys = [\"{digest}\"]\n[[tenant]]\nname = \"b\"\nkeys = [\"{digest}\"]\n"
                ),
                "another tenant",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let error = Tenants::load_all(std::slice::from_ref(&path)).unwrap_err();
            assert!(error.contains(reason), "{error} should say {reason}");
        }
    }
}
