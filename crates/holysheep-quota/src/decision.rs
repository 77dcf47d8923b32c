//! What a backend is asked, and what it answers.

/// One request to decide on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Check {
    /// Tokens to reserve (0 when the tenant has no token limit).
    pub(crate) tokens: u64,
    /// Now, ms since the epoch.
    pub(crate) now_ms: f64,
    /// Whether the request may cost money (it has a body): a spent budget refuses only these,
    /// so a tenant can still read its usage.
    pub(crate) may_cost: bool,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The requests-per-minute limit.
    Requests,
    /// The tokens-per-minute limit.
    Tokens,
    /// The cap on requests in flight.
    Concurrency,
    /// The daily dollar budget is spent.
    DailyBudget,
    /// The monthly dollar budget is spent.
    MonthlyBudget,
}

impl Reason {
    /// A short name, fit for a metric label: `requests`, `tokens`, `concurrency`,
    /// `daily_budget`, `monthly_budget`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
            Self::Concurrency => "concurrency",
            Self::DailyBudget => "daily_budget",
            Self::MonthlyBudget => "monthly_budget",
        }
    }

    /// Whether a budget is spent (answered `insufficient_quota`) rather than a rate exceeded
    /// (`rate_limit_exceeded`).
    pub fn is_budget(self) -> bool {
        matches!(self, Self::DailyBudget | Self::MonthlyBudget)
    }

    /// Severity order: a spent budget outranks a rate, a monthly budget a daily one.
    fn rank(self) -> u8 {
        match self {
            Self::MonthlyBudget => 4,
            Self::DailyBudget => 3,
            Self::Tokens => 2,
            Self::Requests => 1,
            Self::Concurrency => 0,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A per-minute limit's figures, for the `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RateState {
    pub(crate) limit: u64,
    pub(crate) remaining: u64,
    /// Until the window is wholly free again, ms.
    pub(crate) reset_ms: f64,
}

/// A backend's answer.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Verdict {
    /// Why the request was refused (the gravest reason); `None`: it passed and was charged.
    pub(crate) reason: Option<Reason>,
    /// When a retry can pass, ms (the longest wait of the reasons).
    pub(crate) retry_after_ms: f64,
    pub(crate) requests: Option<RateState>,
    pub(crate) tokens: Option<RateState>,
    /// Decided by this instance alone (the shared store could not be reached): settled here too.
    pub(crate) local: bool,
}

impl Verdict {
    pub(crate) fn allowed(&self) -> bool {
        self.reason.is_none()
    }

    pub(crate) fn reject(&mut self, reason: Reason, wait_ms: f64) {
        if self.reason.is_none_or(|r| reason.rank() > r.rank()) {
            self.reason = Some(reason);
        }
        self.retry_after_ms = self.retry_after_ms.max(wait_ms);
    }
}
