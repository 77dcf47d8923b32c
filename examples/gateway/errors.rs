//! Errors the gateway makes itself, as OpenAI-style JSON.
//!
//! Upstream answers, errors included, pass through untouched; only failures with no upstream
//! answer to forward are turned into a body here. The stack's `BoxError` is mapped by walking its
//! `source()` chain and downcasting to each layer's typed error.

use std::error::Error as StdError;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use holysheep_core::error::{ErrorBody, find_in_chain};
use http::{HeaderValue, StatusCode, header};

use holysheep::cache::CoalesceError;
use holysheep::pool_limit::Overloaded;
use holysheep::retry::DeadlineExceeded;

/// Which failure the gateway answered, left on the response for the request log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GatewayError(pub(crate) &'static str);

/// An OpenAI-style error before it becomes a response: small enough to return in a `Result`.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) body: ErrorBody,
}

impl ApiError {
    /// An error with a status, a message for humans and an OpenAI error type.
    pub(crate) fn new(status: StatusCode, message: impl Into<String>, type_: &str) -> Self {
        Self {
            status,
            body: ErrorBody::new(message, type_),
        }
    }

    /// Names the request parameter at fault.
    pub(crate) fn param(mut self, param: &str) -> Self {
        self.body = self.body.with_param(param);
        self
    }

    /// Sets the machine-readable code.
    pub(crate) fn code(mut self, code: &str) -> Self {
        self.body = self.body.with_code(code);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.body.into_response(self.status).map(Body::from)
    }
}

/// An OpenAI-style error response.
pub(crate) fn error_response(
    status: StatusCode,
    message: &str,
    type_: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    let mut error = ApiError::new(status, message, type_);
    if let Some(param) = param {
        error = error.param(param);
    }
    if let Some(code) = code {
        error = error.code(code);
    }
    error.into_response()
}

/// 400 for a body that is not a valid request; `param` names the field at fault when known.
pub(crate) fn invalid_request(message: impl Into<String>, param: Option<&str>) -> ApiError {
    let error = ApiError::new(StatusCode::BAD_REQUEST, message, "invalid_request_error");
    match param {
        Some(param) => error.param(param),
        None => error,
    }
}

/// 413 for a body over the configured limit.
pub(crate) fn payload_too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("The request body is larger than this gateway accepts ({limit} bytes)."),
        "invalid_request_error",
    )
    .code("request_too_large")
}

/// 404 for a route the gateway does not have.
pub(crate) fn not_found(method: &http::Method, path: &str) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        &format!("Unknown request URL: {method} {path}."),
        "invalid_request_error",
        None,
        Some("unknown_url"),
    )
}

/// 405 for a known route called with the wrong method.
pub(crate) fn method_not_allowed(method: &http::Method, path: &str) -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("Method {method} is not allowed for {path}."),
        "invalid_request_error",
        None,
        Some("method_not_allowed"),
    )
}

/// The answer for a failure of the layer stack, with no upstream answer to pass on.
///
/// The message names the kind of failure only; the error's own text stays in the log, so no
/// upstream detail (a URL, a header) can reach the caller.
pub(crate) fn stack_error(error: &(dyn StdError + 'static)) -> Response {
    let mut response = if let Some(overloaded) = find_in_chain::<Overloaded>(error) {
        let mut response = error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "The gateway is at its limit of concurrent upstream requests. Please retry shortly.",
            "server_error",
            None,
            Some("overloaded"),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after(overloaded.retry_after()));
        response.extensions_mut().insert(GatewayError("overloaded"));
        response
    } else if find_in_chain::<DeadlineExceeded>(error).is_some() {
        let mut response = error_response(
            StatusCode::GATEWAY_TIMEOUT,
            "The upstream did not answer within the request deadline.",
            "server_error",
            None,
            Some("deadline_exceeded"),
        );
        response.extensions_mut().insert(GatewayError("deadline"));
        response
    } else if let Some(client) = find_in_chain::<holysheep::client::Error>(error) {
        let (status, message, code) = if client.is_timeout() {
            (
                StatusCode::GATEWAY_TIMEOUT,
                "The upstream did not answer in time.",
                "upstream_timeout",
            )
        } else if client.is_connect() {
            (
                StatusCode::BAD_GATEWAY,
                "The gateway could not connect to the upstream.",
                "upstream_unreachable",
            )
        } else {
            (
                StatusCode::BAD_GATEWAY,
                "The upstream connection failed before an answer arrived.",
                "upstream_error",
            )
        };
        let mut response = error_response(status, message, "server_error", None, Some(code));
        response.extensions_mut().insert(GatewayError(code));
        response
    } else if find_in_chain::<CoalesceError>(error).is_some() {
        // An identical request was in flight and this one waited for its answer, which failed;
        // the leader's own error is answered on its own request.
        let mut response = error_response(
            StatusCode::BAD_GATEWAY,
            "The upstream call this request shared with an identical one failed.",
            "server_error",
            None,
            Some("upstream_error"),
        );
        response
            .extensions_mut()
            .insert(GatewayError("coalesced_upstream_error"));
        response
    } else {
        error_response(
            StatusCode::BAD_GATEWAY,
            "The gateway could not get an answer from the upstream.",
            "server_error",
            None,
            Some("upstream_error"),
        )
    };
    if response.extensions().get::<GatewayError>().is_none() {
        response
            .extensions_mut()
            .insert(GatewayError("upstream_error"));
    }
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
    use std::fmt;

    #[derive(Debug)]
    struct Wrapped(Box<dyn StdError + Send + Sync>);
    impl fmt::Display for Wrapped {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl StdError for Wrapped {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after(Duration::from_millis(1)), "1");
        assert_eq!(retry_after(Duration::from_millis(1500)), "2");
        assert_eq!(retry_after(Duration::from_secs(3)), "3");
        assert_eq!(retry_after(Duration::ZERO), "1");
    }

    #[test]
    fn unknown_errors_are_502_without_their_text() {
        let error = Wrapped(Box::new(std::io::Error::other("secret detail")));
        let response = stack_error(&error);
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(
            response.extensions().get::<GatewayError>(),
            Some(&GatewayError("upstream_error"))
        );
    }
}
