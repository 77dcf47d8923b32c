//! The two failures the layers make themselves: a shed and a passed deadline.

use std::error::Error;
use std::fmt;
use std::time::Duration;

use super::{ErrorClass, find_in_chain};

/// The request was shed because the service was at capacity: it never reached the upstream.
///
/// `PoolLimitLayer` sheds with it when its queue is full or a request waited its whole queue
/// timeout; any other layer may shed with it too. It is classified as
/// [`ErrorClass::Overload`], so `MetricsLayer` counts it in `holysheep_shed_total`, `RetryLayer`
/// does not retry it (shedding must stay cheap), and [`error_response`](super::error_response)
/// answers `503 Service Unavailable` with a `Retry-After` of [`retry_after`](Self::retry_after).
///
/// ```
/// use std::time::Duration;
/// use holysheep_core::error::{ErrorClass, Overloaded};
///
/// let shed = Overloaded::new(Duration::from_millis(1500)).with_queue_full(true);
/// assert_eq!(ErrorClass::of(&shed), ErrorClass::Overload);
/// assert_eq!(shed.to_string(), "overloaded (the queue is full); retry after 2s");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded {
    retry_after: Duration,
    queue_full: bool,
}

impl Overloaded {
    /// A shed that asks the caller to come back after `retry_after`.
    pub fn new(retry_after: Duration) -> Self {
        Self {
            retry_after,
            queue_full: false,
        }
    }

    /// Says whether the request was shed at once because the queue was at its bound (`true`),
    /// rather than after waiting its turn in vain (`false`, the default).
    pub fn with_queue_full(mut self, queue_full: bool) -> Self {
        self.queue_full = queue_full;
        self
    }

    /// How long the caller should wait before trying again.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// `true` when the queue was at its bound (shed at once), `false` when the request waited
    /// for capacity that did not free in time.
    pub fn is_queue_full(&self) -> bool {
        self.queue_full
    }
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("overloaded")?;
        if self.queue_full {
            f.write_str(" (the queue is full)")?;
        }
        write!(
            f,
            "; retry after {}s",
            self.retry_after.as_secs_f64().ceil()
        )
    }
}

impl Error for Overloaded {}

/// The overall deadline of a call passed while an attempt was still in flight.
///
/// `RetryLayer` fails with it when its deadline passes; any other layer may time out with it
/// too. It is classified as [`ErrorClass::Deadline`]; [`error_response`](super::error_response)
/// answers `504 Gateway Timeout`.
///
/// ```
/// use std::time::Duration;
/// use holysheep_core::error::{DeadlineExceeded, ErrorClass};
///
/// let late = DeadlineExceeded::new(Duration::from_secs(60));
/// assert_eq!(ErrorClass::of(&late), ErrorClass::Deadline);
/// assert_eq!(late.deadline(), Duration::from_secs(60));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlineExceeded {
    deadline: Duration,
}

impl DeadlineExceeded {
    /// The deadline `deadline`, measured from the call, passed.
    pub fn new(deadline: Duration) -> Self {
        Self { deadline }
    }

    /// The deadline that passed, measured from the call.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request did not complete within its deadline of {:?}",
            self.deadline
        )
    }
}

impl Error for DeadlineExceeded {}

/// Whether `error` is an overload shed: its [`ErrorClass`] is [`Overload`](ErrorClass::Overload)
/// (an [`Overloaded`] or tower's load-shed error, anywhere in its `source()` chain).
///
/// To read the shed's retry delay, find it with
/// [`find_in_chain::<Overloaded>`](super::find_in_chain).
pub fn is_overloaded(error: &(dyn Error + 'static)) -> bool {
    ErrorClass::of(error) == ErrorClass::Overload
}

/// Whether `error` is a passed deadline: its [`ErrorClass`] is
/// [`Deadline`](ErrorClass::Deadline) (a [`DeadlineExceeded`] anywhere in its `source()` chain).
pub fn is_deadline(error: &(dyn Error + 'static)) -> bool {
    ErrorClass::of(error) == ErrorClass::Deadline
}

/// The retry delay of the first [`Overloaded`] in `error`'s chain, if any.
pub(crate) fn shed_retry_after(error: &(dyn Error + 'static)) -> Option<Duration> {
    find_in_chain::<Overloaded>(error).map(Overloaded::retry_after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::tests::wrapped;

    #[test]
    fn overloaded_display_and_helpers() {
        let err = Overloaded::new(Duration::from_millis(1500)).with_queue_full(true);
        assert_eq!(
            err.to_string(),
            "overloaded (the queue is full); retry after 2s"
        );
        assert!(err.is_queue_full());
        assert_eq!(
            Overloaded::new(Duration::from_secs(1)).to_string(),
            "overloaded; retry after 1s"
        );
        assert!(is_overloaded(&err));
        assert!(!is_deadline(&err));
        let boxed: Box<dyn Error + Send + Sync> = Box::new(err);
        assert!(is_overloaded(&*boxed));
        let outer = wrapped(boxed);
        assert!(is_overloaded(&outer));
        assert_eq!(shed_retry_after(&outer), Some(Duration::from_millis(1500)));
        assert!(!is_overloaded(&std::io::Error::other("x")));
        assert_eq!(shed_retry_after(&std::io::Error::other("x")), None);
    }

    #[test]
    fn deadline_display_and_helpers() {
        let err = DeadlineExceeded::new(Duration::from_secs(60));
        assert!(is_deadline(&err));
        assert!(is_deadline(&wrapped(err)));
        assert!(!is_overloaded(&err));
        assert!(!is_deadline(&std::io::Error::other("boom")));
        assert!(err.to_string().contains("60s"));
    }
}
