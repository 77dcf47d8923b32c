//! Which answers and errors are transient, and so worth another attempt.

use std::error::Error;

use holysheep_core::error::{AnswerClass, ErrorClass};
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

/// The default classification: what the project's one classification of failures calls
/// transient.
///
/// Responses: those whose [`AnswerClass`] is transient are retried: `408`, `429`, `500`,
/// `502`, `503`, `504` and the other server errors but `501` and `505`, and gRPC trailers-only
/// answers whose status maps to one of those (`UNAVAILABLE`, `RESOURCE_EXHAUSTED`,
/// `DEADLINE_EXCEEDED`, `UNKNOWN`, `INTERNAL`, `DATA_LOSS`). Other 4xx are the caller's
/// mistake and would fail again.
///
/// Errors: those whose [`ErrorClass`] is transient are retried: timeouts (tower's or tokio's
/// `Elapsed` of a per-attempt timeout inside the retry layer, an I/O `TimedOut`) and connect
/// faults (a refused, reset or broken connection, or a [`hyper::Error`] for a connection that
/// died before its answer), anywhere in the error's `source()` chain.
///
/// Any other error is final. In particular an [`Overloaded`](holysheep_core::error::Overloaded)
/// shed (from the pool limit) is not retried: shedding must stay cheap, and retrying it would
/// turn a refusal into more queueing.
///
/// [`hyper::Error`]: https://docs.rs/hyper/1/hyper/struct.Error.html
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassify;

impl Classify for DefaultClassify {
    fn is_retryable_response(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        AnswerClass::of(status, headers).is_transient()
    }

    fn is_retryable_error(&self, error: &(dyn Error + 'static)) -> bool {
        ErrorClass::of(error).is_transient()
    }
}

/// The classification for gRPC calls: retries only what the server turned away, as gRPC
/// clients do.
///
/// A gRPC method is not, as a rule, safe to run twice, so an answer is retried only when its
/// [`AnswerClass`] is [`Overload`](AnswerClass::Overload): a trailers-only `UNAVAILABLE` or
/// `RESOURCE_EXHAUSTED`, or a proxy's `429` or `503` in front of the server. Unlike
/// [`DefaultClassify`], `DEADLINE_EXCEEDED`, `UNKNOWN`, `INTERNAL` and `DATA_LOSS` are final,
/// and so is every gRPC status sent in trailers after a body (only the head is classified).
///
/// Errors are retried as [`DefaultClassify`] retries them: transport faults and timeouts
/// before any answer.
///
/// See the [crate docs](crate#grpc-and-tonic) for wrapping a tonic `Channel`.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcClassify;

impl Classify for GrpcClassify {
    fn is_retryable_response(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        AnswerClass::of(status, headers) == AnswerClass::Overload
    }

    fn is_retryable_error(&self, error: &(dyn Error + 'static)) -> bool {
        DefaultClassify.is_retryable_error(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;
    use std::io;
    use std::time::Duration;

    use http::HeaderValue;

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

    fn grpc(code: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static(code));
        headers
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
    fn sheds_deadlines_and_unknown_errors_are_not_retried() {
        use holysheep_core::error::{DeadlineExceeded, Overloaded};
        let shed = Overloaded::new(Duration::from_secs(1));
        let late = DeadlineExceeded::new(Duration::from_secs(1));
        for c in [&DefaultClassify as &dyn Classify, &GrpcClassify] {
            assert!(!c.is_retryable_error(&shed));
            assert!(!c.is_retryable_error(&late));
            assert!(!c.is_retryable_error(&io::Error::other("overloaded")));
        }
    }

    #[test]
    fn grpc_answers() {
        let ok = StatusCode::OK;
        for code in ["14", "8"] {
            assert!(
                DefaultClassify.is_retryable_response(ok, &grpc(code)),
                "{code}"
            );
            assert!(
                GrpcClassify.is_retryable_response(ok, &grpc(code)),
                "{code}"
            );
        }
        // The server may have run these: only the HTTP-minded default retries them.
        for code in ["4", "2", "13", "15"] {
            assert!(
                DefaultClassify.is_retryable_response(ok, &grpc(code)),
                "{code}"
            );
            assert!(
                !GrpcClassify.is_retryable_response(ok, &grpc(code)),
                "{code}"
            );
        }
        for code in ["0", "3", "5", "7", "12", "16"] {
            assert!(
                !DefaultClassify.is_retryable_response(ok, &grpc(code)),
                "{code}"
            );
            assert!(
                !GrpcClassify.is_retryable_response(ok, &grpc(code)),
                "{code}"
            );
        }
        let none = HeaderMap::new();
        assert!(GrpcClassify.is_retryable_response(StatusCode::SERVICE_UNAVAILABLE, &none));
        assert!(!GrpcClassify.is_retryable_response(StatusCode::BAD_GATEWAY, &none));
        let reset = Outer(io::Error::from(io::ErrorKind::ConnectionReset));
        assert!(GrpcClassify.is_retryable_error(&reset));
    }
}
