//! One classification of failures for every layer: [`ErrorClass`] for errors, [`AnswerClass`]
//! for answers.

use std::error::Error;
use std::fmt;
use std::io;

use http::{HeaderMap, StatusCode};

use super::{DeadlineExceeded, Overloaded, chain};

/// What kind of failure an error is: the one vocabulary of the layers.
///
/// `RetryLayer` retries the [transient](Self::is_transient) classes, `MetricsLayer` labels
/// `holysheep_errors_total{class}` with [`as_str`](Self::as_str) (and counts
/// [`Overload`](Self::Overload) in `holysheep_shed_total`), and
/// [`error_response`](super::error_response) picks the status a gateway answers with.
///
/// [`of`](Self::of) walks the error and its `source()` [`chain`](super::chain), outermost
/// first, and takes the first error it recognises; messages (`Display`) are never looked at.
/// A layer that sheds or times out says so with [`Overloaded`] or [`DeadlineExceeded`], and a
/// transport failure keeps its [`std::io::Error`] or [`hyper::Error`] in the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorClass {
    /// Shed because a service was at capacity: [`Overloaded`], or tower's load-shed
    /// `Overloaded`. Nothing reached the upstream.
    Overload,
    /// The overall deadline of the call passed: [`DeadlineExceeded`].
    Deadline,
    /// One step timed out: connecting, waiting for the response head, reading the body, or a
    /// per-attempt timeout. tower's and tokio's `Elapsed`, an [`io::Error`] of kind `TimedOut`,
    /// a [`hyper::Error`] caused by a timeout.
    Timeout,
    /// The upstream could not be reached, or the connection broke before the answer ended: an
    /// [`io::Error`] of kind `ConnectionRefused`, `ConnectionReset`, `ConnectionAborted`,
    /// `NotConnected`, `AddrNotAvailable`, `BrokenPipe`, `HostUnreachable`,
    /// `NetworkUnreachable`, `NetworkDown` or `UnexpectedEof`; a [`hyper::Error`] that is an
    /// incomplete message, a closed connection or a canceled request.
    Connect,
    /// Anything else.
    Other,
}

impl ErrorClass {
    /// The class of `error`: that of the first error in its `source()` chain that is
    /// recognised, [`Other`](Self::Other) if none is.
    ///
    /// ```
    /// use std::io;
    /// use holysheep_core::BoxError;
    /// use holysheep_core::error::ErrorClass;
    ///
    /// let reset: BoxError = io::Error::from(io::ErrorKind::ConnectionReset).into();
    /// assert_eq!(ErrorClass::of(&*reset), ErrorClass::Connect);
    /// assert!(ErrorClass::of(&*reset).is_transient());
    /// assert_eq!(ErrorClass::of(&io::Error::other("no idea")), ErrorClass::Other);
    /// ```
    pub fn of(error: &(dyn Error + 'static)) -> Self {
        chain(error).find_map(Self::one).unwrap_or(Self::Other)
    }

    /// The class of this one error, without its sources.
    fn one(error: &(dyn Error + 'static)) -> Option<Self> {
        if error.is::<Overloaded>() || error.is::<tower::load_shed::error::Overloaded>() {
            return Some(Self::Overload);
        }
        if error.is::<DeadlineExceeded>() {
            return Some(Self::Deadline);
        }
        if error.is::<tower::timeout::error::Elapsed>() || error.is::<tokio::time::error::Elapsed>()
        {
            return Some(Self::Timeout);
        }
        if let Some(io) = error.downcast_ref::<io::Error>() {
            return Self::of_io(io.kind());
        }
        if let Some(hyper) = error.downcast_ref::<hyper::Error>() {
            if hyper.is_timeout() {
                return Some(Self::Timeout);
            }
            if hyper.is_incomplete_message() || hyper.is_closed() || hyper.is_canceled() {
                return Some(Self::Connect);
            }
        }
        None
    }

    fn of_io(kind: io::ErrorKind) -> Option<Self> {
        use io::ErrorKind as K;
        match kind {
            K::TimedOut => Some(Self::Timeout),
            K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::AddrNotAvailable
            | K::BrokenPipe
            | K::HostUnreachable
            | K::NetworkUnreachable
            | K::NetworkDown
            | K::UnexpectedEof => Some(Self::Connect),
            _ => None,
        }
    }

    /// The label value: `overload`, `deadline`, `timeout`, `connect` or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Overload => "overload",
            Self::Deadline => "deadline",
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Other => "other",
        }
    }

