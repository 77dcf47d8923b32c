//! The errors the cache adds. Store failures are never among them: a failing store is a miss.

use std::fmt;
use std::sync::Arc;

/// A coalesced request could not get the answer it was sharing.
///
/// Returned (boxed in a [`BoxError`](holysheep_core::BoxError)) to followers of a leader whose
/// upstream call failed, and as the body error of followers whose shared stream was cut. Callers
/// can downcast to it.
#[derive(Debug, Clone)]
pub struct CoalesceError {
    kind: Kind,
    message: Arc<str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    LeaderFailed,
    StreamFailed,
}

impl CoalesceError {
    pub(crate) fn leader_failed(message: Arc<str>) -> Self {
        Self {
            kind: Kind::LeaderFailed,
            message,
        }
    }

    pub(crate) fn stream_failed(message: Arc<str>) -> Self {
        Self {
            kind: Kind::StreamFailed,
            message,
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

impl std::error::Error for CoalesceError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_display() {
        let e = CoalesceError::leader_failed(Arc::from("connection refused"));
        assert!(e.is_leader_failed() && !e.is_stream_failed());
        assert_eq!(
            e.to_string(),
            "shared upstream call failed: connection refused"
        );
        let e = CoalesceError::stream_failed(Arc::from("reset"));
        assert!(e.is_stream_failed());
        assert_eq!(e.message(), "reset");
    }
}
