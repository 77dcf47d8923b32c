//! The arithmetic of the limits, on one tenant's state: GCRA for the per-minute limits,
//! UTC calendar windows for the budgets. The Redis script (`redis/check.lua`) is the same
//! arithmetic in Lua, so both backends decide alike.

use crate::decision::{Check, RateState, Reason, Verdict};
use crate::limits::Limits;

/// The window of the per-minute limits, in milliseconds.
pub(crate) const MINUTE_MS: f64 = 60_000.0;
const DAY_MS: f64 = 86_400_000.0;

/// GCRA (the generic cell rate algorithm, as `governor` and redis-cell use it) with burst =
/// limit: each unit of cost moves the theoretical arrival time `tat` on by `60 s / limit`, and
/// a cost is admitted while `tat` stays within a minute of now. This is a sliding window that
/// keeps one number per limit, refills continuously, and lets a cost be given back or added
/// after the fact (a token reservation reconciled with the answer's `usage`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Gcra {
    /// Theoretical arrival time, ms since the epoch; 0 when never used.
    pub(crate) tat: f64,
    /// The limit `tat` was reckoned in (0: never used).
    pub(crate) limit: u64,
}

impl Gcra {
    /// `tat` in the terms of `limit`: when the limit changed (a reloaded policy), what was used
    /// stays used, as a count, so raising a limit frees the difference at once.
    fn rescale(&mut self, limit: u64, now: f64) {
        if self.limit != limit {
            if self.limit > 0 && limit > 0 && self.tat > now {
                self.tat = now + (self.tat - now) * self.limit as f64 / limit as f64;
            }
            self.limit = limit;
        }
    }

    /// What admitting `cost` would make `tat`; `Err(wait_ms)` when it is over the limit. A cost
    /// above the limit is capped at the limit: it passes when the window is wholly free.
    fn try_take(&mut self, limit: u64, cost: u64, now: f64) -> Result<f64, f64> {
        self.rescale(limit, now);
        if limit == 0 {
            return Err(MINUTE_MS);
        }
        let interval = MINUTE_MS / limit as f64;
        let cost = cost.min(limit) as f64;
        let new_tat = self.tat.max(now) + cost * interval;
        let over = new_tat - now - MINUTE_MS;
        // A hair of float slack so a limit of n admits n in a burst, not n - 1.
        if over > 1e-6 { Err(over) } else { Ok(new_tat) }
    }

    /// Adds (or, negative, gives back) `delta` units of cost after the fact.
    pub(crate) fn adjust(&mut self, limit: u64, delta: i64, now: f64) {
        self.rescale(limit, now);
        if limit == 0 || delta == 0 {
            return;
        }
        let interval = MINUTE_MS / limit as f64;
        self.tat = (self.tat.max(now) + delta as f64 * interval).max(now);
    }

    /// The figures for the rate-limit headers.
    fn state(&self, limit: u64, now: f64) -> RateState {
        let mut this = *self;
        this.rescale(limit, now);
        let used_ms = (this.tat - now).max(0.0);
        let remaining = if limit == 0 {
            0
        } else {
            let interval = MINUTE_MS / limit as f64;
            (((MINUTE_MS - used_ms) / interval + 1e-9).floor().max(0.0) as u64).min(limit)
        };
        RateState {
            limit,
            remaining,
            reset_ms: used_ms,
        }
    }
}

/// A budget spent over a calendar window (a UTC day or month).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Budget {
    /// The window the spending belongs to (day or month number).
    pub(crate) window: i64,
    /// Dollars spent in it.
    pub(crate) spent: f64,
}

impl Budget {
    fn spent_in(&self, window: i64) -> f64 {
        if self.window == window {
            self.spent
        } else {
            0.0
        }
    }

    pub(crate) fn add(&mut self, window: i64, usd: f64) {
        if self.window != window {
            *self = Self { window, spent: 0.0 };
        }
        self.spent += usd;
    }
}

