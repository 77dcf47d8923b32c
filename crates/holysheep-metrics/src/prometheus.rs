//! Prometheus text exposition for the layer's metrics (cargo feature `prometheus`).
//!
//! ```
//! // In the gateway's main: install once, then serve `handle.render()` at `GET /metrics`.
//! let handle = holysheep_metrics::prometheus::install()?;
//! let layer = holysheep_metrics::MetricsLayer::new();
//! # let _ = layer;
//! let text = handle.render();
//! assert!(text.contains("# HELP holysheep_requests_total") || text.is_empty());
//! # Ok::<(), holysheep_metrics::prometheus::BuildError>(())
//! ```

use std::time::Duration;

pub use metrics_exporter_prometheus::{
    BuildError, Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::names;

/// How often [`install`]'s background thread runs upkeep on the recorder.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// A [`PrometheusBuilder`] whose latency histograms
/// (`holysheep_request_duration_seconds`, `holysheep_time_to_first_byte_seconds`, and the
/// optional `gen_ai.client.operation.*`) have the buckets of [`names::LATENCY_BUCKETS`], and
/// `gen_ai.client.token.usage` those of [`names::TOKEN_BUCKETS`], so they render as
/// Prometheus histograms rather than summaries. Add your own settings, then `install_recorder()` or `build_recorder()`.
pub fn builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(names::REQUEST_DURATION.to_owned()),
            names::LATENCY_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(names::TIME_TO_FIRST_BYTE.to_owned()),
            names::LATENCY_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(names::GENAI_OPERATION_DURATION.to_owned()),
            names::LATENCY_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(names::GENAI_TIME_TO_FIRST_CHUNK.to_owned()),
            names::LATENCY_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(names::GENAI_TOKEN_USAGE.to_owned()),
            names::TOKEN_BUCKETS,
        )
}

/// Installs [`builder`]'s recorder as the global recorder, [describes](names::describe) the
/// metrics, and returns the handle whose [`render`](PrometheusHandle::render) is the body of
/// `GET /metrics` (content type `text/plain; version=0.0.4`).
///
/// A background thread named `holysheep-metrics-upkeep` runs the recorder's upkeep every
/// [`UPKEEP_INTERVAL`], which drains histogram samples even when nobody scrapes. If the thread
/// cannot be spawned, scraping still drains them.
///
/// # Errors
///
/// When a global recorder is already installed.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    install_from(builder()?)
}

/// [`install`] with a builder of your own, typically [`builder`] with buckets for other
/// layers' histograms added (the semantic cache's similarity, say).
///
/// # Errors
///
/// When a global recorder is already installed.
pub fn install_from(builder: PrometheusBuilder) -> Result<PrometheusHandle, BuildError> {
    let handle = builder.install_recorder()?;
    names::describe();
    let upkeep = handle.clone();
    // A failed spawn costs only the idle-time upkeep; the handle works without it.
    let _ = std::thread::Builder::new()
        .name("holysheep-metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            }
        });
    Ok(handle)
}
