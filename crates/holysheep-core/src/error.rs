//! The error vocabulary of the layers, and the OpenAI-style body every part of the project
//! answers errors with.
//!
//! - [`Overloaded`] and [`DeadlineExceeded`]: the failures the layers make themselves (a shed,
//!   a passed deadline), which any layer may use.
//! - [`ErrorClass`]: what kind of failure an error is, read from its `source()` [`chain`];
//!   [`AnswerClass`]: what an answer's status (and gRPC status) says. Retries, metrics and the
//!   adaptive pool limit all decide from these two.
//! - [`error_response`]: a failed call as the HTTP answer a gateway gives.
//! - [`ErrorBody`]: the OpenAI error shape,
//!   `{"error": {"message": "…", "type": "invalid_request_error", "param": null, "code": null}}`.

use std::any::Any;
use std::error::Error;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::{Deserialize, Serialize};

mod class;
mod response;
mod types;

pub use class::{AnswerClass, ErrorClass};
pub use response::error_response;
pub use types::{DeadlineExceeded, Overloaded, is_deadline, is_overloaded};

/// An OpenAI-style error body: `{"error": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error itself.
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A sentence for humans.
    pub message: String,
    /// The error's class: `invalid_request_error`, `authentication_error`, `rate_limit_error`,
    /// `server_error`, …
    #[serde(rename = "type")]
    pub r#type: String,
    /// The request parameter at fault, if any.
    #[serde(default)]
    pub param: Option<String>,
    /// A machine-readable code, if any.
    #[serde(default)]
    pub code: Option<String>,
}

impl ErrorBody {
    /// An error with a message and a type, no param and no code.
    pub fn new(message: impl Into<String>, type_: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                message: message.into(),
                r#type: type_.into(),
                param: None,
                code: None,
            },
        }
    }

    /// Sets the machine-readable code.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.error.code = Some(code.into());
        self
    }

    /// Sets the request parameter at fault.
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.error.param = Some(param.into());
        self
    }

    /// The body as JSON bytes.
    pub fn to_bytes(&self) -> Bytes {
        // Serialising a struct of strings into a Vec cannot fail.
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// A response with this body, the given status and `content-type: application/json`.
    pub fn into_response(self, status: StatusCode) -> Response<Bytes> {
        let mut res = Response::new(self.to_bytes());
        *res.status_mut() = status;
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        res
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error.r#type, self.error.message)
    }
}

/// How deep [`chain`] walks: a `source()` chain that loops must not hang a request.
const MAX_CHAIN: usize = 32;

/// `error` and the errors in its `source()` chain, outermost first (at most 32 of them, so a
/// chain that loops ends). Layers wrap each other's errors, so every check for "is this a
/// timeout / a shed / a connect failure" walks the whole chain rather than only the outermost.
///
/// An [`std::io::Error`] that wraps an error of its own (`io::Error::new(kind, inner)`) is
/// followed by that inner error, which its `source()` skips.
pub fn chain<'a>(
    error: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> + 'a {
    std::iter::successors(Some(error), |&e| next_in_chain(e)).take(MAX_CHAIN)
}