    /// Whether another attempt may succeed where this one failed: what a retry may repeat.
    ///
    /// [`Timeout`](Self::Timeout) and [`Connect`](Self::Connect) are transient. An
    /// [`Overload`](Self::Overload) shed is not (retrying it would turn a cheap refusal into
    /// more queueing), nor is a passed [`Deadline`](Self::Deadline) or an unknown error.
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Timeout | Self::Connect)
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an answer's head says about the call: its HTTP status and, for gRPC, a trailers-only
/// `grpc-status` header.
///
/// `RetryLayer` retries the [transient](Self::is_transient) classes, and the adaptive
/// `PoolLimitLayer` takes them as signs of an overloaded upstream.
///
/// A gRPC status is read only when the HTTP status is a success (a proxy's `503` speaks for
/// itself); it counts as the HTTP status that gRPC gateways map it to: `UNAVAILABLE` as `503`,
/// `RESOURCE_EXHAUSTED` as `429`, `DEADLINE_EXCEEDED` as `504`, `UNKNOWN`, `INTERNAL`,
/// `DATA_LOSS` and unknown codes as `500`, `UNIMPLEMENTED` as `501`, `CANCELLED` as `499`,
/// and the codes that blame the request (`INVALID_ARGUMENT`, `NOT_FOUND`, `ALREADY_EXISTS`,
/// `PERMISSION_DENIED`, `FAILED_PRECONDITION`, `ABORTED`, `OUT_OF_RANGE`, `UNAUTHENTICATED`)
/// as the matching 4xx. gRPC statuses sent in trailers after a body are not seen: a head-only
/// classification cannot wait for them.
///
/// ```
/// use holysheep_core::error::AnswerClass;
/// use http::{HeaderMap, HeaderValue, StatusCode};
///
/// let none = HeaderMap::new();
/// assert_eq!(AnswerClass::of(StatusCode::OK, &none), AnswerClass::Success);
/// assert_eq!(AnswerClass::of(StatusCode::TOO_MANY_REQUESTS, &none), AnswerClass::Overload);
/// assert_eq!(AnswerClass::of(StatusCode::NOT_FOUND, &none), AnswerClass::Rejected);
///
/// let mut unavailable = HeaderMap::new();
/// unavailable.insert("grpc-status", HeaderValue::from_static("14"));
/// let class = AnswerClass::of(StatusCode::OK, &unavailable);
/// assert_eq!(class, AnswerClass::Overload);
/// assert!(class.is_transient());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AnswerClass {
    /// `1xx`, `2xx` and `3xx`, with no failing gRPC status.
    Success,
    /// The upstream will not serve this request as it is, and another attempt would meet the
    /// same answer: `4xx` other than `408` and `429`, `501 Not Implemented` and
    /// `505 HTTP Version Not Supported`.
    Rejected,
    /// The upstream is at capacity: `429 Too Many Requests` and `503 Service Unavailable`.
    Overload,
    /// The upstream, or a proxy in front of it, timed out: `408 Request Timeout` and
    /// `504 Gateway Timeout`.
    Timeout,
    /// The upstream failed in a way that may pass: `500`, `502` and every other status not
    /// named above.
    ServerError,
}

impl AnswerClass {
    /// The class of an answer with this status and these headers.
    pub fn of(status: StatusCode, headers: &HeaderMap) -> Self {
        let grpc = || {
            headers
                .get(GRPC_STATUS)
                .map(|code| grpc_as_http(code.as_bytes()))
        };
        match Self::of_status(status) {
            Self::Success => grpc().map_or(Self::Success, Self::of_status),
            class => class,
        }
    }

