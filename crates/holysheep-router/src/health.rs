//! Passive health of one deployment: outlier ejection with back-off, trial requests, and rests
//! the upstream asks for.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use http::header::RETRY_AFTER;
use tokio::time::Instant;

/// When a deployment is taken out of rotation, and for how long.
///
/// Passive outlier ejection, as Envoy's `consecutive_5xx` / `consecutive_gateway_failure`
/// detectors do it: the router watches the answers it gets, with no probes of its own.
///
/// - A deployment that fails [`consecutive_failures`](Self::consecutive_failures) times in a
///   row is **ejected** for [`base_ejection`](Self::base_ejection). A failure is what
///   `holysheep-core` calls one: an error of class
///   [`Connect`](holysheep_core::error::ErrorClass::Connect) or
///   [`Timeout`](holysheep_core::error::ErrorClass::Timeout), or an answer of class
///   [`Overload`](holysheep_core::error::AnswerClass::Overload) (`429`, `503` without
///   `Retry-After`), [`Timeout`](holysheep_core::error::AnswerClass::Timeout) or
///   [`ServerError`](holysheep_core::error::AnswerClass::ServerError).
/// - When the cool-down ends, **one trial request** goes to it. A good answer puts it back in
///   rotation; a failure ejects it again for twice as long as last time, up to
///   [`max_ejection`](Self::max_ejection). Requests sent before the ejection that end after it
///   change nothing: fifty requests in flight to a deployment that dies cost one ejection, not
///   fifty doublings, and a late good answer does not cut the cool-down short.
/// - An answer that says when to come back — `Retry-After` on a `429` or `503`, or
///   `x-ratelimit-remaining-requests: 0` / `x-ratelimit-remaining-tokens: 0` with its
///   `x-ratelimit-reset-*` — **rests** the deployment that long at once (at most
///   `max_ejection`), without waiting for more failures: a throttled key is skipped before it
///   fails again. A rest needs no trial: the upstream said when it is ready.
///
/// ```
/// use std::time::Duration;
/// use holysheep_router::HealthConfig;
///
/// let health = HealthConfig::default()
///     .consecutive_failures(3)
///     .base_ejection(Duration::from_secs(5));
/// assert_eq!(health.get_consecutive_failures(), 3);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    consecutive_failures: u32,
    base_ejection: Duration,
    max_ejection: Duration,
    default_rest: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: Self::DEFAULT_CONSECUTIVE_FAILURES,
            base_ejection: Self::DEFAULT_BASE_EJECTION,
            max_ejection: Self::DEFAULT_MAX_EJECTION,
            default_rest: Self::DEFAULT_REST,
        }
    }
}

impl HealthConfig {
    /// Default of [`consecutive_failures`](Self::consecutive_failures): 5, as Envoy's.
    pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
    /// Default of [`base_ejection`](Self::base_ejection): 10 s.
    pub const DEFAULT_BASE_EJECTION: Duration = Duration::from_secs(10);
    /// Default of [`max_ejection`](Self::max_ejection): 300 s.
    pub const DEFAULT_MAX_EJECTION: Duration = Duration::from_secs(300);
    /// Default of [`default_rest`](Self::default_rest): 1 s.
    pub const DEFAULT_REST: Duration = Duration::from_secs(1);

    /// Failures in a row that eject a deployment (default 5; 0 is raised to 1).
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = n.max(1);
        self
    }

    /// The first cool-down of an ejected deployment (default 10 s); each failed trial doubles
    /// it.
    pub fn base_ejection(mut self, cool_down: Duration) -> Self {
        self.base_ejection = cool_down;
        self
    }

    /// The longest cool-down, and the longest rest an upstream's `Retry-After` or
    /// `x-ratelimit-reset-*` can impose (default 300 s).
    pub fn max_ejection(mut self, cap: Duration) -> Self {
        self.max_ejection = cap;
        self
    }

    /// The rest of a deployment whose `x-ratelimit-remaining-*` is 0 but whose reset time is
    /// missing or unreadable (default 1 s).
    pub fn default_rest(mut self, rest: Duration) -> Self {
        self.default_rest = rest;
        self
    }

    /// The configured [`consecutive_failures`](Self::consecutive_failures).
    pub fn get_consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// The configured [`base_ejection`](Self::base_ejection).
    pub fn get_base_ejection(&self) -> Duration {
        self.base_ejection
    }

    /// The configured [`max_ejection`](Self::max_ejection).
    pub fn get_max_ejection(&self) -> Duration {
        self.max_ejection
    }

    /// The configured [`default_rest`](Self::default_rest).
    pub fn get_default_rest(&self) -> Duration {
        self.default_rest
    }

    /// The cool-down of the `n`-th ejection in a row (1-based): `base * 2^(n-1)`, capped.
    fn cool_down(&self, n: u32) -> Duration {
        let factor = 1u32 << n.saturating_sub(1).min(20);
        self.base_ejection
            .saturating_mul(factor)
            .min(self.max_ejection)
    }
}

