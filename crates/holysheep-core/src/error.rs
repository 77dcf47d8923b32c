//! The OpenAI-style error body every part of the project answers errors with.
//!
//! ```json
//! {"error": {"message": "…", "type": "invalid_request_error", "param": null, "code": null}}
//! ```

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;

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
