use std::sync::{Arc, OnceLock};
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
/// # Configuration and the budget
///
/// The layer holds plain configuration and one retry budget. Creating the layer and calling
/// its setters only records configuration; the budget is made once, from the
/// [`budget`](Self::budget) settings in force, when a service is first built from the layer
/// ([`Layer::layer`]). Every service built from this layer, and every clone of those, draws
/// from that budget, so an outage cannot multiply the load on the upstream however many
/// handles to the stack exist. The other settings are read by each service as it is built.
///
/// Clones of the layer, and the layers its setters return, share the budget too: everything
/// derived from one [`new`](Self::new) spends one budget, whichever of them builds first. So
/// set [`budget`](Self::budget) before building from the layer; called after the budget is
/// made or given, it changes nothing (and logs a warning). For an independent budget, start from
/// another `RetryLayer::new`. [`shared_budget`](Self::shared_budget) names the budget outright:
/// the layer it returns, and everything derived from that, spends the one given.
#[derive(Debug, Clone)]
pub struct RetryLayer<C = DefaultClassify> {
    config: Config,
    classify: C,
    budget: BudgetConfig,
    live_budget: Arc<OnceLock<Arc<TpsBudget>>>,
}

/// The settings the budget is made from.
#[derive(Debug, Clone, Copy)]
struct BudgetConfig {
    min_per_sec: u32,
    retry_ratio: f32,
}

impl RetryLayer {
    /// Default of [`max_retries`](Self::max_retries): 3.
    pub const DEFAULT_MAX_RETRIES: u32 = 3;
    /// Default of [`backoff_base`](Self::backoff_base): 100 ms.
    pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(100);
    /// Default of [`backoff_max`](Self::backoff_max): 5 s.
    pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5);
    /// Default of [`deadline`](Self::deadline): 60 s.
    pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);
    /// Default of [`retry_after_cap`](Self::retry_after_cap): 30 s.
    pub const DEFAULT_RETRY_AFTER_CAP: Duration = Duration::from_secs(30);
    /// Default retries a second the [`budget`](Self::budget) always allows: 10.
    pub const DEFAULT_BUDGET_MIN_PER_SEC: u32 = 10;
    /// Default share of recent requests the [`budget`](Self::budget) lets retries add: 0.2.
    pub const DEFAULT_BUDGET_RATIO: f32 = 0.2;

    /// A layer with the default configuration and [`DefaultClassify`].
    pub fn new() -> Self {
        Self {
            config: Config::default(),
            classify: DefaultClassify,
            budget: BudgetConfig {
                min_per_sec: Self::DEFAULT_BUDGET_MIN_PER_SEC,
                retry_ratio: Self::DEFAULT_BUDGET_RATIO,
            },
            live_budget: Arc::default(),
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
            live_budget: self.live_budget,
        }
    }

    /// The most retries after the first attempt (default 3). `0` turns retrying off while
    /// keeping the deadline and the attempt count.
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.config.max_retries = max_retries;
        self
    }

    /// The backoff before the first retry grows from `base` and doubles each retry up to `max`
    /// (defaults 100 ms and 5 s); the actual sleep is drawn uniformly below that ceiling. A
    /// `max` below `base` counts as `base`.
    pub fn backoff(self, base: Duration, max: Duration) -> Self {
        self.backoff_base(base).backoff_max(max)
    }

    /// The first backoff ceiling, alone (default 100 ms); see [`backoff`](Self::backoff).
    pub fn backoff_base(mut self, base: Duration) -> Self {
        self.config.base_delay = base;
        self
    }

    /// The largest backoff ceiling, alone (default 5 s); see [`backoff`](Self::backoff).
    pub fn backoff_max(mut self, max: Duration) -> Self {
        self.config.max_delay = max;
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

    /// The retry budget: retries may add `retry_ratio` (e.g. `0.2` for 20 %) of the requests
    /// of the last 10 s, plus `min_per_sec` retries a second that are always allowed.
    ///
    /// Out-of-range values are clamped (`retry_ratio` to `0.0..=10.0`, non-numbers to `0.0`)
    /// rather than rejected.
    ///
    /// The budget is made when the layer first builds a service; see
    /// [Configuration and the budget](Self#configuration-and-the-budget).
    pub fn budget(mut self, min_per_sec: u32, retry_ratio: f32) -> Self {
        if self.live_budget.get().is_some() {
            tracing::warn!(
                "RetryLayer::budget called after the budget was made or given; it does not apply"
            );
        }
        self.budget = BudgetConfig {
            min_per_sec,
            retry_ratio,
        };
        self
    }

    /// The budget's retry ratio alone, keeping its
    /// [`DEFAULT_BUDGET_MIN_PER_SEC`](RetryLayer::DEFAULT_BUDGET_MIN_PER_SEC) (or whatever
    /// [`budget`](Self::budget) set); see [`budget`](Self::budget).
    pub fn budget_ratio(self, retry_ratio: f32) -> Self {
        let min_per_sec = self.budget.min_per_sec;
        self.budget(min_per_sec, retry_ratio)
    }

    /// Spends `budget`, shared with other layers (e.g. all routes to the same upstream),
    /// instead of a budget of the layer's own: every service built from the returned layer,
    /// and from layers derived from it, draws from it.
    pub fn shared_budget(mut self, budget: Arc<TpsBudget>) -> Self {
        self.live_budget = Arc::new(OnceLock::from(budget));
        self
    }

    /// The budget, made from the configuration on first use.
    fn live_budget(&self) -> Arc<TpsBudget> {
        let BudgetConfig {
            min_per_sec,
            retry_ratio,
        } = self.budget;
        let budget = self
            .live_budget
            .get_or_init(|| Arc::new(new_budget(min_per_sec, retry_ratio)));
        Arc::clone(budget)
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
                budget: self.live_budget(),
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
