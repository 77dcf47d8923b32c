//! The stack's errors as OpenAI-style HTTP answers.

use std::error::Error;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::types::shed_retry_after;
use super::{ErrorBody, ErrorClass};

/// The answer for a call that failed without an upstream answer to pass on: an OpenAI-style
/// JSON error whose status follows the error's [`ErrorClass`].
///
/// | class | status | `error.code` |
/// |---|---|---|
/// | [`Overload`](ErrorClass::Overload) | `503`, with `Retry-After` | `overloaded` |
/// | [`Deadline`](ErrorClass::Deadline) | `504` | `deadline_exceeded` |
/// | [`Timeout`](ErrorClass::Timeout) | `504` | `upstream_timeout` |
/// | [`Connect`](ErrorClass::Connect) | `502` | `upstream_unreachable` |
/// | anything else | `502` | `upstream_error` |
///
/// `error.type` is always `server_error`. `Retry-After` is the shed's
/// [`retry_after`](super::Overloaded::retry_after) in whole seconds, rounded up so a client
/// never comes back too early, and at least 1 (also for a shed that suggests no delay).
///
/// The message names the kind of failure only, never the error's own text, so no upstream
/// detail (a URL, a header) reaches the caller; log the error itself. The [`ErrorClass`] is
/// put in the response's extensions, for a log line to say what happened.
///
/// ```
/// use std::time::Duration;
/// use holysheep_core::BoxError;
/// use holysheep_core::error::{ErrorClass, Overloaded, error_response};
///
/// let shed: BoxError = Overloaded::new(Duration::from_millis(1500)).into();
/// let res = error_response(&*shed);
/// assert_eq!(res.status(), 503);
/// assert_eq!(res.headers()["retry-after"], "2");
/// assert_eq!(res.extensions().get::<ErrorClass>(), Some(&ErrorClass::Overload));
/// ```
pub fn error_response(error: &(dyn Error + 'static)) -> Response<Bytes> {
    let class = ErrorClass::of(error);
    let (status, message, code) = match class {
        ErrorClass::Overload => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many requests are waiting for the upstream. Please retry shortly.",
            "overloaded",
        ),
        ErrorClass::Deadline => (
            StatusCode::GATEWAY_TIMEOUT,
            "The upstream did not answer within the request deadline.",
            "deadline_exceeded",
        ),
        ErrorClass::Timeout => (
            StatusCode::GATEWAY_TIMEOUT,
            "The upstream did not answer in time.",
            "upstream_timeout",
        ),
        ErrorClass::Connect => (
            StatusCode::BAD_GATEWAY,
            "The upstream could not be reached, or the connection broke before its answer.",
            "upstream_unreachable",
        ),
        ErrorClass::Other => (
            StatusCode::BAD_GATEWAY,
            "No answer could be had from the upstream.",
            "upstream_error",
        ),
    };
    let mut response = ErrorBody::new(message, "server_error")
        .with_code(code)
        .into_response(status);
    if class == ErrorClass::Overload {
        let delay = shed_retry_after(error).unwrap_or(Duration::ZERO);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after(delay));
    }
    response.extensions_mut().insert(class);
    response
}

/// Whole seconds, rounded up so a client never comes back too early; at least 1.
fn retry_after(delay: Duration) -> HeaderValue {
    let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BoxError;
    use crate::error::{DeadlineExceeded, Overloaded};
    use std::{fmt, io};

    #[derive(Debug)]
    struct Wrapped(BoxError);
    impl fmt::Display for Wrapped {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(
                f,
                "calling https://upstream.example/v1 with key sk-secret: {}",
                self.0
            )
        }
    }
    impl Error for Wrapped {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    fn answer(error: impl Into<BoxError>) -> (StatusCode, serde_json::Value, Response<Bytes>) {
        let response = error_response(&Wrapped(error.into()));
        let body = serde_json::from_slice(response.body()).unwrap();
        (response.status(), body, response)
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after(Duration::from_millis(1)), "1");
        assert_eq!(retry_after(Duration::from_millis(1500)), "2");
        assert_eq!(retry_after(Duration::from_secs(3)), "3");
        assert_eq!(retry_after(Duration::ZERO), "1");
    }

    #[test]
    fn each_class_has_its_status_and_code() {
        let cases: [(BoxError, u16, &str, ErrorClass); 6] = [
            (
                Overloaded::new(Duration::from_secs(7)).into(),
                503,
                "overloaded",
                ErrorClass::Overload,
            ),
            (
                DeadlineExceeded::new(Duration::from_secs(60)).into(),
                504,
                "deadline_exceeded",
                ErrorClass::Deadline,
            ),
            (
                io::Error::from(io::ErrorKind::TimedOut).into(),
                504,
                "upstream_timeout",
                ErrorClass::Timeout,
            ),
            (
                io::Error::from(io::ErrorKind::ConnectionRefused).into(),
                502,
                "upstream_unreachable",
                ErrorClass::Connect,
            ),
            (
                io::Error::other("secret detail").into(),
                502,
                "upstream_error",
                ErrorClass::Other,
            ),
            (
                "a plain message".into(),
                502,
                "upstream_error",
                ErrorClass::Other,
            ),
        ];
        for (error, code, error_code, class) in cases {
            let (status, body, response) = answer(error);
            assert_eq!(status.as_u16(), code, "{error_code}");
            assert_eq!(body["error"]["type"], "server_error");
            assert_eq!(body["error"]["code"], error_code);
            assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
            assert_eq!(response.extensions().get::<ErrorClass>(), Some(&class));
            assert_eq!(
                response.headers().contains_key(header::RETRY_AFTER),
                class == ErrorClass::Overload,
                "{error_code}"
            );
        }
    }

    #[test]
    fn a_shed_says_when_to_come_back() {
        let (_, _, response) = answer(Overloaded::new(Duration::from_secs(7)));
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        let (status, _, response) = answer(tower::load_shed::error::Overloaded::new());
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn no_error_text_reaches_the_caller() {
        for error in [
            io::Error::other("https://upstream.example/v1?key=sk-secret"),
            io::Error::new(io::ErrorKind::ConnectionRefused, "sk-secret"),
        ] {
            let (_, _, response) = answer(error);
            let text = std::str::from_utf8(response.body()).unwrap();
            assert!(!text.contains("sk-secret"), "{text}");
            assert!(!text.contains("upstream.example"), "{text}");
        }
    }
}
