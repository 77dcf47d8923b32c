//! The adaptive total cap: additive increase, multiplicative decrease (AIMD).
//!
//! The limit is a float that moves with every upstream answer; the semaphore follows its
//! integer part. Shrinking forgets free permits at once and owes the rest: the next permits
//! to come back are forgotten instead of released, so in-flight requests are never cut off,
//! they just are not replaced. Growing pays the debt first, then adds permits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use holysheep_core::error::AnswerClass;
use http::Response;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// The settings of the adaptive limit, for [`PoolLimitLayer::adaptive`].
///
/// An additive-increase / multiplicative-decrease controller, the rule TCP congestion
/// control uses for its window (RFC 5681) and that Netflix's `concurrency-limits` library
/// applies to request concurrency (its `AIMDLimit`):
///
/// - **Decrease** the limit by [`decrease_factor`](Self::decrease_factor) (default 0.9) when
///   the upstream signals overload: an error from the inner service, whatever its class (no
///   answer came back); an answer whose
///   [`AnswerClass`](holysheep_core::error::AnswerClass) is transient (`408`, `429`, `500`,
///   `502`, `503`, `504` and other server errors, a gRPC trailers-only `UNAVAILABLE`,
///   `RESOURCE_EXHAUSTED`, `DEADLINE_EXCEEDED`, `UNKNOWN`, `INTERNAL` or `DATA_LOSS`: the
///   answers a retry would repeat); or a slow answer (see below). At most one decrease
///   per congestion event: an answer to a request that started before the last decrease does
///   not decrease again, as TCP cuts its window once per loss event, so a burst of 100
///   failures costs 10%, not 99.997%.
/// - **Increase** it by [`increase_by`](Self::increase_by) (default 1) per window of
///   successes: each good answer adds `increase_by / limit`, so a full window of `limit`
///   answers adds `increase_by`, TCP's congestion avoidance.
/// - Keep it within [`min_limit`](Self::min_limit) (default 1) and the layer's configured
///   total cap, which is also where it starts: the adaptive limit only lowers a cap that
///   proves too high, and climbs back when the trouble passes.
///
/// Latency is the time from the call to the response head (for a streamed answer, the first
/// byte; queueing for a slot does not count). An answer is slow when it took longer than
/// [`latency_threshold`](Self::latency_threshold) (default: none, as an LLM answer's time
/// grows with its length), or when the short-term average latency (an EWMA over about the
/// last 5 answers) exceeds [`latency_tolerance`](Self::latency_tolerance) (default 2) times
/// the long-term one (an EWMA over about the last 50), once 10 answers have set the baseline;
/// comparing averages, as Netflix's `Gradient2Limit` does, lets one long generation pass
/// while a climb across many answers counts. A call cancelled by its caller before its
/// answer counts as slow when it had already run past the threshold, and is ignored otherwise.
///
/// Only the total cap adapts; a per-host cap stays fixed. Behind a gateway whose requests all
/// go to one host, set the per-host cap to the total (`PoolLimitLayer::new(100, 100)`), or
/// the fixed per-host cap binds before the adaptive one.
///
/// [`PoolLimitLayer::adaptive`]: crate::PoolLimitLayer::adaptive
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aimd {
    min_limit: usize,
    increase_by: f64,
    decrease_factor: f64,
    latency_threshold: Option<Duration>,
    latency_tolerance: Option<f64>,
}

impl Default for Aimd {
    fn default() -> Self {
        Self {
            min_limit: 1,
            increase_by: 1.0,
            decrease_factor: 0.9,
            latency_threshold: None,
            latency_tolerance: Some(2.0),
        }
    }
}

impl Aimd {
    /// The lowest the limit goes (default 1; 0 is raised to 1, and a value above the total
    /// cap is lowered to it).
    pub fn min_limit(mut self, min: usize) -> Self {
        self.min_limit = min;
        self
    }

    /// How much a full window of successes raises the limit (default 1). Negative or
    /// non-finite values are treated as 0, a limit that never grows back.
    pub fn increase_by(mut self, step: f64) -> Self {
        self.increase_by = if step.is_finite() { step.max(0.0) } else { 0.0 };
        self
    }

    /// What an overload signal multiplies the limit by (default 0.9), within 0 (straight to
    /// the minimum) and 1 (never decrease); a value outside is clamped, NaN keeps the default.
    pub fn decrease_factor(mut self, factor: f64) -> Self {
        if !factor.is_nan() {
            self.decrease_factor = factor.clamp(0.0, 1.0);
        }
        self
    }

    /// An answer slower than this is an overload signal (default: none).
    pub fn latency_threshold(mut self, threshold: Option<Duration>) -> Self {
        self.latency_threshold = threshold;
        self
    }

    /// How many times its long-term average the short-term average latency may reach before
    /// answers count as slow (default `Some(2.0)`; `None` turns the relative check off).
    /// Values below 1 are raised to 1; NaN turns the check off.
    pub fn latency_tolerance(mut self, tolerance: Option<f64>) -> Self {
        self.latency_tolerance = tolerance.filter(|t| !t.is_nan()).map(|t| t.max(1.0));
        self
    }
}

