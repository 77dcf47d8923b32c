//! The things a run calls: a naive client (a new connection per request, no cache, no retry),
//! a pooled HTTP client (to the mock directly, or to the gateway), and the full stack
//! (`holysheep::Stack`) in-process.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use holysheep::cache::{CacheLayer, CacheStore, MemoryStore, RedisStore};
use holysheep::client::HolySheepClient;
use holysheep::retry::RetryLayer;
use holysheep_core::BoxError;
use http::{HeaderMap, HeaderName, Request, Response, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use crate::driver::{Answer, Outcome, Target};

/// The upstream key the mock checks.
pub(crate) const UPSTREAM_KEY: &str = "sk-loadgen-upstream";

/// Reads a response to its end into an [`Outcome`].
async fn read<B>(response: Response<B>, parse: bool) -> Outcome
where
    B: http_body::Body<Data = Bytes>,
{
    let status = response.status().as_u16();
    let hit = response
        .headers()
        .get(holysheep::cache::X_CACHE)
        .is_some_and(|v| v.as_bytes() == b"HIT");
    match response.into_body().collect().await {
        Ok(body) => {
            let answer = if parse && status == 200 {
                serde_json::from_slice::<Answer>(&body.to_bytes()).ok()
            } else {
                None
            };
            Outcome {
                status: Some(status),
                hit,
                answer,
            }
        }
        // A body cut midway is a failed call, whatever the status said.
        Err(_) => Outcome::default(),
    }
}

/// A plain hyper-util client to `url` (an absolute `.../chat/completions` URL).
pub(crate) struct HttpTarget {
    client: Client<HttpConnector, Full<Bytes>>,
    url: http::Uri,
    /// Sent with every request besides the content type and the key.
    headers: HeaderMap,
}

impl HttpTarget {
    /// Keep-alive pool, `TCP_NODELAY`: the client a well-behaved caller uses.
    pub(crate) fn pooled(url: &str) -> Result<Self, BoxError> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Ok(HttpTarget {
            client,
            url: url.parse()?,
            headers: HeaderMap::new(),
        })
    }

    /// No idle connection is ever kept, so every request opens a new TCP connection (and pays
    /// the mock's cold-connection penalty): the article's "before".
    pub(crate) fn naive(url: &str) -> Result<Self, BoxError> {
        let connector = HttpConnector::new();
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        Ok(HttpTarget {
            client,
            url: url.parse()?,
            headers: HeaderMap::new(),
        })
    }
}

impl HttpTarget {
    /// Sends `name: value` with every request too.
    pub(crate) fn with_header(mut self, name: HeaderName, value: &'static str) -> Self {
        self.headers
            .insert(name, http::HeaderValue::from_static(value));
        self
    }

    /// Sends `body` as `POST` to the target's URL and returns the answer's head, its body
    /// unread: for callers that read it their own way (a slow reader, a hang-up).
    pub(crate) fn send(
        &self,
        body: Bytes,
    ) -> impl Future<Output = Result<Response<Incoming>, BoxError>> + Send + 'static {
        let mut request = Request::post(self.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {UPSTREAM_KEY}"));
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        self.request(request.body(Full::new(body)))
    }

    /// Sends `request` (from [`Request::builder`]) on the target's connection pool.
    pub(crate) fn request(
        &self,
        request: http::Result<Request<Full<Bytes>>>,
    ) -> impl Future<Output = Result<Response<Incoming>, BoxError>> + Send + 'static {
        let client = self.client.clone();
        async move { Ok(client.request(request?).await?) }
    }

    /// The target's URL.
    pub(crate) fn url(&self) -> &http::Uri {
        &self.url
    }
}

impl Target for HttpTarget {
    fn call(&self, body: Bytes, parse: bool) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
        let response = self.send(body);
        Box::pin(async move {
            match response.await {
                Ok(response) => read(response, parse).await,
                Err(_) => Outcome::default(),
            }
        })
    }
}

/// The response body of the in-process stack, boxed once.
type StackBody = UnsyncBoxBody<Bytes, BoxError>;

/// The stack as a run sees it.
type Stack = BoxCloneSyncService<Request<Full<Bytes>>, Response<StackBody>, BoxError>;

/// Knobs of the in-process stack (the gateway's defaults, with backoffs time-scaled).
#[derive(Debug, Clone)]
pub(crate) struct StackSettings {
    /// First backoff and cap.
    pub(crate) backoff: (Duration, Duration),
    /// Bound on the whole call.
    pub(crate) deadline: Duration,
    /// Bound of the in-memory cache.
    pub(crate) memory_max_bytes: u64,
}

/// `MetricsLayer → CacheLayer → RetryLayer → PoolLimitLayer → HolySheepClient`, in-process:
/// the library use.
pub(crate) struct StackTarget {
    stack: Stack,
}

impl StackTarget {
    /// The full stack over an in-memory cache, against `base_url` (the mock's `/v1`).
    pub(crate) fn memory(base_url: &str, settings: &StackSettings) -> Result<Self, BoxError> {
        Self::with_store(
            base_url,
            settings,
            MemoryStore::new(settings.memory_max_bytes),
        )
    }

    /// The full stack over Redis alone (no memory tier), so every hit is a Redis read.
    pub(crate) async fn redis(
        base_url: &str,
        redis_url: &str,
        settings: &StackSettings,
    ) -> Result<Self, BoxError> {
        let store = RedisStore::connect(redis_url).await?;
        Self::with_store(base_url, settings, store)
    }

    fn with_store(
        base_url: &str,
        settings: &StackSettings,
        store: impl CacheStore,
    ) -> Result<Self, BoxError> {
        let stack = holysheep::Stack::builder()
            .client(
                HolySheepClient::builder()
                    .base_url(base_url)
                    .api_key(UPSTREAM_KEY),
            )
            .cache(CacheLayer::new(store))
            .retry(
                RetryLayer::new()
                    .backoff_base(settings.backoff.0)
                    .backoff_max(settings.backoff.1)
                    .deadline(settings.deadline),
            )
            .build()?;
        // Named request type: the stack takes any body the cache can read.
        let service = ServiceExt::<Request<Full<Bytes>>>::map_response(stack, |response| {
            response.map(|body| body.map_err(Into::into).boxed_unsync())
        });
        let service = ServiceExt::<Request<Full<Bytes>>>::map_err(service, Into::<BoxError>::into);
        Ok(StackTarget {
            stack: BoxCloneSyncService::new(service),
        })
    }
}

impl Target for StackTarget {
    fn call(&self, body: Bytes, parse: bool) -> Pin<Box<dyn Future<Output = Outcome> + Send>> {
        let stack = self.stack.clone();
        Box::pin(async move {
            let Ok(request) = Request::post("/chat/completions")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(body))
            else {
                return Outcome::default();
            };
            match stack.oneshot(request).await {
                Ok(response) => read(response, parse).await,
                Err(_) => Outcome::default(),
            }
        })
    }
}

/// A target shared by runs.
pub(crate) type Shared = Arc<dyn Target>;
