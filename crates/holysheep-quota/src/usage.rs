//! A tenant's own figures, as the usage endpoint shows them.

use serde::Serialize;

use crate::decision::RateState;
use crate::gcra::TenantState;
use crate::limits::Limits;

/// A tenant's limits and what is left of them now: what a usage endpoint shows the tenant.
/// Serializes to JSON as the gateway's `GET /v1/holysheep/usage` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantUsage {
    /// The requests-per-minute limit and what is left (absent when not limited).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<RateUsage>,
    /// The tokens-per-minute limit and what is left (absent when not limited).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<RateUsage>,
    /// Dollars spent today (UTC).
    pub dollars_today: f64,
    /// Dollars spent this month (UTC).
    pub dollars_this_month: f64,
    /// The daily budget, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dollars_per_day: Option<f64>,
    /// The monthly budget, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dollars_per_month: Option<f64>,
    /// The cap on requests in flight, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Whether the figures come from this instance alone because the shared store could not be
    /// reached.
    pub local_fallback: bool,
}

/// One per-minute limit's figures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RateUsage {
    /// The limit per minute.
    pub limit: u64,
    /// What may still be used now.
    pub remaining: u64,
    /// Seconds until the window is wholly free again.
    pub reset_seconds: f64,
}

impl From<RateState> for RateUsage {
    fn from(s: RateState) -> Self {
        Self {
            limit: s.limit,
            remaining: s.remaining,
            reset_seconds: (s.reset_ms / 1000.0 * 1000.0).round() / 1000.0,
        }
    }
}

impl TenantUsage {
    pub(crate) fn from_state(state: &TenantState, limits: &Limits, now_ms: f64) -> Self {
        let (requests, tokens) = state.rates(limits, now_ms);
        let (today, month) = state.spent(now_ms);
        Self {
            requests: requests.map(Into::into),
            tokens: tokens.map(Into::into),
            dollars_today: today,
            dollars_this_month: month,
            dollars_per_day: limits.dollars_per_day,
            dollars_per_month: limits.dollars_per_month,
            max_concurrent: limits.max_concurrent,
            local_fallback: false,
        }
    }
}
