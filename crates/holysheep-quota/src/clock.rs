//! Wall-clock time for the windows, moving with tokio's clock so tests can pause it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Milliseconds since the Unix epoch, as [`QuotaLayer`](crate::QuotaLayer) reads them: the
/// system time when the clock was made, advanced by tokio's monotonic clock since. A step of
/// the system clock therefore does not move the windows, and a test with paused tokio time
/// moves them with `tokio::time::advance`.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin_unix_ms: f64,
    origin: Instant,
}

impl Clock {
    /// A clock starting at the system time now.
    pub fn system() -> Self {
        Self::starting_at(SystemTime::now())
    }

    /// A clock that reads `at` now and moves with tokio's clock from here (for tests: the
    /// daily and monthly budgets are calendar windows).
    pub fn starting_at(at: SystemTime) -> Self {
        let since = at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        Self {
            origin_unix_ms: since.as_secs_f64() * 1000.0,
            origin: Instant::now(),
        }
    }

    /// Milliseconds since the Unix epoch now.
    pub fn now_ms(&self) -> f64 {
        self.origin_unix_ms + self.origin.elapsed().as_secs_f64() * 1000.0
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}
