//! The DNS resolver of hyper-util's `HttpConnector`: a caching one backed by hickory-resolver
//! (cargo feature `dns-cache`, on by default), else the system's `getaddrinfo`.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

#[cfg(feature = "dns-cache")]
use hickory_resolver::TokioResolver;
#[cfg(feature = "dns-cache")]
use hickory_resolver::config::ResolverOpts;
use holysheep_core::BoxError;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use tower::Service;

#[cfg(feature = "dns-cache")]
/// Negative answers (NXDOMAIN, no records) are kept at most this long, so a name that
/// appears shortly after a failed lookup is not hidden for the whole positive TTL.
const NEGATIVE_MAX_TTL: Duration = Duration::from_secs(30);

/// Resolves host names for the connector.
///
/// With the `dns-cache` feature, hickory's resolver, configured from the system (`/etc/resolv.conf` and the hosts
/// file), whose cache keeps positive answers for at most `dns_ttl` (shorter record TTLs are
/// honoured). If the system configuration cannot be read, hyper-util's `GaiResolver`
/// (`getaddrinfo` on a blocking thread, no cache of ours) takes over. Without the feature,
/// always `getaddrinfo`.
///
/// IP literals never get here: `HttpConnector` connects to them directly.
#[derive(Clone)]
pub(crate) struct DnsResolver {
    backend: Backend,
    lookups: Arc<AtomicU64>,
}

#[derive(Clone)]
enum Backend {
    #[cfg(feature = "dns-cache")]
    Hickory(Arc<TokioResolver>),
    System(GaiResolver),
}

impl DnsResolver {
    /// The system configuration with a cache capped at `ttl`, or `getaddrinfo` if the
    /// system configuration is unreadable.
    #[cfg(feature = "dns-cache")]
    pub(crate) fn system(ttl: Duration) -> Self {
        let backend = match TokioResolver::builder_tokio() {
            Ok(mut builder) => {
                cap_ttls(builder.options_mut(), ttl);
                match builder.build() {
                    Ok(resolver) => Backend::Hickory(Arc::new(resolver)),
                    Err(error) => {
                        tracing::debug!(%error, "hickory resolver unavailable, using getaddrinfo");
                        Backend::System(GaiResolver::new())
                    }
                }
            }
            Err(error) => {
                tracing::debug!(%error, "system DNS configuration unreadable, using getaddrinfo");
                Backend::System(GaiResolver::new())
            }
        };
        Self::from_backend(backend)
    }

    /// The system's `getaddrinfo`; without the `dns-cache` feature there is no cache to cap.
    #[cfg(not(feature = "dns-cache"))]
    pub(crate) fn system(_ttl: Duration) -> Self {
        Self::from_backend(Backend::System(GaiResolver::new()))
    }

    /// A hickory resolver with an explicit configuration (tests use one without name
    /// servers, so nothing leaves the machine).
    #[cfg(all(test, feature = "dns-cache"))]
    pub(crate) fn with_config(
        config: hickory_resolver::config::ResolverConfig,
        ttl: Duration,
    ) -> Result<Self, BoxError> {
        let mut options = ResolverOpts::default();
        cap_ttls(&mut options, ttl);
        let provider = hickory_resolver::net::runtime::TokioRuntimeProvider::default();
        let resolver = TokioResolver::builder_with_config(config, provider)
            .with_options(options)
            .build()?;
        Ok(Self::from_backend(Backend::Hickory(Arc::new(resolver))))
    }

    fn from_backend(backend: Backend) -> Self {
        Self {
            backend,
            lookups: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many names this resolver (and its clones) was asked to resolve.
    #[cfg(test)]
    pub(crate) fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }
}

#[cfg(feature = "dns-cache")]
fn cap_ttls(options: &mut ResolverOpts, ttl: Duration) {
    options.positive_max_ttl = Some(ttl);
    options.negative_max_ttl = Some(ttl.min(NEGATIVE_MAX_TTL));
}

impl fmt::Debug for DnsResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backend = match self.backend {
            #[cfg(feature = "dns-cache")]
            Backend::Hickory(_) => "hickory",
            Backend::System(_) => "getaddrinfo",
        };
        f.debug_struct("DnsResolver")
            .field("backend", &backend)
            .finish()
    }
}