/// Whether a deployment may take a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Availability {
    /// In rotation.
    Open,
    /// Its cool-down is over: one trial request may go.
    Trial,
    /// Not before this instant.
    Closed(Instant),
}

/// What one attempt said about its deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// It answered (well, or with a rejection of the request). While the deployment is ejected
    /// (a request sent before the ejection), it changes nothing: only the trial brings it back.
    Healthy,
    /// The trial request after a cool-down was answered: back in rotation.
    TrialHealthy,
    /// A failure that counts towards ejection. While the deployment is ejected (a request
    /// sent before the ejection, failing after it), it changes nothing.
    Failed,
    /// The trial request after a cool-down failed: ejected again, for longer.
    TrialFailed,
    /// It asked to be left alone this long.
    Rest(Duration),
}

/// The health state of one deployment.
#[derive(Debug)]
pub(crate) struct Health {
    failures: u32,
    /// Ejections in a row, for the back-off.
    ejections: u32,
    /// Not chosen before this (an ejection's cool-down or a rest).
    closed_until: Option<Instant>,
    /// Ejected: after `closed_until`, only a trial request may go.
    ejected: bool,
    /// When the trial request went; another may go once it is a cool-down old (the first may
    /// have been cancelled and never report).
    trial_since: Option<Instant>,
}

/// A deployment's health, as [`DeploymentStatus`](crate::DeploymentStatus) shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HealthState {
    /// In rotation.
    Healthy,
    /// Ejected after failures: out of rotation until its cool-down ends, then on trial.
    Ejected,
    /// Resting because the upstream asked (`Retry-After`, `x-ratelimit-*`).
    Resting,
}

impl Health {
    pub(crate) fn new() -> Self {
        Self {
            failures: 0,
            ejections: 0,
            closed_until: None,
            ejected: false,
            trial_since: None,
        }
    }

    pub(crate) fn state(&self, now: Instant) -> HealthState {
        if self.ejected {
            HealthState::Ejected
        } else if self.closed_until.is_some_and(|until| now < until) {
            HealthState::Resting
        } else {
            HealthState::Healthy
        }
    }

    pub(crate) fn availability(&self, now: Instant, config: &HealthConfig) -> Availability {
        if let Some(until) = self.closed_until.filter(|&until| now < until) {
            return Availability::Closed(until);
        }
        if !self.ejected {
            return Availability::Open;
        }
        match self.trial_since {
            Some(since) if now < later(since, config.base_ejection) => {
                Availability::Closed(later(since, config.base_ejection))
            }
            _ => Availability::Trial,
        }
    }

    /// A trial request was sent.
    pub(crate) fn start_trial(&mut self, now: Instant) {
        self.trial_since = Some(now);
    }

    /// Records what an attempt said.
    /// Records what an attempt said; `true` when it ejected the deployment.
    pub(crate) fn record(&mut self, verdict: Verdict, now: Instant, config: &HealthConfig) -> bool {
        match verdict {
            Verdict::Healthy if self.ejected => false,
            Verdict::Healthy | Verdict::TrialHealthy => {
                self.failures = 0;
                self.ejections = 0;
                self.ejected = false;
                self.trial_since = None;
                false
            }
            Verdict::Failed if self.ejected => false,
            Verdict::Failed | Verdict::TrialFailed => {
                self.failures += 1;
                if self.ejected || self.failures >= config.consecutive_failures {
                    self.ejections = self.ejections.saturating_add(1);
                    self.failures = 0;
                    self.ejected = true;
                    self.trial_since = None;
                    let until = later(now, config.cool_down(self.ejections));
                    self.closed_until = Some(self.closed_until.map_or(until, |u| u.max(until)));
                    return true;
                }
                false
            }
            Verdict::Rest(rest) => {
                let until = later(now, rest.min(config.max_ejection));
                self.closed_until = Some(self.closed_until.map_or(until, |u| u.max(until)));
                false
            }
        }
    }
}

