use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::TpsBudget;
use tower_layer::Layer;

use crate::classify::{Classify, DefaultClassify};
use crate::policy::{Config, Shared};
use crate::service::Retry;

/// Applies [`Retry`] to a service: retries transient failures with exponential backoff and full
/// jitter, honours `Retry-After`, keeps one deadline across attempts and spends a retry budget.
///
/// Defaults: at most 3 retries, backoff base 100 ms capped at 5 s, a 60 s deadline, `Retry-After`
/// honoured up to 30 s, and a budget that lets retries add at most 20 % to the requests of the
/// last 10 s plus 10 retries a second.
///
/// The budget lives in the layer: every service the layer builds, and every clone of those,
/// draws from the same budget, so an outage cannot multiply the load on the upstream however
/// many handles to the stack exist.
#[derive(Debug, Clone)]
pub struct RetryLayer<C = DefaultClassify> {
    config: Config,
    classify: C,
    budget: Arc<TpsBudget>,
}

impl RetryLayer {
    /// A layer with the default configuration and [`DefaultClassify`].
    pub fn new() -> Self {
        Self {
            config: Config::default(),
            classify: DefaultClassify,
            budget: Arc::new(new_budget(10, 0.2)),
        }
    }
}

impl Default for RetryLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> RetryLayer<C> {
    /// Replaces the classifier that decides which outcomes are transient.
    pub fn classify<C2>(self, classify: C2) -> RetryLayer<C2>
    where
        C2: Classify,
    {
        RetryLayer {
            config: self.config,
            classify,
            budget: self.budget,
        }
    }

    /// The most retries after the first attempt (default 3). `0` turns retrying off while
    /// keeping the deadline and the attempt count.
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.config.max_retries = max_retries;
        self
    }

    /// The backoff before the first retry grows from `base` and doubles each retry up to `max`
    /// (defaults 100 ms and 5 s); the actual sleep is drawn uniformly below that ceiling.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.config.base_delay = base;
        self.config.max_delay = max.max(base);
        self
    }

    /// One deadline for the whole call, all attempts and sleeps included (default 60 s).
    ///
    /// A retry whose sleep would end past the deadline is not made: the last answer is returned
    /// as it was. An attempt still in flight when the deadline passes is dropped and the call
    /// fails with [`DeadlineExceeded`](crate::DeadlineExceeded). The deadline ends when the
    /// response head arrives; a streaming body is not cut by it.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.config.deadline = deadline;
        self
    }

    /// The longest `Retry-After` the layer waits for (default 30 s). An upstream asking for a
    /// longer pause is taken at its word: the layer gives up at once and returns its answer,
    /// `Retry-After` header included, for the caller to act on.
    pub fn retry_after_cap(mut self, cap: Duration) -> Self {
        self.config.retry_after_cap = cap;
        self
    }

    /// Also writes the attempt count to the `x-holysheep-attempts` response header (default
    /// off: the [`Attempts`](holysheep_core::signal::Attempts) extension is always set, and
    /// the header would leak internals to end clients unless a gateway wants it).
    pub fn attempts_header(mut self, enabled: bool) -> Self {
        self.config.attempts_header = enabled;
        self
    }

    /// A fresh retry budget: retries may add `retry_ratio` (e.g. `0.2` for 20 %) of the requests
    /// of the last 10 s, plus `min_per_sec` retries a second that are always allowed.
    ///
    /// Out-of-range values are clamped (`retry_ratio` to `0.0..=10.0`, non-numbers to `0.0`)
    /// rather than rejected.
    pub fn budget(mut self, min_per_sec: u32, retry_ratio: f32) -> Self {
        self.budget = Arc::new(new_budget(min_per_sec, retry_ratio));
        self
    }

    /// Uses a budget shared with other layers, e.g. all routes to the same upstream.
    pub fn shared_budget(mut self, budget: Arc<TpsBudget>) -> Self {
        self.budget = budget;
        self
    }
}

impl<S, C> Layer<S> for RetryLayer<C>
where
    C: Clone,
{
    type Service = Retry<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::from_shared(
            inner,
            Arc::new(Shared {
                config: self.config.clone(),
                classify: self.classify.clone(),
                budget: Arc::clone(&self.budget),
            }),
        )
    }
}

/// Builds a [`TpsBudget`] over a 10 s window, clamping inputs it would panic on.
fn new_budget(min_per_sec: u32, retry_ratio: f32) -> TpsBudget {
    let ratio = if retry_ratio.is_nan() {
        0.0
    } else {
        retry_ratio.clamp(0.0, 10.0)
    };
    let min_per_sec = min_per_sec.min(i32::MAX as u32 - 1);
    TpsBudget::new(Duration::from_secs(10), min_per_sec, ratio)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn budget_inputs_are_clamped_not_panicking() {
        let _ = new_budget(u32::MAX, f32::NAN);
        let _ = new_budget(0, -1.0);
        let _ = new_budget(10, 1e9);
    }
}