/// The addresses for one name, ports left at 0 (the connector fills in the URI's port).
#[derive(Debug)]
pub(crate) struct Addrs(std::vec::IntoIter<SocketAddr>);

impl Iterator for Addrs {
    type Item = SocketAddr;

    fn next(&mut self) -> Option<SocketAddr> {
        self.0.next()
    }
}

impl Service<Name> for DnsResolver {
    type Response = Addrs;
    type Error = BoxError;
    // Boxed: hickory's lookup is an `async fn` whose future cannot be named.
    type Future = Pin<Box<dyn Future<Output = Result<Addrs, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(host = name.as_str(), "resolving");
        match &self.backend {
            #[cfg(feature = "dns-cache")]
            Backend::Hickory(resolver) => {
                let resolver = Arc::clone(resolver);
                Box::pin(async move {
                    let lookup = resolver.lookup_ip(name.as_str()).await?;
                    let addrs: Vec<SocketAddr> =
                        lookup.iter().map(|ip| SocketAddr::new(ip, 0)).collect();
                    Ok(Addrs(addrs.into_iter()))
                })
            }
            Backend::System(resolver) => {
                let lookup = resolver.clone().call(name);
                Box::pin(async move {
                    let addrs: Vec<SocketAddr> = lookup.await?.collect();
                    Ok(Addrs(addrs.into_iter()))
                })
            }
        }
    }
}

#[cfg(all(test, feature = "dns-cache"))]
mod tests {
    use std::str::FromStr;

    use hickory_resolver::config::ResolverConfig;
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn localhost_resolves_without_name_servers() {
        let resolver = DnsResolver::with_config(
            ResolverConfig::from_name_servers(Vec::new()),
            Duration::from_secs(300),
        )
        .expect("resolver builds");
        let name = Name::from_str("localhost").expect("valid name");
        let addrs: Vec<SocketAddr> = resolver
            .clone()
            .oneshot(name)
            .await
            .expect("resolves")
            .collect();
        assert!(!addrs.is_empty());
        assert!(
            addrs.iter().all(|addr| addr.ip().is_loopback()),
            "{addrs:?}"
        );
        assert_eq!(resolver.lookups(), 1);
    }

    /// A resolver that answers `localhost` itself and has no name server to ask.
    fn offline_resolver() -> DnsResolver {
        DnsResolver::with_config(
            ResolverConfig::from_name_servers(Vec::new()),
            Duration::from_secs(300),
        )
        .expect("resolver builds")
    }

    async fn get_models(client: crate::HolySheepClient) -> http::StatusCode {
        let request = http::Request::get("/models")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("valid request");
        client.oneshot(request).await.expect("answered").status()
    }

    #[tokio::test]
    async fn host_names_go_through_the_resolver_and_ip_literals_do_not() {
        let mock = holysheep_mock::MockServer::start(holysheep_mock::MockConfig::default())
            .await
            .expect("mock starts");
        let port = mock.addr().port();

        let resolver = offline_resolver();
        let client = crate::HolySheepClient::builder()
            .base_url(format!("http://127.0.0.1:{port}/v1"))
            .resolver(resolver.clone())
            .build()
            .expect("client builds");
        assert_eq!(get_models(client).await, http::StatusCode::OK);
        assert_eq!(resolver.lookups(), 0, "an IP literal was looked up");

        let client = crate::HolySheepClient::builder()
            .base_url(format!("http://localhost:{port}/v1"))
            .resolver(resolver.clone())
            .build()
            .expect("client builds");
        assert_eq!(get_models(client.clone()).await, http::StatusCode::OK);
        assert_eq!(resolver.lookups(), 1);
        // The pooled connection is reused: no second lookup, no second connection.
        assert_eq!(get_models(client).await, http::StatusCode::OK);
        assert_eq!(resolver.lookups(), 1);
        assert_eq!(mock.stats().connections(), 2);
    }

    #[test]
    fn ttls_are_capped() {
        let mut options = ResolverOpts::default();
        cap_ttls(&mut options, Duration::from_secs(300));
        assert_eq!(options.positive_max_ttl, Some(Duration::from_secs(300)));
        assert_eq!(options.negative_max_ttl, Some(NEGATIVE_MAX_TTL));
        cap_ttls(&mut options, Duration::from_secs(5));
        assert_eq!(options.negative_max_ttl, Some(Duration::from_secs(5)));
    }
}