/// `at + wait`, or as far as an `Instant` goes when that is past its range (a configured
/// `Duration::MAX`).
fn later(at: Instant, wait: Duration) -> Instant {
    at.checked_add(wait)
        .or_else(|| at.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(at)
}

/// How long an answer asks its deployment to rest: `Retry-After` on a `429` or `503`, or an
/// exhausted `x-ratelimit-remaining-requests` / `x-ratelimit-remaining-tokens` with its
/// `x-ratelimit-reset-*` (OpenAI's duration form, `1s`, `6m0s`, `20ms`) or `default_rest`.
pub(crate) fn rest_of(
    status: http::StatusCode,
    headers: &HeaderMap,
    default_rest: Duration,
) -> Option<Duration> {
    if matches!(status.as_u16(), 429 | 503)
        && let Some(after) = retry_after(headers)
    {
        return Some(after);
    }
    ["requests", "tokens"]
        .iter()
        .filter_map(|kind| {
            let remaining = headers.get(format!("x-ratelimit-remaining-{kind}"))?;
            let remaining: u64 = remaining.to_str().ok()?.trim().parse().ok()?;
            (remaining == 0).then(|| {
                headers
                    .get(format!("x-ratelimit-reset-{kind}"))
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_reset)
                    .unwrap_or(default_rest)
            })
        })
        .max()
}

