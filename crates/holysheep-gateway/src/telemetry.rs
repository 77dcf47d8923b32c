//! Request ids, the request's server span, and the subscriber that exports spans over OTLP.
//!
//! Every request gets an id: the caller's `x-request-id` when it sent a sensible one, a new
//! UUID otherwise (tower-http's `SetRequestIdLayer` with [`NewRequestId`]), returned in the
//! answer's `x-request-id` (`PropagateRequestIdLayer`) and carried by the request's server span
//! (tower-http's `TraceLayer`), so every log line of the request carries it. `MetricsLayer`'s GenAI span and
//! the upstream attempt spans are children of that span.

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::MatchedPath;
use http::{HeaderName, HeaderValue, Request, Response};
use tower::ServiceBuilder;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::TraceLayer;
use tracing::Span;
use tracing::field::Empty;

use crate::config::Config;

/// The header carrying the request id, both ways.
pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Where the upstream's own request id is passed on.
pub(crate) const UPSTREAM_REQUEST_ID: HeaderName = HeaderName::from_static("x-upstream-request-id");

/// A caller's id longer than this is replaced: it ends up in every log line of the request.
const MAX_REQUEST_ID_LEN: usize = 128;

/// `router` with request ids and a server span per request, outermost. The span carries the
/// OpenTelemetry HTTP server fields only when spans are `exported` (`--otlp`); for the log
/// lines alone it carries the request id, which is all they add to the request's own line.
pub(crate) fn traced(router: Router, exported: bool) -> Router {
    router.layer(
        ServiceBuilder::new()
            .map_request(drop_unfit_request_id)
            .layer(SetRequestIdLayer::new(REQUEST_ID, NewRequestId))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(move |request: &Request<Body>| {
                        if exported {
                            exported_span(request)
                        } else {
                            logged_span(request)
                        }
                    })
                    .on_request(())
                    .on_response(move |res: &Response<Body>, _: Duration, span: &Span| {
                        if exported {
                            span.record("http.response.status_code", res.status().as_u16());
                        }
                    })
                    .on_body_chunk(())
                    .on_eos(())
                    .on_failure(()),
            )
            .layer(PropagateRequestIdLayer::new(REQUEST_ID))
            .map_response(keep_upstream_request_id),
    )
}

/// The upstream's own request id (OpenAI and HolySheep send one), kept as
/// `x-upstream-request-id` so that `x-request-id` is the gateway's, the one its logs carry.
fn keep_upstream_request_id(mut response: Response<Body>) -> Response<Body> {
    if let Some(id) = response.headers_mut().remove(&REQUEST_ID) {
        response.headers_mut().insert(UPSTREAM_REQUEST_ID, id);
    }
    response
}

/// A new request id: a random (v4) UUID, as tower-http's `MakeRequestUuid` makes, written
/// straight into the header value (no formatting machinery, no intermediate `String`).
#[derive(Clone, Copy, Debug, Default)]
struct NewRequestId;

impl MakeRequestId for NewRequestId {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id = uuid::Uuid::new_v4().hyphenated();
        HeaderValue::from_bytes(id.encode_lower(&mut text).as_bytes())
            .ok()
            .map(RequestId::new)
    }
}

/// Removes a caller's request id that is too long or not printable, so a new one is made.
fn drop_unfit_request_id(mut request: Request<Body>) -> Request<Body> {
    let unfit = request.headers().get(&REQUEST_ID).is_some_and(|id| {
        id.len() > MAX_REQUEST_ID_LEN || !id.as_bytes().iter().all(u8::is_ascii_graphic)
    });
    if unfit {
        request.headers_mut().remove(&REQUEST_ID);
    }
    request
}

/// The request's id as its spans carry it.
fn request_id(request: &Request<Body>) -> &str {
    request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|id| id.to_str().ok())
        .unwrap_or_default()
}

/// The server span for the log lines alone: the request id, which every line of the request
/// then carries (the request's own line has the rest).
fn logged_span(request: &Request<Body>) -> Span {
    tracing::info_span!(target: "holysheep::http", "http", request_id = request_id(request))
}

/// The server span exported over OTLP: method, route, request id; the status when the head is
/// sent. No header but the id, no query string, no body.
fn exported_span(request: &Request<Body>) -> Span {
    let id = request_id(request);
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let span = tracing::info_span!(
        target: "holysheep::http",
        "http",
        otel.name = Empty,
        otel.kind = "server",
        http.request.method = request.method().as_str(),
        http.route = route,
        request_id = id,
        http.response.status_code = Empty,
    );
    if !span.is_disabled() {
        let name = match route {
            Some(route) => format!("{} {route}", request.method()),
            None => request.method().to_string(),
        };
        span.record("otel.name", name.as_str());
    }
    span
}

/// What has to outlive the server for the spans to reach their collector: dropping it sends
/// the spans still batched.
#[derive(Debug, Default)]
pub(crate) struct TelemetryGuard {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("holysheep gateway: the last spans were not exported: {error}");
        }
    }
}

/// Installs the global subscriber: log lines as `logging::init` writes them, and, with
/// `--otlp`, spans exported over OTLP as the `OTEL_*` environment variables say. Must run
/// inside the tokio runtime (the exporter's connection lives on it).
pub(crate) fn init(config: &Config) -> Result<TelemetryGuard, String> {
    if !config.otlp() {
        crate::logging::init(config.log_format());
        return Ok(TelemetryGuard::default());
    }
    #[cfg(feature = "otlp")]
    {
        otlp::init(config.log_format())
    }
    #[cfg(not(feature = "otlp"))]
    {
        // `Config::validate` refuses `--otlp` without the feature; this is never reached.
        Err("this gateway was built without the `otlp` feature".into())
    }
}

#[cfg(feature = "otlp")]
mod otlp {
    use std::io::IsTerminal;

    use holysheep_metrics::span;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::SpanExporter;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing::Level;
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer as _};

    use super::TelemetryGuard;
    use crate::config::LogFormat;
    use crate::logging::PlainFields;

    /// The service name when `OTEL_SERVICE_NAME` does not say.
    const SERVICE_NAME: &str = "holysheep-gateway";

    pub(super) fn init(format: LogFormat) -> Result<TelemetryGuard, String> {
        // Endpoint, headers, timeout, compression: from OTEL_EXPORTER_OTLP_* (gRPC, default
        // http://localhost:4317).
        let exporter = SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(SERVICE_NAME);
        }
        // Batches go out from a background thread, never on a request's path (OTEL_BSP_*).
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer(SERVICE_NAME);

        // Each layer its own filter: the log lines as `RUST_LOG` says (default `info`); the
        // exported spans at `info`, and the GenAI and attempt spans, which are `debug`.
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let ansi = std::io::stdout().is_terminal();
        let fmt = tracing_subscriber::fmt::layer()
            .with_target(false)
            .with_ansi(ansi);
        let fmt = match format {
            LogFormat::Json => fmt.json().flatten_event(true).with_filter(filter).boxed(),
            LogFormat::Text if ansi => fmt.with_filter(filter).boxed(),
            LogFormat::Text => fmt.fmt_fields(PlainFields).with_filter(filter).boxed(),
        };
        let spans = Targets::new()
            .with_default(Level::INFO)
            .with_target(span::REQUEST_TARGET, Level::DEBUG)
            .with_target(span::ATTEMPT_TARGET, Level::DEBUG);
        tracing_subscriber::registry()
            .with(fmt)
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(spans),
            )
            .try_init()
            .map_err(|e| format!("cannot install the tracing subscriber: {e}"))?;
        Ok(TelemetryGuard {
            provider: Some(provider),
        })
    }
}