/// Day number since the epoch (UTC) of `now_ms`, and when that day ends (ms).
pub(crate) fn day_window(now_ms: f64) -> (i64, f64) {
    let day = (now_ms / DAY_MS).floor() as i64;
    (day, (day + 1) as f64 * DAY_MS)
}

/// Month number (`year * 12 + month0`, UTC) of `now_ms`, and when that month ends (ms).
pub(crate) fn month_window(now_ms: f64) -> (i64, f64) {
    let day = (now_ms / DAY_MS).floor() as i64;
    let (y, m) = civil_from_days(day);
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let end_day = days_from_civil(ny, nm);
    (y * 12 + (m - 1), end_day as f64 * DAY_MS)
}

/// Year and month (1–12) of a day number (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m)
}

/// Day number of the first day of a month (Howard Hinnant's `days_from_civil`, day 1).
fn days_from_civil(y: i64, m: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// One tenant's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct TenantState {
    pub(crate) requests: Gcra,
    pub(crate) tokens: Gcra,
    pub(crate) day: Budget,
    pub(crate) month: Budget,
}

impl TenantState {
    /// Decides on a request and, when it passes, charges it: all limits or none.
    pub(crate) fn check(&mut self, limits: &Limits, check: &Check) -> Verdict {
        let now = check.now_ms;
        let mut verdict = Verdict::default();
        let mut new_requests = None;
        let mut new_tokens = None;

        let (day, day_end) = day_window(now);
        if let Some(budget) = limits.dollars_per_day
            && check.may_cost
            && self.day.spent_in(day) >= budget
        {
            verdict.reject(Reason::DailyBudget, day_end - now);
        }
        let (month, month_end) = month_window(now);
        if let Some(budget) = limits.dollars_per_month
            && check.may_cost
            && self.month.spent_in(month) >= budget
        {
            verdict.reject(Reason::MonthlyBudget, month_end - now);
        }
        if let Some(limit) = limits.requests_per_minute {
            match self.requests.try_take(limit, 1, now) {
                Ok(tat) => new_requests = Some(tat),
                Err(wait) => verdict.reject(Reason::Requests, wait),
            }
        }
        if let Some(limit) = limits.tokens_per_minute
            && check.tokens > 0
        {
            match self.tokens.try_take(limit, check.tokens, now) {
                Ok(tat) => new_tokens = Some(tat),
                Err(wait) => verdict.reject(Reason::Tokens, wait),
            }
        }
        if verdict.allowed() {
            if let Some(tat) = new_requests {
                self.requests.tat = tat;
            }
            if let Some(tat) = new_tokens {
                self.tokens.tat = tat;
            }
        }
        verdict.requests = limits
            .requests_per_minute
            .map(|l| self.requests.state(l, now));
        verdict.tokens = limits.tokens_per_minute.map(|l| self.tokens.state(l, now));
        verdict
    }

    /// Reconciles a passed request: `token_delta` more (or fewer) tokens than reserved, and
    /// `usd` spent.
    pub(crate) fn settle(&mut self, limits: &Limits, token_delta: i64, usd: f64, now: f64) {
        if let Some(limit) = limits.tokens_per_minute {
            self.tokens.adjust(limit, token_delta, now);
        }
        if usd > 0.0 {
            self.day.add(day_window(now).0, usd);
            self.month.add(month_window(now).0, usd);
        }
    }

    /// Dollars spent today and this month.
    pub(crate) fn spent(&self, now: f64) -> (f64, f64) {
        (
            self.day.spent_in(day_window(now).0),
            self.month.spent_in(month_window(now).0),
        )
    }

