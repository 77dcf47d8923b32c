//! Log set-up and the one line per request.

use std::io::IsTerminal;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use holysheep_core::error::ErrorClass;
use holysheep_core::signal::{Attempts, CacheOutcome, RequestModel};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber: level from `RUST_LOG` (default `info`), text or JSON lines.
/// A second call (tests start many gateways in one process) leaves the first in place.
///
/// redis-rs logs every connection attempt to a Redis node that is down at warn (hundreds a
/// minute); the cache store logs each node's failure itself, once per node per 10 s. So the
/// `redis` target is kept to errors unless `RUST_LOG` names it.
pub(crate) fn init(format: LogFormat) {
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let names_redis = std::env::var("RUST_LOG").is_ok_and(|spec| spec.contains("redis"));
    if !names_redis && let Ok(directive) = "redis=error".parse() {
        filter = filter.add_directive(directive);
    }
    // Colours only for a terminal: escape codes in a log file or a collector are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stdout().is_terminal());
    // An error only means a subscriber is already installed, which is fine.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Middleware: one `info` line per request with method, route, model, status, cache outcome,
/// upstream attempts and the time until the response head (a stream goes on after it).
///
/// Only the route pattern is logged, never the query string or any header, so no key can end
/// up in a log line.
pub(crate) async fn log_requests(request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    // A clone of the matched path shares its string; no copy per request.
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let extensions = response.extensions();
    let model = extensions
        .get::<RequestModel>()
        .map_or("-", RequestModel::as_str);
    let cache = extensions
        .get::<CacheOutcome>()
        .map_or("-", |outcome| outcome.as_str());
    let attempts = extensions.get::<Attempts>().map_or(0, |a| a.0);
    let error = extensions.get::<ErrorClass>().map_or("-", |e| e.as_str());
    tracing::info!(
        method = %method,
        route = %route.as_ref().map_or("unmatched", MatchedPath::as_str),
        model = %model,
        status = response.status().as_u16(),
        cache = %cache,
        attempts = attempts,
        error = %error,
        duration_ms = start.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}
