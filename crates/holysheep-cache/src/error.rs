//! The errors the cache adds. Store failures are never among them: a failing store is a miss.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use holysheep_core::BoxError;

/// An error shared by a leader and its followers: each gets it in its own chain.
pub(crate) type SharedError = Arc<dyn Error + Send + Sync + 'static>;

/// Shares `error` among a leader and its followers: the leader's own error becomes a thin
/// wrapper whose source is the shared one. With no follower there is nothing to share and the
/// leader keeps its error as it is (the flight gets its message).
pub(crate) fn share(error: BoxError, followers: usize) -> (BoxError, SharedError) {
    if followers == 0 {
        let message: SharedError = Arc::new(std::io::Error::other(error.to_string()));
        return (error, message);
    }
    let shared: SharedError = Arc::from(error);
    (Box::new(Shared(Arc::clone(&shared))), shared)
}

/// A leader's error, shared with its followers: displays as it, with it as its source, so every
/// check that walks the `source()` chain (the error class, a shed's `Retry-After`) reads it.
#[derive(Debug)]
struct Shared(SharedError);

impl fmt::Display for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Error for Shared {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.0)
    }
}

/// A coalesced request could not get the answer it was sharing.
///
/// Returned (boxed in a [`BoxError`]) to followers of a leader whose upstream call failed, and
/// as the body error of followers whose shared stream was cut. Its `source()` is the leader's
/// own error, so a follower is answered as its leader was: the same [`ErrorClass`], the same
/// status from [`error_response`] (a shed's `503` with its `Retry-After`, a timeout's `504`).
/// Callers can downcast to it.
///
/// [`ErrorClass`]: holysheep_core::error::ErrorClass
/// [`error_response`]: holysheep_core::error::error_response
#[derive(Debug, Clone)]
pub struct CoalesceError {
    kind: Kind,
    message: Arc<str>,
    source: Option<SharedError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    LeaderFailed,
    StreamFailed,
}

impl CoalesceError {
    pub(crate) fn leader_failed(source: SharedError) -> Self {
        Self {
            kind: Kind::LeaderFailed,
            message: Arc::from(source.to_string()),
            source: Some(source),
        }
    }

    pub(crate) fn stream_failed(source: SharedError) -> Self {
        Self {
            kind: Kind::StreamFailed,
            message: Arc::from(source.to_string()),
            source: Some(source),
        }
    }

    /// The shared upstream call failed before it answered; the message is the leader's error.
    pub fn is_leader_failed(&self) -> bool {
        self.kind == Kind::LeaderFailed
    }

    /// The shared answer's body failed or was abandoned midway.
    pub fn is_stream_failed(&self) -> bool {
        self.kind == Kind::StreamFailed
    }

    /// The underlying error's message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for CoalesceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::LeaderFailed => write!(f, "shared upstream call failed: {}", self.message),
            Kind::StreamFailed => write!(f, "shared upstream answer failed: {}", self.message),
        }
    }
}

impl Error for CoalesceError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> SharedError {
        Arc::new(std::io::Error::other(text.to_owned()))
    }

    #[test]
    fn kinds_and_display() {
        let e = CoalesceError::leader_failed(message("connection refused"));
        assert!(e.is_leader_failed() && !e.is_stream_failed());
        assert_eq!(
            e.to_string(),
            "shared upstream call failed: connection refused"
        );
        let e = CoalesceError::stream_failed(message("reset"));
        assert!(e.is_stream_failed());
        assert_eq!(e.message(), "reset");
    }

    /// Issue 18, item 5: a follower's error has its leader's in its chain, so it is answered
    /// alike.
    #[test]
    fn followers_see_the_leaders_error_in_their_chain() {
        use holysheep_core::error::{ErrorClass, Overloaded, error_response};
        let shed: BoxError = Overloaded::new(std::time::Duration::from_secs(3)).into();
        let (leader, shared) = share(shed, 2);
        let follower = CoalesceError::leader_failed(shared);
        for error in [&*leader, &follower as &(dyn Error + 'static)] {
            assert_eq!(ErrorClass::of(error), ErrorClass::Overload);
            let res = error_response(error);
            assert_eq!(res.status(), 503);
            assert_eq!(res.headers()["retry-after"], "3");
        }
        // Without followers the leader keeps its error untouched.
        let (alone, _) = share(std::io::Error::from(std::io::ErrorKind::TimedOut).into(), 0);
        assert!(alone.downcast_ref::<std::io::Error>().is_some());
    }
}
