//! Errors the retry layer adds to those of the inner service.

use std::error::Error;
use std::fmt;
use std::time::Duration;

/// The overall deadline passed while an attempt was still in flight.
///
/// The attempt is dropped (its connection is released by the inner service) and the whole call
/// fails with this error. A gateway usually answers it with `504 Gateway Timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlineExceeded {
    deadline: Duration,
}

impl DeadlineExceeded {
    pub(crate) fn new(deadline: Duration) -> Self {
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
            "request did not complete within its retry deadline of {:?}",
            self.deadline
        )
    }
}

impl Error for DeadlineExceeded {}

/// Whether `error`, or any error in its `source()` chain, is a [`DeadlineExceeded`].
///
/// Layers outside may wrap the error, so this walks the chain rather than only downcasting the
/// outermost error.
pub fn is_deadline(error: &(dyn Error + 'static)) -> bool {
    holysheep_core::error::find_in_chain::<DeadlineExceeded>(error).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(DeadlineExceeded);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }

    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn is_deadline_walks_the_chain() {
        let err = DeadlineExceeded::new(Duration::from_secs(60));
        assert!(is_deadline(&err));
        assert!(is_deadline(&Wrapper(err)));
        let other = std::io::Error::other("boom");
        assert!(!is_deadline(&other));
        assert!(err.to_string().contains("60s"));
    }
}
