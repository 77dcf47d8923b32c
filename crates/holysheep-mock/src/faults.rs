//! Which requests fail, and how: forced faults first, in order, then random ones by rate.

use std::collections::VecDeque;
use std::time::Duration;

use http::StatusCode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::MockConfig;

/// What happens to one request instead of its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The connection is reset without a response.
    Reset,
    /// An OpenAI-style error with this status.
    Status(StatusCode),
}

/// The server errors a random fault picks among.
const SERVER_ERRORS: [StatusCode; 3] = [
    StatusCode::INTERNAL_SERVER_ERROR,
    StatusCode::BAD_GATEWAY,
    StatusCode::SERVICE_UNAVAILABLE,
];

/// The fault state of one server: its random generator and the queues of forced faults.
#[derive(Debug)]
pub(crate) struct Faults {
    rng: StdRng,
    seed: Option<u64>,
    reset_next: usize,
    truncate_next: usize,
    fail_next: VecDeque<(StatusCode, usize)>,
}

impl Faults {
    pub(crate) fn new(seed: Option<u64>) -> Self {
        Self {
            rng: rng_from(seed),
            seed,
            reset_next: 0,
            truncate_next: 0,
            fail_next: VecDeque::new(),
        }
    }

    /// Restarts the random sequence when the configured seed changed.
    pub(crate) fn reseed(&mut self, seed: Option<u64>) {
        if seed != self.seed {
            self.rng = rng_from(seed);
            self.seed = seed;
        }
    }

    pub(crate) fn fail_next(&mut self, n: usize, status: StatusCode) {
        if n > 0 {
            self.fail_next.push_back((status, n));
        }
    }

    pub(crate) fn reset_next(&mut self, n: usize) {
        self.reset_next = self.reset_next.saturating_add(n);
    }

    pub(crate) fn truncate_next(&mut self, n: usize) {
        self.truncate_next = self.truncate_next.saturating_add(n);
    }

    pub(crate) fn clear(&mut self) {
        self.reset_next = 0;
        self.truncate_next = 0;
        self.fail_next.clear();
    }

    pub(crate) fn latency(&mut self, cfg: &MockConfig) -> Duration {
        cfg.latency.sample(&mut self.rng)
    }

    /// The fault for the next request, if any: forced resets, then forced statuses, then a
    /// random draw against the configured rates.
    pub(crate) fn next(&mut self, cfg: &MockConfig) -> Option<Fault> {
        if self.reset_next > 0 {
            self.reset_next -= 1;
            return Some(Fault::Reset);
        }
        if let Some((status, left)) = self.fail_next.front_mut() {
            let status = *status;
            *left -= 1;
            if *left == 0 {
                self.fail_next.pop_front();
            }
            return Some(Fault::Status(status));
        }
        let reset = rate(cfg.reset_rate);
        let limited = reset + rate(cfg.rate_limit_rate);
        let failed = limited + rate(cfg.error_rate);
        if failed <= 0.0 {
            return None;
        }
        let r: f64 = self.rng.random();
        if r < reset {
            Some(Fault::Reset)
        } else if r < limited {
            Some(Fault::Status(StatusCode::TOO_MANY_REQUESTS))
        } else if r < failed {
            let pick = self.rng.random_range(0..SERVER_ERRORS.len());
            Some(Fault::Status(SERVER_ERRORS[pick]))
        } else {
            None
        }
    }

    /// Whether the next streamed answer is cut off.
    pub(crate) fn truncate(&mut self, cfg: &MockConfig) -> bool {
        if self.truncate_next > 0 {
            self.truncate_next -= 1;
            return true;
        }
        let p = rate(cfg.truncate_rate);
        p > 0.0 && self.rng.random::<f64>() < p
    }
}

/// A rate as a usable probability: NaN and negatives count as zero.
fn rate(p: f64) -> f64 {
    if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) }
}

fn rng_from(seed: Option<u64>) -> StdRng {
    match seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => StdRng::from_os_rng(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_faults_come_first_and_in_order() {
        let cfg = MockConfig::default();
        let mut f = Faults::new(Some(1));
        f.fail_next(2, StatusCode::SERVICE_UNAVAILABLE);
        f.fail_next(1, StatusCode::TOO_MANY_REQUESTS);
        f.reset_next(1);
        let seen: Vec<_> = (0..5).map(|_| f.next(&cfg)).collect();
        assert_eq!(
            seen,
            vec![
                Some(Fault::Reset),
                Some(Fault::Status(StatusCode::SERVICE_UNAVAILABLE)),
                Some(Fault::Status(StatusCode::SERVICE_UNAVAILABLE)),
                Some(Fault::Status(StatusCode::TOO_MANY_REQUESTS)),
                None,
            ]
        );
        f.truncate_next(1);
        assert!(f.truncate(&cfg));
        assert!(!f.truncate(&cfg));
        f.fail_next(3, StatusCode::BAD_GATEWAY);
        f.clear();
        assert_eq!(f.next(&cfg), None);
    }

    #[test]
    fn random_faults_follow_rates_and_seed() {
        let cfg = MockConfig::default()
            .error_rate(0.2)
            .rate_limit_rate(0.1)
            .reset_rate(0.05);
        let draw = |seed| {
            let mut f = Faults::new(Some(seed));
            (0..10_000).map(|_| f.next(&cfg)).collect::<Vec<_>>()
        };
        let a = draw(42);
        assert_eq!(a, draw(42), "same seed, same sequence");
        assert_ne!(a, draw(43));
        let count = |pred: &dyn Fn(&Option<Fault>) -> bool| a.iter().filter(|f| pred(f)).count();
        let resets = count(&|f| *f == Some(Fault::Reset));
        let limited = count(&|f| *f == Some(Fault::Status(StatusCode::TOO_MANY_REQUESTS)));
        let errors = count(&|f| matches!(f, Some(Fault::Status(s)) if s.is_server_error()));
        assert!((350..650).contains(&resets), "{resets}");
        assert!((800..1200).contains(&limited), "{limited}");
        assert!((1700..2300).contains(&errors), "{errors}");
        for s in SERVER_ERRORS {
            assert!(a.contains(&Some(Fault::Status(s))));
        }
    }

    #[test]
    fn nonsense_rates_are_clamped() {
        let mut f = Faults::new(Some(3));
        let never = MockConfig::default().error_rate(f64::NAN).reset_rate(-1.0);
        assert!((0..100).all(|_| f.next(&never).is_none()));
        let always = MockConfig::default().error_rate(7.0);
        assert!((0..100).all(|_| f.next(&always).is_some()));
    }
}