    fn of_status(status: StatusCode) -> Self {
        match status.as_u16() {
            100..=399 => Self::Success,
            408 | 504 => Self::Timeout,
            429 | 503 => Self::Overload,
            400..=499 | 501 | 505 => Self::Rejected,
            _ => Self::ServerError,
        }
    }

    /// Whether the answer is a success.
    pub fn is_success(self) -> bool {
        self == Self::Success
    }

    /// Whether another attempt may be answered better, because the upstream was overloaded,
    /// slow or failing: [`Overload`](Self::Overload), [`Timeout`](Self::Timeout) and
    /// [`ServerError`](Self::ServerError). What a retry may repeat, and what an adaptive
    /// limit backs off from.
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Overload | Self::Timeout | Self::ServerError)
    }

    /// A short lower-case name, fit for a log field or a metric label: `success`,
    /// `rejected`, `overload`, `timeout` or `server_error`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Rejected => "rejected",
            Self::Overload => "overload",
            Self::Timeout => "timeout",
            Self::ServerError => "server_error",
        }
    }
}

impl fmt::Display for AnswerClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The header of a trailers-only gRPC answer that carries its status code.
const GRPC_STATUS: &str = "grpc-status";

/// The HTTP status a gRPC code maps to (as gRPC gateways map them); a code that is not a
/// number, or not one gRPC defines, is `UNKNOWN`, hence `500`.
fn grpc_as_http(code: &[u8]) -> StatusCode {
    let code = std::str::from_utf8(code)
        .ok()
        .and_then(|code| code.parse::<u8>().ok());
    let http = match code {
        Some(0) => 200,
        Some(1) => 499,
        Some(3 | 9 | 11) => 400,
        Some(4) => 504,
        Some(5) => 404,
        Some(6 | 10) => 409,
        Some(7) => 403,
        Some(8) => 429,
        Some(12) => 501,
        Some(14) => 503,
        Some(16) => 401,
        // 2 UNKNOWN, 13 INTERNAL, 15 DATA_LOSS, and anything gRPC does not define.
        _ => 500,
    };
    StatusCode::from_u16(http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::error::tests::Wrap;

    /// `error` two wrappers deep.
    fn wrapped(error: impl Error + Send + Sync + 'static) -> Wrap {
        crate::error::tests::wrapped(crate::error::tests::wrapped(error))
    }

    #[test]
    fn layer_errors_anywhere_in_the_chain() {
        let shed = Overloaded::new(Duration::from_secs(1));
        assert_eq!(ErrorClass::of(&wrapped(shed)), ErrorClass::Overload);
        let tower_shed = tower::load_shed::error::Overloaded::new();
        assert_eq!(ErrorClass::of(&wrapped(tower_shed)), ErrorClass::Overload);
        let late = DeadlineExceeded::new(Duration::from_secs(1));
        assert_eq!(ErrorClass::of(&wrapped(late)), ErrorClass::Deadline);
        let elapsed = tower::timeout::error::Elapsed::new();
        assert_eq!(ErrorClass::of(&wrapped(elapsed)), ErrorClass::Timeout);
    }

    #[tokio::test]
    async fn tokio_timeouts() {
        let elapsed = tokio::time::timeout(Duration::ZERO, std::future::pending::<()>())
            .await
            .unwrap_err();
        assert_eq!(ErrorClass::of(&wrapped(elapsed)), ErrorClass::Timeout);
    }

    #[test]
    fn io_kinds() {
        use io::ErrorKind as K;
        let class = |kind: K| ErrorClass::of(&wrapped(io::Error::from(kind)));
        assert_eq!(class(K::TimedOut), ErrorClass::Timeout);
        for kind in [
            K::ConnectionRefused,
            K::ConnectionReset,
            K::ConnectionAborted,
            K::NotConnected,
            K::AddrNotAvailable,
            K::BrokenPipe,
            K::HostUnreachable,
            K::NetworkUnreachable,
            K::NetworkDown,
            K::UnexpectedEof,
        ] {
            assert_eq!(class(kind), ErrorClass::Connect, "{kind:?}");
            assert!(class(kind).is_transient());
        }
        for kind in [K::PermissionDenied, K::InvalidData, K::Other] {
            assert_eq!(class(kind), ErrorClass::Other, "{kind:?}");
        }
    }

    #[test]
    fn the_outermost_recognised_error_wins() {
        let timed_out = io::Error::new(io::ErrorKind::TimedOut, Overloaded::new(Duration::ZERO));
        assert_eq!(ErrorClass::of(&wrapped(timed_out)), ErrorClass::Timeout);
        // An unrecognised io kind lets the walk go on into what it wraps.
        let inner = io::Error::other(DeadlineExceeded::new(Duration::from_secs(1)));
        assert_eq!(ErrorClass::of(&inner), ErrorClass::Deadline);
    }

    #[test]
    fn messages_are_never_read() {
        let error = io::Error::other("connection refused: timed out, overloaded");
        assert_eq!(ErrorClass::of(&error), ErrorClass::Other);
        assert!(!ErrorClass::Other.is_transient());
        assert!(!ErrorClass::Overload.is_transient());
        assert!(!ErrorClass::Deadline.is_transient());
    }

    #[test]
    fn labels() {
        let all = [
            ErrorClass::Overload,
            ErrorClass::Deadline,
            ErrorClass::Timeout,
            ErrorClass::Connect,
            ErrorClass::Other,
        ];
        let labels: Vec<_> = all.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            labels,
            ["overload", "deadline", "timeout", "connect", "other"]
        );
    }

    fn status(code: u16) -> AnswerClass {
        AnswerClass::of(StatusCode::from_u16(code).unwrap(), &HeaderMap::new())
    }

    fn grpc(code: &'static str) -> AnswerClass {
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_STATUS, http::HeaderValue::from_static(code));
        AnswerClass::of(StatusCode::OK, &headers)
    }

    #[test]
    fn http_statuses() {
        for code in [100, 200, 201, 204, 301, 304] {
            assert_eq!(status(code), AnswerClass::Success, "{code}");
        }
        for code in [400, 401, 403, 404, 409, 413, 422, 499, 501, 505] {
            assert_eq!(status(code), AnswerClass::Rejected, "{code}");
        }
        for code in [408, 504] {
            assert_eq!(status(code), AnswerClass::Timeout, "{code}");
        }
        for code in [429, 503] {
            assert_eq!(status(code), AnswerClass::Overload, "{code}");
        }
        for code in [500, 502, 507, 520, 599, 600] {
            assert_eq!(status(code), AnswerClass::ServerError, "{code}");
        }
        let transient: Vec<u16> = (100..=505).filter(|&c| status(c).is_transient()).collect();
        assert_eq!(transient, [408, 429, 500, 502, 503, 504]);
    }

    #[test]
    fn grpc_trailers_only_statuses() {
        assert_eq!(grpc("0"), AnswerClass::Success);
        assert_eq!(grpc("14"), AnswerClass::Overload);
        assert_eq!(grpc("8"), AnswerClass::Overload);
        assert_eq!(grpc("4"), AnswerClass::Timeout);
        for code in ["2", "13", "15", "17", "nope"] {
            assert_eq!(grpc(code), AnswerClass::ServerError, "{code}");
        }
        for code in ["1", "3", "5", "6", "7", "9", "10", "11", "12", "16"] {
            assert_eq!(grpc(code), AnswerClass::Rejected, "{code}");
            assert!(!grpc(code).is_transient());
        }
        // An HTTP failure from a proxy speaks for itself, whatever the gRPC header says.
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_STATUS, http::HeaderValue::from_static("0"));
        assert_eq!(
            AnswerClass::of(StatusCode::SERVICE_UNAVAILABLE, &headers),
            AnswerClass::Overload
        );
    }
}
