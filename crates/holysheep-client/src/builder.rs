//! Configuration of [`HolySheepClient`].

use std::env;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::Error;
use crate::base_url::BaseUrl;
use crate::connect::{self, ConnectorConfig};
use crate::dns::DnsResolver;
use crate::service::{HolySheepClient, Inner};

/// HolySheep's OpenAI-compatible API, the default base URL (re-exported from `holysheep-core`).
pub use holysheep_core::DEFAULT_BASE_URL;

/// Environment variable read by [`HolySheepClient::from_env`] for the API key.
pub const API_KEY_ENV: &str = "HOLYSHEEP_API_KEY";

/// Environment variable read by [`HolySheepClient::from_env`] for the base URL.
pub const BASE_URL_ENV: &str = "HOLYSHEEP_BASE_URL";

/// Builds a [`HolySheepClient`]; start from [`HolySheepClient::builder`].
///
/// Every setting has a default taken from the tuning this project started from:
///
/// | setting | default |
/// |---|---|
/// | [`base_url`](Builder::base_url) | `https://api.holysheep.ai/v1` |
/// | [`connect_timeout`](Builder::connect_timeout) | 10 s |
/// | [`timeout`](Builder::timeout) (until response headers) | 60 s |
/// | [`read_timeout`](Builder::read_timeout) (between body frames) | 50 s |
/// | [`pool_idle_timeout`](Builder::pool_idle_timeout) | 120 s |
/// | [`pool_max_idle_per_host`](Builder::pool_max_idle_per_host) | 32 |
/// | [`tcp_keepalive`](Builder::tcp_keepalive) | 60 s |
/// | [`tcp_nodelay`](Builder::tcp_nodelay) | on |
/// | [`dns_ttl`](Builder::dns_ttl) | 300 s |
/// | [`http2_only`](Builder::http2_only) | off (HTTP/1.1 or h2 by ALPN) |
///
/// The connection caps (100 in total, 30 per host) are not here: hyper-util's pool does not
/// cap connections, so `PoolLimitLayer` from the `holysheep-pool-limit` crate enforces them
/// in front of this client.
#[derive(Clone)]
pub struct Builder {
    base_url: String,
    api_key: Option<String>,
    connect_timeout: Duration,
    timeout: Duration,
    read_timeout: Duration,
    pool_idle_timeout: Duration,
    pool_max_idle_per_host: usize,
    tcp_keepalive: Option<Duration>,
    tcp_nodelay: bool,
    dns_ttl: Duration,
    http2_only: bool,
    resolver: Option<DnsResolver>,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// Default of [`connect_timeout`](Self::connect_timeout): 10 s.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// Default of [`timeout`](Self::timeout): 60 s.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
    /// Default of [`read_timeout`](Self::read_timeout): 50 s.
    pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(50);
    /// Default of [`pool_idle_timeout`](Self::pool_idle_timeout): 120 s.
    pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
    /// Default of [`pool_max_idle_per_host`](Self::pool_max_idle_per_host): 32.
    pub const DEFAULT_POOL_MAX_IDLE_PER_HOST: usize = 32;
    /// Default of [`tcp_keepalive`](Self::tcp_keepalive): 60 s.
    pub const DEFAULT_TCP_KEEPALIVE: Duration = Duration::from_secs(60);
    /// Default of [`dns_ttl`](Self::dns_ttl): 300 s.
    pub const DEFAULT_DNS_TTL: Duration = Duration::from_secs(300);

    /// A builder with the defaults above and no API key.
    pub fn new() -> Self {
        Self {
            base_url: DEFAULT_BASE_URL.to_owned(),
            api_key: None,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            timeout: Self::DEFAULT_TIMEOUT,
            read_timeout: Self::DEFAULT_READ_TIMEOUT,
            pool_idle_timeout: Self::DEFAULT_POOL_IDLE_TIMEOUT,
            pool_max_idle_per_host: Self::DEFAULT_POOL_MAX_IDLE_PER_HOST,
            tcp_keepalive: Some(Self::DEFAULT_TCP_KEEPALIVE),
            tcp_nodelay: true,
            dns_ttl: Self::DEFAULT_DNS_TTL,
            http2_only: false,
            resolver: None,
        }
    }