/// Smoothing of the short-term latency average (about the last 5 answers).
const SHORT_ALPHA: f64 = 0.2;
/// Smoothing of the long-term latency baseline (about the last 50 answers).
const LONG_ALPHA: f64 = 0.02;
/// Answers needed before the baseline is trusted.
const WARMUP: u32 = 10;

/// What one upstream answer says about the upstream's load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// An answer that did not signal overload by its status.
    Answered,
    /// An error, or a status that means overload.
    Overloaded,
    /// The caller dropped the call before its answer.
    Cancelled,
}

impl Outcome {
    pub(crate) fn of_response<B>(res: &Response<B>) -> Self {
        if AnswerClass::of(res.status(), res.headers()).is_transient() {
            Self::Overloaded
        } else {
            Self::Answered
        }
    }
}

/// The controller shared by every service of one layer.
#[derive(Debug)]
pub(crate) struct Adaptive {
    aimd: Aimd,
    max: usize,
    /// The applied integer limit, for the handle.
    limit: AtomicUsize,
    /// Permits still to forget as they come back, after a shrink found too few free.
    debt: AtomicUsize,
    control: Mutex<Control>,
}

#[derive(Debug)]
struct Control {
    limit: f64,
    applied: usize,
    decreased_at: Option<Instant>,
    short: f64,
    long: f64,
    samples: u32,
}

impl Adaptive {
    pub(crate) fn new(mut aimd: Aimd, max: usize) -> Self {
        aimd.min_limit = aimd.min_limit.clamp(1, max);
        Self {
            aimd,
            max,
            limit: AtomicUsize::new(max),
            debt: AtomicUsize::new(0),
            control: Mutex::new(Control {
                limit: max as f64,
                applied: max,
                decreased_at: None,
                short: 0.0,
                long: 0.0,
                samples: 0,
            }),
        }
    }

    /// The limit applied now.
    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Whether a returning permit must be forgotten to pay for a shrink (and takes one from
    /// the debt if so).
    pub(crate) fn take_debt(&self) -> bool {
        self.debt.load(Ordering::Acquire) > 0
            && self
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
                .is_ok()
    }

    /// Feeds one answer (or cancellation) of a call started at `started` into the limit.
    pub(crate) fn record(&self, started: Instant, outcome: Outcome, sem: &Semaphore) {
        let now = Instant::now();
        let latency = now.saturating_duration_since(started);
        let mut c = self.control.lock().unwrap_or_else(PoisonError::into_inner);
        let overloaded = match outcome {
            Outcome::Overloaded => true,
            Outcome::Answered => {
                c.observe(latency.as_secs_f64());
                self.is_slow(&c, latency)
            }
            Outcome::Cancelled => {
                if self.aimd.latency_threshold.is_none_or(|t| latency <= t) {
                    return;
                }
                true
            }
        };
        if overloaded {
            if c.decreased_at.is_some_and(|at| started < at) {
                // Part of the congestion event already answered by the last decrease.
                return;
            }
            c.limit = (c.limit * self.aimd.decrease_factor).max(self.aimd.min_limit as f64);
            c.decreased_at = Some(now);
        } else {
            c.limit = (c.limit + self.aimd.increase_by / c.limit).min(self.max as f64);
        }
        self.apply(&mut c, sem);
    }

    fn is_slow(&self, c: &Control, latency: Duration) -> bool {
        if self.aimd.latency_threshold.is_some_and(|t| latency > t) {
            return true;
        }
        match self.aimd.latency_tolerance {
            Some(tolerance) if c.samples >= WARMUP => c.short > tolerance * c.long,
            _ => false,
        }
    }

    /// Moves the semaphore's capacity to the integer part of the limit.
    fn apply(&self, c: &mut Control, sem: &Semaphore) {
        // The float stays within [min, max]; the cast floors it.
        let target = (c.limit as usize).clamp(self.aimd.min_limit, self.max);
        if target < c.applied {
            let cut = c.applied - target;
            let forgotten = sem.forget_permits(cut);
            self.debt.fetch_add(cut - forgotten, Ordering::AcqRel);
            tracing::debug!(limit = target, "adaptive pool limit decreased");
        } else if target > c.applied {
            let grow = target - c.applied;
            let owed = self
                .debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| {
                    Some(d.saturating_sub(grow))
                })
                .unwrap_or(0);
            let add = grow - owed.min(grow);
            if add > 0 {
                sem.add_permits(add);
            }
            tracing::trace!(limit = target, "adaptive pool limit increased");
        }
        c.applied = target;
        self.limit.store(target, Ordering::Relaxed);
    }
}

impl Control {
    fn observe(&mut self, secs: f64) {
        if self.samples == 0 {
            self.short = secs;
            self.long = secs;
        } else {
            self.short += SHORT_ALPHA * (secs - self.short);
            self.long += LONG_ALPHA * (secs - self.long);
        }
        self.samples = self.samples.saturating_add(1);
    }
}
