//! The metric names the layer records, through the `metrics` facade. The `tenant` label is a
//! tenant listed in the [`QuotaPolicy`](crate::QuotaPolicy), or `other`: its values are bounded
//! by the configuration.

/// Counter: requests the layer decided on, by `tenant` and `result` (`allowed`, `rejected`).
pub const REQUESTS: &str = "holysheep_quota_requests_total";
/// Counter: requests refused, by `tenant` and `reason` (see [`Reason`](crate::Reason)).
pub const REJECTIONS: &str = "holysheep_quota_rejections_total";
/// Counter: tokens charged to tenants (what reached the upstream), by `tenant`.
pub const TOKENS: &str = "holysheep_quota_tokens_total";
/// Counter: dollars charged to tenants, in micro-USD (1e-6 USD), by `tenant`.
pub const COST: &str = "holysheep_quota_cost_microusd_total";
/// Counter: checks decided by this instance's local limits because the shared store could not
/// be reached in time.
pub const FALLBACKS: &str = "holysheep_quota_fallback_total";

/// Label value for tenants not listed in the policy.
pub(crate) const OTHER: &str = "other";