/// `Retry-After` as delta-seconds or an HTTP date (a date in the past is "now").
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// OpenAI's reset durations: `1s`, `6m0s`, `1m30.5s`, `20ms`, `1h2m3s`; a bare number is
/// seconds.
fn parse_reset(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let mut total = 0.0f64;
    let mut rest = value;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|&i| i > 0)?;
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else {
            return None;
        };
        total += number * unit;
        rest = &rest[len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderValue, StatusCode};

    fn config() -> HealthConfig {
        HealthConfig::default()
            .consecutive_failures(3)
            .base_ejection(Duration::from_secs(10))
            .max_ejection(Duration::from_secs(35))
    }

    #[test]
    fn ejects_after_consecutive_failures_and_backs_off() {
        let cfg = config();
        let mut h = Health::new();
        let t0 = Instant::now();
        h.record(Verdict::Failed, t0, &cfg);
        h.record(Verdict::Healthy, t0, &cfg);
        h.record(Verdict::Failed, t0, &cfg);
        h.record(Verdict::Failed, t0, &cfg);
        assert_eq!(h.availability(t0, &cfg), Availability::Open);
        assert!(
            h.record(Verdict::Failed, t0, &cfg),
            "the third failure ejects"
        );
        assert_eq!(
            h.availability(t0, &cfg),
            Availability::Closed(t0 + Duration::from_secs(10))
        );
        assert_eq!(h.state(t0), HealthState::Ejected);
        // Cool-down over: one trial, and no second while it runs.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(h.availability(t1, &cfg), Availability::Trial);
        h.start_trial(t1);
        assert!(matches!(h.availability(t1, &cfg), Availability::Closed(_)));
        // A request sent before the ejection fails now: nothing changes.
        h.record(Verdict::Failed, t1, &cfg);
        assert!(matches!(h.availability(t1, &cfg), Availability::Closed(_)));
        assert_eq!(h.ejections, 1);
        // The trial fails: twice as long, then capped.
        h.record(Verdict::TrialFailed, t1, &cfg);
        assert_eq!(
            h.availability(t1, &cfg),
            Availability::Closed(t1 + Duration::from_secs(20))
        );
        let t2 = t1 + Duration::from_secs(20);
        h.start_trial(t2);
        h.record(Verdict::TrialFailed, t2, &cfg);
        assert_eq!(
            h.availability(t2, &cfg),
            Availability::Closed(t2 + Duration::from_secs(35))
        );
        // A good trial puts it back, and the back-off starts over.
        let t3 = t2 + Duration::from_secs(35);
        assert_eq!(h.availability(t3, &cfg), Availability::Trial);
        h.start_trial(t3);
        // A late answer of a request sent before the ejection does not bring it back.
        h.record(Verdict::Healthy, t3, &cfg);
        assert_eq!(h.state(t3), HealthState::Ejected);
        h.record(Verdict::TrialHealthy, t3, &cfg);
        assert_eq!(h.availability(t3, &cfg), Availability::Open);
        assert_eq!(h.state(t3), HealthState::Healthy);
        for _ in 0..3 {
            h.record(Verdict::Failed, t3, &cfg);
        }
        assert_eq!(
            h.availability(t3, &cfg),
            Availability::Closed(t3 + Duration::from_secs(10))
        );
    }

    #[test]
    fn failures_in_flight_at_the_ejection_do_not_lengthen_the_cool_down() {
        let cfg = config();
        let mut h = Health::new();
        let t0 = Instant::now();
        // Fifty requests in flight to a deployment that dies: three eject it, the rest fail
        // after the ejection.
        for _ in 0..50 {
            h.record(Verdict::Failed, t0, &cfg);
        }
        assert_eq!(
            h.availability(t0, &cfg),
            Availability::Closed(t0 + Duration::from_secs(10))
        );
    }

    #[test]
    fn a_cancelled_trial_does_not_close_it_for_good() {
        let cfg = config();
        let mut h = Health::new();
        let t0 = Instant::now();
        for _ in 0..3 {
            h.record(Verdict::Failed, t0, &cfg);
        }
        let t1 = t0 + Duration::from_secs(10);
        h.start_trial(t1);
        assert_eq!(
            h.availability(t1 + Duration::from_secs(10), &cfg),
            Availability::Trial
        );
    }

    #[test]
    fn a_rest_needs_no_trial_and_is_capped() {
        let cfg = config();
        let mut h = Health::new();
        let t0 = Instant::now();
        h.record(Verdict::Rest(Duration::from_secs(2)), t0, &cfg);
        assert_eq!(h.state(t0), HealthState::Resting);
        assert!(matches!(h.availability(t0, &cfg), Availability::Closed(_)));
        let later = t0 + Duration::from_secs(2);
        assert_eq!(h.availability(later, &cfg), Availability::Open);
        h.record(Verdict::Rest(Duration::from_secs(3600)), later, &cfg);
        assert_eq!(
            h.availability(later, &cfg),
            Availability::Closed(later + Duration::from_secs(35))
        );
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    HeaderValue::from_static(v),
                )
            })
            .collect()
    }

    #[test]
    fn rests_from_headers() {
        let one = Duration::from_secs(1);
        let h = headers(&[("retry-after", "7")]);
        assert_eq!(
            rest_of(StatusCode::TOO_MANY_REQUESTS, &h, one),
            Some(Duration::from_secs(7))
        );
        // Retry-After on a success is not a rest.
        assert_eq!(rest_of(StatusCode::OK, &h, one), None);
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "1m30.5s"),
        ]);
        assert_eq!(
            rest_of(StatusCode::OK, &h, one),
            Some(Duration::from_secs_f64(90.5))
        );
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "12"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "20ms"),
        ]);
        assert_eq!(
            rest_of(StatusCode::OK, &h, one),
            Some(Duration::from_millis(20))
        );
        let h = headers(&[("x-ratelimit-remaining-tokens", "0")]);
        assert_eq!(rest_of(StatusCode::OK, &h, one), Some(one));
        let h = headers(&[("x-ratelimit-remaining-requests", "5")]);
        assert_eq!(rest_of(StatusCode::OK, &h, one), None);
    }

    #[test]
    fn huge_settings_do_not_overflow() {
        let cfg = HealthConfig::default()
            .consecutive_failures(1)
            .base_ejection(Duration::MAX)
            .max_ejection(Duration::MAX);
        let mut h = Health::new();
        let t0 = Instant::now();
        h.record(Verdict::Failed, t0, &cfg);
        h.record(Verdict::Rest(Duration::MAX), t0, &cfg);
        assert!(matches!(h.availability(t0, &cfg), Availability::Closed(_)));
    }

    #[test]
    fn reset_durations() {
        assert_eq!(parse_reset("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_reset("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(parse_reset("2.5"), Some(Duration::from_millis(2500)));
        assert_eq!(parse_reset("soon"), None);
        assert_eq!(parse_reset("5x"), None);
        assert_eq!(parse_reset("-3"), None);
    }
}