fn next_in_chain<'a>(error: &'a (dyn Error + 'static)) -> Option<&'a (dyn Error + 'static)> {
    match error
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
    {
        Some(inner) => Some(inner),
        None => error.source(),
    }
}

/// `error` as `&dyn Error`, when its type is one of those the layers meet: a boxed error
/// (`Box<dyn Error + Send + Sync>`, that is [`BoxError`](crate::BoxError), and its kin), a
/// [`std::io::Error`], a [`hyper::Error`], an [`http::Error`], [`Overloaded`],
/// [`DeadlineExceeded`], tower's timeout and load-shed errors, or tokio's `Elapsed`.
///
/// For layers that pass errors of any type through unchanged (`S::Error: 'static`, not
/// necessarily [`Error`]: `BoxError` itself is not) and still classify them, as `MetricsLayer`
/// does; `None` for other types.
///
/// ```
/// use holysheep_core::BoxError;
/// use holysheep_core::error::{ErrorClass, as_error};
///
/// let error: BoxError = std::io::Error::from(std::io::ErrorKind::TimedOut).into();
/// let seen = as_error(&error).expect("a boxed error");
/// assert_eq!(ErrorClass::of(seen), ErrorClass::Timeout);
/// assert!(as_error(&"not an error").is_none());
/// ```
pub fn as_error<'a>(error: &'a (dyn Any + 'static)) -> Option<&'a (dyn Error + 'static)> {
    type View = for<'a> fn(&'a (dyn Any + 'static)) -> Option<&'a (dyn Error + 'static)>;
    const VIEWS: &[View] = &[
        |e| {
            e.downcast_ref::<Box<dyn Error + Send + Sync>>()
                .map(|e| &**e as _)
        },
        |e| e.downcast_ref::<Box<dyn Error + Send>>().map(|e| &**e as _),
        |e| e.downcast_ref::<Box<dyn Error>>().map(|e| &**e as _),
        as_error_of::<std::io::Error>,
        as_error_of::<hyper::Error>,
        as_error_of::<http::Error>,
        as_error_of::<Overloaded>,
        as_error_of::<DeadlineExceeded>,
        as_error_of::<tower::timeout::error::Elapsed>,
        as_error_of::<tower::load_shed::error::Overloaded>,
        as_error_of::<tokio::time::error::Elapsed>,
    ];
    VIEWS.iter().find_map(|view| view(error))
}

/// `error` as `&dyn Error` if it is an `E`: [`as_error`] for one more type.
pub fn as_error_of<'a, E: Error + 'static>(
    error: &'a (dyn Any + 'static),
) -> Option<&'a (dyn Error + 'static)> {
    error.downcast_ref::<E>().map(|e| e as _)
}

/// The first error of type `E` in `error`'s [`chain`].
pub fn find_in_chain<'a, E: Error + 'static>(error: &'a (dyn Error + 'static)) -> Option<&'a E> {
    chain(error).find_map(|e| e.downcast_ref::<E>())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that wraps another, as layers and clients do; its message holds an upstream URL
    /// and a key, which must never reach a caller. Shared by the tests of `error`'s modules.
    #[derive(Debug)]
    pub(super) struct Wrap(pub(super) Option<crate::BoxError>);

    impl std::fmt::Display for Wrap {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("calling https://upstream.example/v1 with key sk-secret")
        }
    }

    impl Error for Wrap {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.0.as_deref().map(|e| e as _)
        }
    }

    /// `error` wrapped once.
    pub(super) fn wrapped(error: impl Into<crate::BoxError>) -> Wrap {
        Wrap(Some(error.into()))
    }

    #[test]
    fn chain_walks_sources_outermost_first() {
        let io = std::io::Error::from(std::io::ErrorKind::TimedOut);
        let outer = wrapped(wrapped(io));
        assert_eq!(chain(&outer).count(), 3);
        let found = find_in_chain::<std::io::Error>(&outer).unwrap();
        assert_eq!(found.kind(), std::io::ErrorKind::TimedOut);
        assert!(find_in_chain::<std::fmt::Error>(&outer).is_none());
    }

    #[test]
    fn chain_enters_what_an_io_error_wraps() {
        let io = std::io::Error::other(wrapped(std::fmt::Error));
        // `io::Error::source()` would skip the `Wrap` and go straight to its source.
        assert_eq!(chain(&io).count(), 3);
        assert!(find_in_chain::<Wrap>(&io).is_some());
        assert!(find_in_chain::<std::fmt::Error>(&io).is_some());
    }

    #[test]
    fn shape_matches_openai() {
        let body = ErrorBody::new("bad model", "invalid_request_error")
            .with_param("model")
            .with_code("model_not_found");
        let v: serde_json::Value = serde_json::from_slice(&body.to_bytes()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {
                "message": "bad model", "type": "invalid_request_error",
                "param": "model", "code": "model_not_found"
            }})
        );
    }

    #[test]
    fn response_has_status_and_json_type() {
        let res = ErrorBody::new("slow down", "rate_limit_error")
            .into_response(StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers()[header::CONTENT_TYPE], "application/json");
        let v: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
        assert_eq!(v["error"]["param"], serde_json::Value::Null);
    }
}
