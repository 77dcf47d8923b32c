//! Errors the gateway makes itself, as OpenAI-style JSON.
//!
//! Upstream answers, errors included, pass through untouched; only failures with no upstream
//! answer to forward are turned into a body here. The stack's `BoxError` is mapped by
//! `holysheep_core::error::error_response`, from its `ErrorClass`.

use std::error::Error as StdError;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use holysheep_core::error::{ErrorBody, ErrorClass, find_in_chain};
use http::StatusCode;

use holysheep::cache::CoalesceError;

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

/// 408 for a request body that did not arrive within the body read timeout.
pub(crate) fn request_timeout(timeout: &crate::conn::BodyReadTimeout) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        format!("The request body did not arrive in time ({timeout})."),
        "invalid_request_error",
    )
    .code("request_timeout")
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

/// The answer for a failure of the layer stack, with no upstream answer to pass on; its
/// [`ErrorClass`] is left on the response for the request log line.
///
/// The message names the kind of failure only; the error's own text stays in the log, so no
/// upstream detail (a URL, a header) can reach the caller.
pub(crate) fn stack_error(error: &(dyn StdError + 'static)) -> Response {
    let class = ErrorClass::of(error);
    if class == ErrorClass::Other && find_in_chain::<CoalesceError>(error).is_some() {
        // An identical request was in flight and this one waited for its answer, which failed;
        // the leader's own error is answered on its own request.
        let mut response = error_response(
            StatusCode::BAD_GATEWAY,
            "The upstream call this request shared with an identical one failed.",
            "server_error",
            None,
            Some("upstream_error"),
        );
        response.extensions_mut().insert(class);
        return response;
    }
    holysheep_core::error::error_response(error).map(Body::from)
}
