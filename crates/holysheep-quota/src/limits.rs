//! What a tenant may use: [`Limits`], and which tenant has which: [`QuotaPolicy`].

use std::collections::HashMap;
use std::sync::Arc;

use metrics::SharedString;

use crate::counters::TenantCounters;
use crate::names;

/// One tenant's limits. Every limit is off until set; a tenant with none set is not limited
/// (and gets no rate-limit headers).
///
/// ```
/// use holysheep_quota::Limits;
///
/// let limits = Limits::new()
///     .requests_per_minute(60)
///     .tokens_per_minute(90_000)
///     .dollars_per_day(5.0)
///     .dollars_per_month(100.0)
///     .max_concurrent(8);
/// assert_eq!(limits.requests_per_minute_limit(), Some(60));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    pub(crate) requests_per_minute: Option<u64>,
    pub(crate) tokens_per_minute: Option<u64>,
    pub(crate) dollars_per_day: Option<f64>,
    pub(crate) dollars_per_month: Option<f64>,
    pub(crate) max_concurrent: Option<u32>,
}

impl Limits {
    /// No limits.
    pub const fn new() -> Self {
        Self {
            requests_per_minute: None,
            tokens_per_minute: None,
            dollars_per_day: None,
            dollars_per_month: None,
            max_concurrent: None,
        }
    }

    /// At most `n` requests in any minute, every request counted (cache hits too). A burst of
    /// `n` passes at once; after it, one more every `60 s / n` (GCRA, see the crate docs).
    /// 0 admits nothing.
    pub const fn requests_per_minute(mut self, n: u64) -> Self {
        self.requests_per_minute = Some(n);
        self
    }

    /// At most `n` tokens (prompt + completion) in any minute, counting what reached the
    /// upstream only: a cache hit is free. 0 admits nothing that may cost tokens.
    pub const fn tokens_per_minute(mut self, n: u64) -> Self {
        self.tokens_per_minute = Some(n);
        self
    }

    /// At most `usd` dollars of upstream cost per UTC calendar day (priced by the layer's
    /// [`PriceTable`](holysheep_core::price::PriceTable)). A spent budget answers
    /// `insufficient_quota` until the day ends.
    pub fn dollars_per_day(mut self, usd: f64) -> Self {
        self.dollars_per_day = Some(usd.max(0.0));
        self
    }

    /// At most `usd` dollars of upstream cost per UTC calendar month.
    pub fn dollars_per_month(mut self, usd: f64) -> Self {
        self.dollars_per_month = Some(usd.max(0.0));
        self
    }

    /// At most `n` requests of the tenant in flight at once on this instance (until their
    /// response bodies end). 0 admits nothing.
    pub const fn max_concurrent(mut self, n: u32) -> Self {
        self.max_concurrent = Some(n);
        self
    }

    /// The requests-per-minute limit, if set.
    pub const fn requests_per_minute_limit(&self) -> Option<u64> {
        self.requests_per_minute
    }

    /// The tokens-per-minute limit, if set.
    pub const fn tokens_per_minute_limit(&self) -> Option<u64> {
        self.tokens_per_minute
    }

    /// The daily dollar budget, if set.
    pub const fn dollars_per_day_limit(&self) -> Option<f64> {
        self.dollars_per_day
    }

    /// The monthly dollar budget, if set.
    pub const fn dollars_per_month_limit(&self) -> Option<f64> {
        self.dollars_per_month
    }

    /// The cap on requests in flight, if set.
    pub const fn max_concurrent_limit(&self) -> Option<u32> {
        self.max_concurrent
    }

    /// Whether no limit is set.
    pub const fn is_unlimited(&self) -> bool {
        self.requests_per_minute.is_none()
            && self.tokens_per_minute.is_none()
            && self.dollars_per_day.is_none()
            && self.dollars_per_month.is_none()
            && self.max_concurrent.is_none()
    }

    /// These limits scaled by `share` (0 to 1): what one instance enforces alone when the
    /// fleet's shared store cannot be reached. Counts round down but stay at least 1 where the
    /// limit was not 0.
    pub fn scaled(&self, share: f64) -> Self {
        let share = if share.is_finite() {
            share.clamp(0.0, 1.0)
        } else {
            1.0
        };
        let count = |n: u64| {
            if n == 0 {
                0
            } else {
                ((n as f64 * share) as u64).max(1)
            }
        };
        Self {
            requests_per_minute: self.requests_per_minute.map(count),
            tokens_per_minute: self.tokens_per_minute.map(count),
            dollars_per_day: self.dollars_per_day.map(|d| d * share),
            dollars_per_month: self.dollars_per_month.map(|d| d * share),
            max_concurrent: self.max_concurrent,
        }
    }
}

