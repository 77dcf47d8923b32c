//! [`HolySheepClient`], the tower `Service` every layer wraps.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use holysheep_core::BoxError;
use holysheep_core::hop_by_hop::remove_hop_by_hop;
use http::header::{self, HeaderValue};
use http::{Request, Response, Uri, Version};
use http_body::Body;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::Client;
use tower::Service;

use crate::base_url::BaseUrl;
use crate::connect::Connector;
use crate::{Builder, Error, ResponseBody, ResponseFuture};

/// The body type the pooled client sends: any caller body, boxed once.
type RequestBody = UnsyncBoxBody<Bytes, BoxError>;

/// A pooled HTTP client for HolySheep's OpenAI-compatible API (or any compatible upstream),
/// as a [`tower::Service`].
///
/// It takes `http::Request<B>` with an origin-form URI such as `/chat/completions` and
/// sends it to the configured base URL (see [`Builder::base_url`] for the joining rule),
/// with `Authorization: Bearer <key>` in place of whatever `Authorization` the caller sent,
/// the `Host` of the upstream, and no hop-by-hop headers of the caller's connection; the
/// answer comes back without those of the upstream's connection (RFC 9110 §7.6.1, see
/// [`holysheep_core::hop_by_hop`]).
///
/// - Connections are pooled and kept alive (hyper-util's legacy client); HTTPS uses rustls
///   with the webpki roots and negotiates HTTP/1.1 or h2 by ALPN. DNS answers are cached.
/// - Non-2xx answers are `Ok(Response)`: layers above classify them.
/// - The response body is a [`ResponseBody`] that streams frame by frame.
/// - `Clone` is cheap (one `Arc`), and clones share the pool. `poll_ready` is always ready:
///   the pool queues internally, so bound concurrency with a layer in front.
///
/// Its [`Debug`](fmt::Debug) output never shows the API key.
#[derive(Clone)]
pub struct HolySheepClient {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) client: Client<Connector, RequestBody>,
    pub(crate) base_url: BaseUrl,
    pub(crate) authorization: Option<HeaderValue>,
    pub(crate) timeout: Duration,
    pub(crate) read_timeout: Duration,
}

impl HolySheepClient {
    /// A client for `https://api.holysheep.ai/v1` with this API key and the default settings.
    ///
    /// Fails with a configuration error if the key is empty or not a valid header value.
    pub fn new(api_key: impl Into<String>) -> Result<Self, Error> {
        Builder::new().api_key(api_key).build()
    }

    /// A client configured from `HOLYSHEEP_API_KEY` and `HOLYSHEEP_BASE_URL` (each optional;
    /// the default base URL applies when the latter is unset). See [`Builder::from_env`].
    pub fn from_env() -> Result<Self, Error> {
        Builder::from_env()?.build()
    }

    /// A [`Builder`] with the default settings.
    pub fn builder() -> Builder {
        Builder::new()
    }

    /// The base URL requests are sent to.
    pub fn base_url(&self) -> &Uri {
        self.inner.base_url.uri()
    }

    pub(crate) fn from_inner(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    /// Turns the caller's request into the upstream request.
    fn prepare<B>(&self, request: Request<B>) -> Result<Request<RequestBody>, Error>
    where
        B: Body + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (mut parts, body) = request.into_parts();
        parts.uri = self.inner.base_url.join(&parts.uri)?;
        // hyper-util upgrades to h2 itself when the connection negotiated it; a caller's
        // HTTP/2 request must not be refused on an HTTP/1.1 connection.
        parts.version = Version::HTTP_11;
        // Headers of the caller's connection to us, not of our request upstream.
        remove_hop_by_hop(&mut parts.headers);
        // hyper-util fills in the upstream's Host; the caller's would name the gateway.
        parts.headers.remove(header::HOST);
        parts.headers.remove(header::AUTHORIZATION);
        if let Some(authorization) = &self.inner.authorization {
            parts
                .headers
                .insert(header::AUTHORIZATION, authorization.clone());
        }
        Ok(Request::from_parts(parts, into_request_body(body)))
    }
}

