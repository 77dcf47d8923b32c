//! The [`tower::retry::Policy`] behind [`Retry`](crate::Retry): classification, backoff,
//! `Retry-After`, the deadline and the budget.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use holysheep_core::BoxError;
use holysheep_core::signal::Attempts;
use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use rand::Rng;
use tokio::time::{Instant, Sleep};
use tower::retry::budget::{Budget, TpsBudget};

use crate::classify::Classify;

/// The response header that carries the attempt count when
/// [`RetryLayer::attempts_header`](crate::RetryLayer::attempts_header) is on.
pub const ATTEMPTS_HEADER: HeaderName = HeaderName::from_static("x-holysheep-attempts");

/// Tunables shared by every clone of a [`Retry`](crate::Retry) service.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) max_retries: u32,
    pub(crate) base_delay: Duration,
    pub(crate) max_delay: Duration,
    pub(crate) deadline: Duration,
    pub(crate) retry_after_cap: Duration,
    pub(crate) attempts_header: bool,
}

impl Default for Config {
    fn default() -> Self {
        use crate::RetryLayer as L;
        Self {
            max_retries: L::DEFAULT_MAX_RETRIES,
            base_delay: L::DEFAULT_BACKOFF_BASE,
            max_delay: L::DEFAULT_BACKOFF_MAX,
            deadline: L::DEFAULT_DEADLINE,
            retry_after_cap: L::DEFAULT_RETRY_AFTER_CAP,
            attempts_header: false,
        }
    }
}

/// Configuration, classifier and budget, behind one `Arc` so a per-call policy is one clone.
#[derive(Debug)]
pub(crate) struct Shared<C> {
    pub(crate) config: Config,
    pub(crate) classify: C,
    pub(crate) budget: Arc<TpsBudget>,
}

/// The per-call retry policy: one is made for each call to [`Retry`](crate::Retry) and counts
/// that call's attempts against its deadline.
///
/// It is public only so the future types can name it; build the layer with
/// [`RetryLayer`](crate::RetryLayer).
#[derive(Debug)]
pub struct RetryPolicy<C> {
    shared: Arc<Shared<C>>,
    attempts: u32,
    deadline: Instant,
}

impl<C> Clone for RetryPolicy<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            attempts: self.attempts,
            deadline: self.deadline,
        }
    }
}

impl<C> RetryPolicy<C> {
    pub(crate) fn new(shared: Arc<Shared<C>>, deadline: Instant) -> Self {
        Self {
            shared,
            attempts: 1,
            deadline,
        }
    }

    /// Full jitter: a uniform delay in `[0, min(max_delay, base * 2^retry))`, so that callers who
    /// failed together do not come back together.
    fn backoff(&self) -> Duration {
        let config = &self.shared.config;
        let exp = self.attempts.saturating_sub(1).min(31);
        let ceiling = config
            .base_delay
            .saturating_mul(1u32 << exp)
            .min(config.max_delay.max(config.base_delay));
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rand::rng().random_range(0..=nanos))
    }

    /// Tells the layers outside how many attempts the answer took.
    fn finish<B>(&self, result: &mut Result<Response<B>, BoxError>) {
        if let Ok(res) = result {
            res.extensions_mut().insert(Attempts(self.attempts));
            if self.shared.config.attempts_header {
                res.headers_mut()
                    .insert(ATTEMPTS_HEADER, HeaderValue::from(self.attempts));
            }
        }
    }
}

/// Why the last outcome may be retried.
enum Retryable {
    /// A transient failure without advice: back off exponentially.
    Backoff,
    /// The upstream said when to come back.
    After(Duration),
    /// The upstream said to come back later than we are willing to wait.
    TooLate,
}

impl<C, B, ResB> tower::retry::Policy<Request<B>, Response<ResB>, BoxError> for RetryPolicy<C>
where
    C: Classify,
    B: Clone,
{
    type Future = Sleep;

    fn retry(
        &mut self,
        _req: &mut Request<B>,
        result: &mut Result<Response<ResB>, BoxError>,
    ) -> Option<Self::Future> {
        let shared = &*self.shared;
        let retryable = match result {
            Ok(res) => {
                if !shared
                    .classify
                    .is_retryable_response(res.status(), res.headers())
                {
                    None
                } else {
                    match retry_after(res.headers()) {
                        Some(after) if after > shared.config.retry_after_cap => {
                            Some(Retryable::TooLate)
                        }
                        Some(after) => Some(Retryable::After(after)),
                        None => Some(Retryable::Backoff),
                    }
                }
            }
            Err(err) => shared
                .classify
                .is_retryable_error(&**err)
                .then_some(Retryable::Backoff),
        };

        let retryable = match retryable {
            Some(Retryable::TooLate) | None => {
                self.finish(result);
                return None;
            }
            Some(retryable) => retryable,
        };
        if self.attempts > shared.config.max_retries {
            tracing::debug!(attempts = self.attempts, "retries exhausted");
            self.finish(result);
            return None;
        }
        let delay = match retryable {
            Retryable::After(after) => after,
            _ => self.backoff(),
        };
        let wake = Instant::now() + delay;
        if wake >= self.deadline {
            // Waiting would pass the deadline: the caller is better served by the answer now.
            tracing::debug!(?delay, "retry would pass the deadline");
            self.finish(result);
            return None;
        }
        if !shared.budget.withdraw() {
            tracing::debug!("retry budget exhausted");
            self.finish(result);
            return None;
        }
        tracing::debug!(attempt = self.attempts + 1, ?delay, "retrying");
        self.attempts += 1;
        // `result`, and with it a retried response's body, is dropped by tower right after this
        // returns, which hands the connection back before the sleep starts.
        Some(tokio::time::sleep_until(wake))
    }

    fn clone_request(&mut self, req: &Request<B>) -> Option<Request<B>> {
        // Always cloned, even for the last allowed attempt: `retry` must see every outcome to
        // record the attempt count on it.
        Some(req.clone())
    }
}

/// Parses `Retry-After` as delta-seconds or an HTTP date. A date in the past means "now".
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(retry_after(&headers("3")), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(&headers(" 0 ")), Some(Duration::ZERO));
        assert_eq!(retry_after(&HeaderMap::new()), None);
        assert_eq!(retry_after(&headers("soon")), None);
        assert_eq!(retry_after(&headers("-1")), None);

        let later = SystemTime::now() + Duration::from_secs(120);
        let parsed = retry_after(&headers(&httpdate::fmt_http_date(later))).unwrap();
        assert!(parsed > Duration::from_secs(100) && parsed <= Duration::from_secs(120));

        let past = httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(1));
        assert_eq!(retry_after(&headers(&past)), Some(Duration::ZERO));
    }

    #[tokio::test]
    async fn backoff_is_jittered_below_an_exponential_ceiling() {
        let shared = Arc::new(Shared {
            config: Config::default(),
            classify: crate::DefaultClassify,
            budget: Arc::new(TpsBudget::default()),
        });
        let mut policy = RetryPolicy::new(shared, Instant::now());
        for (attempts, ceiling_ms) in [(1, 100), (2, 200), (3, 400), (7, 5000), (40, 5000)] {
            policy.attempts = attempts;
            let mut max = Duration::ZERO;
            for _ in 0..200 {
                let d = policy.backoff();
                assert!(d <= Duration::from_millis(ceiling_ms), "{d:?}");
                max = max.max(d);
            }
            // 200 uniform draws all landing in the lower half has probability 2^-200.
            assert!(max > Duration::from_millis(ceiling_ms / 2));
        }
    }
}