/// Which tenant has which [`Limits`]. The tenant of a request is its
/// [`Namespace`](holysheep_core::signal::Namespace) extension; tenants not listed get the
/// default limits (none unless [`default_limits`](Self::default_limits) sets some), and so do
/// requests without a namespace, counted together as one tenant named by
/// [`ANONYMOUS`](Self::ANONYMOUS).
///
/// Only listed tenants appear in metric labels, so their number is bounded by the
/// configuration; the others are labelled `other`.
///
/// ```
/// use holysheep_quota::{Limits, QuotaPolicy};
///
/// let policy = QuotaPolicy::new()
///     .tenant("acme", Limits::new().requests_per_minute(600))
///     .tenant("hobby", Limits::new().requests_per_minute(10).dollars_per_month(5.0));
/// assert_eq!(policy.limits_of(Some("hobby")).requests_per_minute_limit(), Some(10));
/// assert!(policy.limits_of(Some("someone-else")).is_unlimited());
/// ```
#[derive(Debug, Clone)]
pub struct QuotaPolicy {
    tenants: HashMap<Arc<str>, Listed>,
    default: Limits,
    /// The counters of tenants not listed (label `other`).
    other: Arc<TenantCounters>,
}

/// A listed tenant: its limits and its metric handles.
#[derive(Debug, Clone)]
struct Listed {
    limits: Limits,
    counters: Arc<TenantCounters>,
}

/// What the layer needs of the policy for one request, found with one map lookup.
pub(crate) struct Lookup<'a> {
    pub(crate) limits: Limits,
    pub(crate) counters: &'a Arc<TenantCounters>,
}

impl Default for QuotaPolicy {
    fn default() -> Self {
        Self {
            tenants: HashMap::new(),
            default: Limits::new(),
            other: TenantCounters::new(SharedString::const_str(names::OTHER)),
        }
    }
}

impl QuotaPolicy {
    /// The tenant name used for requests that carry no namespace.
    pub const ANONYMOUS: &'static str = "anonymous";

    /// No tenants, no default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a tenant's limits.
    pub fn tenant(mut self, name: impl Into<Arc<str>>, limits: Limits) -> Self {
        let name = name.into();
        let counters = TenantCounters::new(SharedString::from(Arc::clone(&name)));
        self.tenants.insert(name, Listed { limits, counters });
        self
    }

    /// The limits of tenants not listed, and of requests without a namespace.
    pub fn default_limits(mut self, limits: Limits) -> Self {
        self.default = limits;
        self
    }

    /// The limits of a tenant (`None`: a request without a namespace).
    pub fn limits_of(&self, tenant: Option<&str>) -> Limits {
        tenant
            .and_then(|t| self.tenants.get(t))
            .map_or(self.default, |t| t.limits)
    }

    /// Whether a tenant is listed.
    pub fn is_listed(&self, tenant: &str) -> bool {
        self.tenants.contains_key(tenant)
    }

    /// The listed tenants.
    pub fn tenants(&self) -> impl Iterator<Item = (&str, &Limits)> {
        self.tenants.iter().map(|(k, v)| (&**k, &v.limits))
    }

    /// The limits of a tenant (`None`: a request without a namespace, counted as
    /// [`ANONYMOUS`](Self::ANONYMOUS)) and the counters of its label (its own when listed,
    /// else `other`).
    pub(crate) fn lookup(&self, tenant: Option<&str>) -> Lookup<'_> {
        let listed = self.tenants.get(tenant.unwrap_or(Self::ANONYMOUS));
        Lookup {
            limits: match (tenant, listed) {
                (Some(_), Some(listed)) => listed.limits,
                _ => self.default,
            },
            counters: listed.map_or(&self.other, |l| &l.counters),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_limits_round_down_but_stay_open() {
        let l = Limits::new()
            .requests_per_minute(60)
            .tokens_per_minute(1)
            .dollars_per_day(10.0)
            .max_concurrent(4);
        let s = l.scaled(1.0 / 3.0);
        assert_eq!(s.requests_per_minute, Some(20));
        assert_eq!(s.tokens_per_minute, Some(1));
        assert!((s.dollars_per_day.unwrap() - 10.0 / 3.0).abs() < 1e-9);
        assert_eq!(s.max_concurrent, Some(4));
        assert_eq!(
            Limits::new()
                .requests_per_minute(0)
                .scaled(0.5)
                .requests_per_minute,
            Some(0)
        );
        assert_eq!(l.scaled(f64::NAN), l);
    }
}