    /// A builder seeded from the environment: the API key from `HOLYSHEEP_API_KEY` and the
    /// base URL from `HOLYSHEEP_BASE_URL`, each only if set and not empty.
    ///
    /// Fails if a variable is set but not valid Unicode.
    pub fn from_env() -> Result<Self, Error> {
        let mut builder = Self::new();
        if let Some(key) = read_env(API_KEY_ENV)? {
            builder = builder.api_key(key);
        }
        if let Some(url) = read_env(BASE_URL_ENV)? {
            builder = builder.base_url(url);
        }
        Ok(builder)
    }

    /// Where requests go. The request's path and query are appended to this URL's path:
    /// with the default `https://api.holysheep.ai/v1`, a request for `/chat/completions` goes
    /// to `https://api.holysheep.ai/v1/chat/completions`. So callers send paths *without* the
    /// base path (the gateway strips its own `/v1` before calling). Slashes are normalised:
    /// `…/v1/` and `/chat/completions` still join with one slash. The request's own scheme
    /// and host, if any, are ignored.
    ///
    /// `https` is the norm; `http` works for any host but is meant for local upstreams such
    /// as the mock or a sidecar on loopback. A URL without scheme or host, with user info or
    /// with a query fails [`build`](Builder::build) with a configuration error.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// The API key sent as `Authorization: Bearer <key>` on every request, replacing any
    /// `Authorization` header the caller set. Surrounding whitespace is trimmed; the key is
    /// marked sensitive and never printed. Without a key no `Authorization` is sent at all.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Bound on establishing a new connection: DNS lookup, TCP connect and TLS handshake
    /// together. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The headers deadline: time from `call` until the upstream's response headers arrive,
    /// covering the wait for a pooled connection, connecting, sending the request and the
    /// upstream's time to answer. Default 60 s.
    ///
    /// It does not cover the response body: a stream may run longer, bounded only by
    /// [`read_timeout`](Builder::read_timeout) between frames. A deadline for the whole body
    /// is the caller's business.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The longest the response body waits for its next frame once the caller asks for it;
    /// restarted by every frame. Default 50 s.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// How long an idle keep-alive connection stays in the pool. Default 120 s.
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// How many idle connections per host the pool keeps for reuse. Default 32.
    ///
    /// This caps idle connections, not open ones; see the type docs for the connection caps.
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = max;
        self
    }

    /// TCP keepalive probe interval for upstream connections, `None` to disable. Default 60 s.
    pub fn tcp_keepalive(mut self, interval: Option<Duration>) -> Self {
        self.tcp_keepalive = interval;
        self
    }

    /// Whether to set `TCP_NODELAY` on upstream connections. Default on: small JSON requests
    /// and SSE chunks should not wait for Nagle's algorithm.
    pub fn tcp_nodelay(mut self, enabled: bool) -> Self {
        self.tcp_nodelay = enabled;
        self
    }

    /// The longest a positive DNS answer is cached (records with a shorter TTL expire
    /// sooner). Default 300 s. Negative answers are cached for at most 30 s (or this, if less).
    ///
    /// With the `dns-cache` feature (on by default), names are resolved by hickory-resolver
    /// using the system configuration (`/etc/resolv.conf` and the hosts file); if that cannot
    /// be read, or without the feature, the system's `getaddrinfo` is used instead, without
    /// this cache. IP literals are never looked up.
    pub fn dns_ttl(mut self, ttl: Duration) -> Self {
        self.dns_ttl = ttl;
        self
    }

    /// Speak only HTTP/2: h2 by ALPN over TLS, prior knowledge over plain `http`. Default off,
    /// which negotiates HTTP/1.1 or h2 by ALPN (plain `http` uses HTTP/1.1).
    pub fn http2_only(mut self, enabled: bool) -> Self {
        self.http2_only = enabled;
        self
    }

    /// Test hook: use this resolver instead of the system one.
    #[cfg(test)]
    pub(crate) fn resolver(mut self, resolver: DnsResolver) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Validates the configuration and builds the client.
    ///
    /// Fails with a configuration error ([`Error::is_config`]) for a bad base URL, an empty
    /// API key or one that is not a valid header value. Needs no async runtime.
    pub fn build(self) -> Result<HolySheepClient, Error> {
        let base_url = BaseUrl::parse(&self.base_url)?;
        let authorization = self.api_key.as_deref().map(bearer).transpose()?;
        let resolver = self
            .resolver
            .unwrap_or_else(|| DnsResolver::system(self.dns_ttl));
        let connector = connect::connector(ConnectorConfig {
            resolver,
            connect_timeout: self.connect_timeout,
            tcp_keepalive: self.tcp_keepalive,
            tcp_nodelay: self.tcp_nodelay,
            http2_only: self.http2_only,
        })?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(self.http2_only)
            .build(connector);
        tracing::debug!(
            base_url = %base_url.uri(),
            api_key = authorization.is_some(),
            "holysheep client built"
        );
        Ok(HolySheepClient::from_inner(Arc::new(Inner {
            client,
            base_url,
            authorization,
            timeout: self.timeout,
            read_timeout: self.read_timeout,
        })))
    }
}