fn into_request_body<B>(body: B) -> RequestBody
where
    B: Body + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_frame(|frame| frame.map_data(|mut data| data.copy_to_bytes(data.remaining())))
        .map_err(Into::into)
        .boxed_unsync()
}

impl<B> Service<Request<B>> for HolySheepClient
where
    B: Body + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match self.prepare(request) {
            Ok(request) => {
                tracing::debug!(method = %request.method(), uri = %request.uri(), "calling upstream");
                ResponseFuture::new(
                    self.inner.client.request(request),
                    self.inner.timeout,
                    self.inner.read_timeout,
                )
            }
            Err(error) => ResponseFuture::failed(error),
        }
    }
}

impl fmt::Debug for HolySheepClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("HolySheepClient")
            .field("base_url", inner.base_url.uri())
            .field(
                "api_key",
                &inner.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("timeout", &inner.timeout)
            .field("read_timeout", &inner.read_timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::Full;

    use super::*;

    fn client(key: Option<&str>) -> HolySheepClient {
        let builder = HolySheepClient::builder().base_url("https://api.holysheep.ai/v1/");
        match key {
            Some(key) => builder.api_key(key),
            None => builder,
        }
        .build()
        .expect("client builds")
    }

    #[test]
    fn prepare_rewrites_uri_auth_host_and_hop_headers() {
        let request = Request::post("http://gateway.local/chat/completions?x=1")
            .version(Version::HTTP_2)
            .header(header::AUTHORIZATION, "Bearer caller-key")
            .header(header::HOST, "gateway.local")
            .header(header::CONNECTION, "keep-alive, x-hop")
            .header("x-hop", "1")
            .header(header::TRANSFER_ENCODING, "chunked")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(b"{}")))
            .expect("valid request");
        let prepared = client(Some("sk-upstream"))
            .prepare(request)
            .expect("prepares");
        assert_eq!(
            prepared.uri(),
            "https://api.holysheep.ai/v1/chat/completions?x=1"
        );
        assert_eq!(prepared.version(), Version::HTTP_11);
        let headers = prepared.headers();
        let auth: Vec<_> = headers.get_all(header::AUTHORIZATION).iter().collect();
        assert_eq!(auth, ["Bearer sk-upstream"]);
        assert!(auth[0].is_sensitive());
        for gone in ["host", "connection", "x-hop", "transfer-encoding"] {
            assert!(!headers.contains_key(gone), "{gone} should be stripped");
        }
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn without_a_key_no_authorization_is_sent() {
        let request = Request::get("/models")
            .header(header::AUTHORIZATION, "Bearer caller-key")
            .body(Full::new(Bytes::new()))
            .expect("valid request");
        let prepared = client(None).prepare(request).expect("prepares");
        assert!(!prepared.headers().contains_key(header::AUTHORIZATION));
    }

    #[test]
    fn debug_redacts_the_key() {
        let client = client(Some("sk-very-secret-key"));
        let debug = format!("{client:?}");
        assert!(!debug.contains("sk-very-secret-key"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(debug.contains("api.holysheep.ai"), "{debug}");
    }

    #[test]
    fn types_fit_a_tower_stack() {
        fn send_sync<T: Send + Sync + 'static>() {}
        fn send_unpin<T: Send + Unpin + 'static>() {}
        send_sync::<HolySheepClient>();
        send_sync::<Error>();
        send_unpin::<ResponseBody>();
        fn send<T: Send + 'static>() {}
        send::<ResponseFuture>();
    }

    #[test]
    fn clones_share_the_pool() {
        let client = client(None);
        let clone = client.clone();
        assert!(Arc::ptr_eq(&client.inner, &clone.inner));
    }
}
