//! The error the pool limit adds: a shed request.

use std::error::Error;
use std::fmt;
use std::time::Duration;

/// The request was shed because the pool was full: the queue was at its depth bound, or the
/// request waited its whole queue timeout without getting a slot.
///
/// It is returned without waiting and without touching the upstream. A gateway usually answers
/// it with `503 Service Unavailable` and a `Retry-After` of [`retry_after`](Self::retry_after).
/// The retry layer does not retry it: shedding must stay cheap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded {
    retry_after: Duration,
    queue_full: bool,
}

impl Overloaded {
    pub(crate) fn new(retry_after: Duration, queue_full: bool) -> Self {
        Self {
            retry_after,
            queue_full,
        }
    }

    /// How long the caller should wait before trying again.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// `true` when the queue was at its depth bound (shed at once), `false` when the request
    /// waited its whole queue timeout.
    pub fn is_queue_full(&self) -> bool {
        self.queue_full
    }
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = if self.queue_full {
            "the queue is full"
        } else {
            "no slot freed within the queue timeout"
        };
        write!(
            f,
            "upstream pool overloaded ({why}); retry after {}s",
            self.retry_after.as_secs_f64().ceil()
        )
    }
}

impl Error for Overloaded {}

/// Whether `error`, or any error in its `source()` chain, is an [`Overloaded`] shed.
pub fn is_overloaded(error: &(dyn Error + 'static)) -> bool {
    overloaded(error).is_some()
}

/// The [`Overloaded`] in `error`'s `source()` chain, if any, to read its retry delay.
pub fn overloaded(error: &(dyn Error + 'static)) -> Option<Overloaded> {
    holysheep_core::error::find_in_chain::<Overloaded>(error).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_helpers() {
        let err = Overloaded::new(Duration::from_millis(1500), true);
        assert_eq!(
            err.to_string(),
            "upstream pool overloaded (the queue is full); retry after 2s"
        );
        assert!(is_overloaded(&err));
        assert_eq!(
            overloaded(&err).unwrap().retry_after(),
            Duration::from_millis(1500)
        );
        assert!(!is_overloaded(&std::io::Error::other("x")));
        let boxed: Box<dyn Error + Send + Sync> = Box::new(err);
        assert!(is_overloaded(&*boxed));
    }
}
