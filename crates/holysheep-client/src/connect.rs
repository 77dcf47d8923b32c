//! The connector stack: DNS, TCP, TLS, under one connect timeout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use holysheep_core::BoxError;
use http::Uri;
use hyper_rustls::{ConfigBuilderExt, HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower::Service;

use crate::Error;
use crate::dns::DnsResolver;

/// The connector the pooled client uses.
pub(crate) type Connector = ConnectTimeout<HttpsConnector<HttpConnector<DnsResolver>>>;

pub(crate) struct ConnectorConfig {
    pub(crate) resolver: DnsResolver,
    pub(crate) connect_timeout: Duration,
    pub(crate) tcp_keepalive: Option<Duration>,
    pub(crate) tcp_nodelay: bool,
    pub(crate) http2_only: bool,
}

pub(crate) fn connector(config: ConnectorConfig) -> Result<Connector, Error> {
    let mut http = HttpConnector::new_with_resolver(config.resolver);
    // https URIs reach the TLS layer through this connector.
    http.enforce_http(false);
    http.set_nodelay(config.tcp_nodelay);
    http.set_keepalive(config.tcp_keepalive);
    // Per address attempt; `ConnectTimeout` bounds the whole connect including DNS and TLS.
    http.set_connect_timeout(Some(config.connect_timeout));

    // An explicit provider, so nothing depends on (or races to install) a process default.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config_with("TLS setup failed", e))?
        .with_webpki_roots()
        .with_no_client_auth();
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let https = if config.http2_only {
        https.enable_http2().wrap_connector(http)
    } else {
        https.enable_http1().enable_http2().wrap_connector(http)
    };
    Ok(ConnectTimeout {
        inner: https,
        timeout: config.connect_timeout,
    })
}

/// Bounds a whole connect (DNS, TCP, TLS handshake) by one timeout. A timeout fails with an
/// [`io::Error`] of kind `TimedOut`, which hyper-util keeps as the source of its connect error.
#[derive(Debug, Clone)]
pub(crate) struct ConnectTimeout<C> {
    inner: C,
    timeout: Duration,
}

impl<C> Service<Uri> for ConnectTimeout<C>
where
    C: Service<Uri, Response = MaybeHttpsStream<TokioIo<TcpStream>>, Error = BoxError>,
    C::Future: Send + 'static,
{
    type Response = C::Response;
    type Error = BoxError;
    // Boxed: hyper-util needs an `Unpin` connect future and the TLS connector's is boxed anyway.
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(result) => result,
                Err(_elapsed) => {
                    tracing::debug!(?timeout, "connect timed out");
                    Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out").into())
                }
            }
        })
    }
}
