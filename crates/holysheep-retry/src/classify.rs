//! Which answers and errors are transient, and so worth another attempt.

use std::error::Error;
use std::io;

use http::{HeaderMap, StatusCode};

/// Decides whether an attempt's outcome is a transient failure worth retrying.
///
/// The retry layer asks only this trait; replace it to retry more or less than
/// [`DefaultClassify`]. A `true` answer is a wish, not a promise: the retry count, the deadline
/// and the retry budget still have the last word.
pub trait Classify {
    /// Whether a response with this status and headers should be retried.
    ///
    /// Only the head is shown: once a response is retried its body is dropped unread.
    fn is_retryable_response(&self, status: StatusCode, headers: &HeaderMap) -> bool;

    /// Whether an error returned by the inner service should be retried.
    fn is_retryable_error(&self, error: &(dyn Error + 'static)) -> bool;
}

/// The default classification: transport faults before any answer, and the statuses that mean
/// "try again".
///
/// Responses: `408`, `429`, `500`, `502`, `503` and `504` are retried; no other status is
/// (other 4xx are the caller's mistake and would fail again).
///
/// Errors: the `source()` chain is walked, and the error is retried when it holds
/// - a [`std::io::Error`] of kind `ConnectionRefused`, `ConnectionReset`, `ConnectionAborted`,
///   `BrokenPipe`, `TimedOut`, `UnexpectedEof` or `NotConnected`;
/// - a [`hyper::Error`] that is an incomplete message, a closed connection or a canceled request
///   (the pooled connection died before an answer);
/// - a `tower` or `tokio` timeout `Elapsed` (a per-attempt timeout inside the retry layer).
///
/// Any other error is final. In particular the pool limit's `Overloaded` shed is not retried:
/// shedding must stay cheap, and retrying it would turn a refusal into more queueing.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassify;

impl DefaultClassify {
    /// Whether `kind` is an I/O failure that a fresh connection may not meet again.
    pub fn is_transient_io(kind: io::ErrorKind) -> bool {
        matches!(
            kind,
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::TimedOut
                | io::ErrorKind::UnexpectedEof
                | io::ErrorKind::NotConnected
        )
    }

    fn is_transient(error: &(dyn Error + 'static)) -> bool {
        if let Some(io) = error.downcast_ref::<io::Error>() {
            return Self::is_transient_io(io.kind());
        }
        if let Some(hyper) = error.downcast_ref::<hyper::Error>() {
            return hyper.is_incomplete_message() || hyper.is_closed() || hyper.is_canceled();
        }
        error.is::<tower::timeout::error::Elapsed>() || error.is::<tokio::time::error::Elapsed>()
    }
}

impl Classify for DefaultClassify {
    fn is_retryable_response(&self, status: StatusCode, _headers: &HeaderMap) -> bool {
        matches!(
            status,
            StatusCode::REQUEST_TIMEOUT
                | StatusCode::TOO_MANY_REQUESTS
                | StatusCode::INTERNAL_SERVER_ERROR
                | StatusCode::BAD_GATEWAY
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT
        )
    }

    fn is_retryable_error(&self, error: &(dyn Error + 'static)) -> bool {
        holysheep_core::error::chain(error).any(Self::is_transient)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[derive(Debug)]
    struct Outer(io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("client error")
        }
    }

    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn statuses() {
        let c = DefaultClassify;
        let h = HeaderMap::new();
        for code in [408, 429, 500, 502, 503, 504] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(c.is_retryable_response(status, &h), "{code}");
        }
        for code in [
            200, 201, 204, 301, 400, 401, 403, 404, 409, 413, 422, 501, 505,
        ] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(!c.is_retryable_response(status, &h), "{code}");
        }
    }

    #[test]
    fn io_errors_in_the_chain() {
        let c = DefaultClassify;
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::TimedOut,
            io::ErrorKind::UnexpectedEof,
        ] {
            assert!(
                c.is_retryable_error(&Outer(io::Error::from(kind))),
                "{kind:?}"
            );
        }
        assert!(!c.is_retryable_error(&Outer(io::Error::from(io::ErrorKind::PermissionDenied))));
        assert!(!c.is_retryable_error(&io::Error::other("unknown")));
    }

    #[test]
    fn timeouts_are_retried() {
        let c = DefaultClassify;
        assert!(c.is_retryable_error(&tower::timeout::error::Elapsed::new()));
    }

    #[test]
    fn unknown_errors_are_not_retried() {
        #[derive(Debug)]
        struct Overloaded;
        impl fmt::Display for Overloaded {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("overloaded")
            }
        }
        impl Error for Overloaded {}
        assert!(!DefaultClassify.is_retryable_error(&Overloaded));
    }
}