fn bearer(key: &str) -> Result<HeaderValue, Error> {
    let key = key.trim();
    if key.is_empty() {
        return Err(Error::config("API key is empty"));
    }
    // The error from `HeaderValue` carries no input, but say nothing about the key either way.
    let mut value = HeaderValue::try_from(format!("Bearer {key}"))
        .map_err(|_| Error::config("API key contains characters not allowed in an HTTP header"))?;
    value.set_sensitive(true);
    Ok(value)
}

fn read_env(name: &str) -> Result<Option<String>, Error> {
    match env::var(name) {
        Ok(value) if value.trim().is_empty() => Ok(None),
        Ok(value) => Ok(Some(value)),
        Err(env::VarError::NotPresent) => Ok(None),
        Err(env::VarError::NotUnicode(_)) => {
            Err(Error::config(format!("{name} is not valid Unicode")))
        }
    }
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("read_timeout", &self.read_timeout)
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .field("pool_max_idle_per_host", &self.pool_max_idle_per_host)
            .field("tcp_keepalive", &self.tcp_keepalive)
            .field("tcp_nodelay", &self.tcp_nodelay)
            .field("dns_ttl", &self.dns_ttl)
            .field("http2_only", &self.http2_only)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_is_sensitive_and_trimmed() {
        let value = bearer("  sk-test-123\n").expect("valid key");
        assert_eq!(value, "Bearer sk-test-123");
        assert!(value.is_sensitive());
    }

    #[test]
    fn bad_keys_are_config_errors_without_the_key() {
        for key in ["", "   ", "sk-bad\u{7f}secret", "sk\r\nX-Injected: secret"] {
            let error = bearer(key).expect_err("invalid key");
            assert!(error.is_config());
            assert!(!error.to_string().contains("secret"));
            assert!(!format!("{error:?}").contains("secret"));
        }
    }

    #[test]
    fn builder_debug_redacts_the_key() {
        let builder = Builder::new().api_key("sk-very-secret");
        let debug = format!("{builder:?}");
        assert!(!debug.contains("sk-very-secret"), "{debug}");
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn build_rejects_bad_base_urls() {
        let error = Builder::new()
            .base_url("api.holysheep.ai/v1")
            .build()
            .expect_err("no scheme");
        assert!(error.is_config());
    }

    #[test]
    fn build_needs_no_runtime() {
        let client = Builder::new()
            .api_key("sk-x")
            .build()
            .expect("defaults build");
        assert_eq!(client.base_url(), DEFAULT_BASE_URL);
    }
}
