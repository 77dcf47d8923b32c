//! Wall-clock time for the windows, moving with tokio's clock so tests can pause it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Milliseconds since the Unix epoch, as [`QuotaLayer`](crate::QuotaLayer) reads them: the
/// system time when the clock was made, advanced by tokio's monotonic clock since. A step of
/// the system clock therefore does not move the windows, and a test with paused tokio time
/// moves them with `tokio::time::advance`.
///
/// A [`manual`](Self::manual) clock moves only when told, for tests whose requests go over a
/// real network (where paused tokio time would fire every timeout at once).
#[derive(Debug, Clone)]
pub struct Clock {
    origin_unix_ms: f64,
    origin: Instant,
    /// Microseconds a manual clock was advanced by.
    manual: Option<Arc<AtomicU64>>,
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
            manual: None,
        }
    }

    /// A clock that reads `at` until [`advance`](Self::advance)d; its clones share it.
    pub fn manual(at: SystemTime) -> Self {
        Self {
            manual: Some(Arc::default()),
            ..Self::starting_at(at)
        }
    }

    /// Moves a [`manual`](Self::manual) clock (and its clones) on by `by`; other clocks
    /// follow tokio's clock and ignore this.
    pub fn advance(&self, by: Duration) {
        if let Some(m) = &self.manual {
            let micros = u64::try_from(by.as_micros()).unwrap_or(u64::MAX);
            m.fetch_add(micros, Ordering::Relaxed);
        }
    }

    /// Milliseconds since the Unix epoch now.
    pub fn now_ms(&self) -> f64 {
        match &self.manual {
            Some(m) => self.origin_unix_ms + m.load(Ordering::Relaxed) as f64 / 1000.0,
            None => self.origin_unix_ms + self.origin.elapsed().as_secs_f64() * 1000.0,
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}