    /// The per-minute figures now, without charging anything.
    pub(crate) fn rates(
        &self,
        limits: &Limits,
        now: f64,
    ) -> (Option<RateState>, Option<RateState>) {
        (
            limits
                .requests_per_minute
                .map(|l| self.requests.state(l, now)),
            limits.tokens_per_minute.map(|l| self.tokens.state(l, now)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(tokens: u64, now_ms: f64) -> Check {
        Check {
            tokens,
            now_ms,
            may_cost: true,
        }
    }

    #[test]
    fn a_burst_of_the_limit_then_one_per_interval() {
        let limits = Limits::new().requests_per_minute(60);
        let mut s = TenantState::default();
        let t0 = 1_700_000_000_000.0;
        for i in 0..60 {
            let v = s.check(&limits, &check(0, t0));
            assert!(v.allowed(), "request {i}");
            assert_eq!(v.requests.unwrap().remaining, 59 - i);
        }
        let v = s.check(&limits, &check(0, t0));
        assert_eq!(v.reason, Some(Reason::Requests));
        assert!((v.retry_after_ms - 1000.0).abs() < 1e-3);
        assert!((v.requests.unwrap().reset_ms - 60_000.0).abs() < 1e-3);
        assert!(!s.check(&limits, &check(0, t0 + 999.0)).allowed());
        assert!(s.check(&limits, &check(0, t0 + 1000.0)).allowed());
    }

    #[test]
    fn a_rejected_request_charges_nothing() {
        let limits = Limits::new().requests_per_minute(10).tokens_per_minute(100);
        let mut s = TenantState::default();
        let t0 = 1_700_000_000_000.0;
        assert!(s.check(&limits, &check(90, t0)).allowed());
        let v = s.check(&limits, &check(20, t0));
        assert_eq!(v.reason, Some(Reason::Tokens));
        // Only the first request counted: 9 requests and 10 tokens left.
        assert_eq!(v.requests.unwrap().remaining, 9);
        assert_eq!(v.tokens.unwrap().remaining, 10);
        // Giving back 80 tokens of the reservation makes room.
        s.settle(&limits, -80, 0.0, t0);
        assert!(s.check(&limits, &check(20, t0)).allowed());
    }

    #[test]
    fn budgets_close_until_the_calendar_window_ends() {
        let limits = Limits::new().dollars_per_day(1.0).dollars_per_month(1.5);
        let mut s = TenantState::default();
        // 2026-01-31T23:00:00Z
        let t0 = 1_769_900_400_000.0;
        assert!(s.check(&limits, &check(0, t0)).allowed());
        s.settle(&limits, 0, 1.0, t0);
        let v = s.check(&limits, &check(0, t0));
        assert_eq!(v.reason, Some(Reason::DailyBudget));
        assert!((v.retry_after_ms - 3_600_000.0).abs() < 1e-3);
        // The next day (February) opens both windows again.
        let t1 = t0 + 3_600_000.0;
        assert!(s.check(&limits, &check(0, t1)).allowed());
        s.settle(&limits, 0, 1.0, t1 + 1.0);
        s.settle(&limits, 0, 0.0, t1 + 1.0);
        let t2 = t1 + 86_400_000.0;
        s.settle(&limits, 0, 0.6, t2);
        let v = s.check(&limits, &check(0, t2));
        assert_eq!(v.reason, Some(Reason::MonthlyBudget));
    }

    #[test]
    fn a_changed_limit_keeps_what_was_used_as_a_count() {
        let t0 = 1_700_000_000_000.0;
        let mut s = TenantState::default();
        let one = Limits::new().requests_per_minute(1);
        assert!(s.check(&one, &check(0, t0)).allowed());
        assert!(!s.check(&one, &check(0, t0)).allowed());
        let ten = Limits::new().requests_per_minute(10);
        let v = s.check(&ten, &check(0, t0));
        assert!(v.allowed());
        assert_eq!(v.requests.unwrap().remaining, 8);
    }

    #[test]
    fn calendar_months() {
        // 2024-02-29T12:00:00Z: a leap February ends on 2024-03-01.
        let (_, end) = month_window(1_709_208_000_000.0);
        assert_eq!(end, 1_709_251_200_000.0);
        // 2025-12-15: December ends on 2026-01-01.
        let (m, end) = month_window(1_765_800_000_000.0);
        assert_eq!(m, 2025 * 12 + 11);
        assert_eq!(end, 1_767_225_600_000.0);
    }
}
