//! One request, start to end: record it, pay the cold penalty, check the key, wait, maybe
//! fail, then answer by route.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use holysheep_core::chat::ChatCompletionRequest;
use holysheep_core::error::ErrorBody;
use holysheep_core::sse;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use serde_json::Value;

use crate::answer::{self, ChatAnswer};
use crate::body::{EventStream, MockBody};
use crate::config::MockConfig;
use crate::conn::{ConnCtl, Cut};
use crate::faults::Fault;
use crate::server::Shared;
use crate::stats::{InFlightGuard, RecordedRequest};

/// The largest request body the mock reads.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// The header that names the TCP connection a response came on, so tests can see pooling.
pub(crate) const CONNECTION_HEADER: &str = "x-mock-connection";

pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnCtl>,
    req: Request<Incoming>,
) -> Result<Response<MockBody>, Infallible> {
    let in_flight = shared.stats.request_started(req.uri().path());
    let cfg = shared.config();
    let (parts, body) = req.into_parts();
    let reply = Reply {
        shared: &shared,
        conn: &conn,
        cfg: &cfg,
    };

    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            let err = ErrorBody::new(
                format!("The request body is larger than {MAX_BODY} bytes."),
                "invalid_request_error",
            );
            return Ok(reply.error(err, StatusCode::PAYLOAD_TOO_LARGE, in_flight));
        }
        // The body broke off (the caller went away or sent a bad chunk): answer in case
        // anyone is still listening.
        Err(_) => {
            let err = bad_request("The request body could not be read.");
            return Ok(reply.error(err, StatusCode::BAD_REQUEST, in_flight));
        }
    };
    shared.stats.record_request(RecordedRequest {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });

    if conn.first_request() {
        shared.stats.record_cold_start();
        if !cfg.cold_penalty.is_zero() {
            tokio::time::sleep(cfg.cold_penalty).await;
        }
    }

    if let Some(err) = check_key(&cfg, &parts.headers) {
        return Ok(reply.error(err, StatusCode::UNAUTHORIZED, in_flight));
    }

    let delay = shared.faults().latency(&cfg);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let fault = shared.faults().next(&cfg);
    match fault {
        Some(Fault::Reset) => {
            shared.stats.record_reset();
            conn.cut(Cut::Reset);
            // The connection task drops this future along with the connection.
            return std::future::pending().await;
        }
        Some(Fault::Status(status)) => {
            return Ok(reply.error(fault_error(status, &cfg), status, in_flight));
        }
        None => {}
    }

    let path = parts.uri.path();
    let res = match (&parts.method, path) {
        (&Method::POST, "/v1/chat/completions") => reply.chat(&body, in_flight),
        (&Method::POST, "/v1/embeddings") => match serde_json::from_slice::<Value>(&body) {
            Ok(json) => {
                match answer::embeddings_json(&json, cfg.embedding_dimensions, cfg.embedding_mode) {
                    Ok(bytes) => {
                        shared.stats.record_embedding();
                        reply.json(StatusCode::OK, bytes, in_flight)
                    }
                    Err(bad) => reply.error(
                        bad_request(bad.message).with_param(bad.param),
                        StatusCode::BAD_REQUEST,
                        in_flight,
                    ),
                }
            }
            Err(_) => reply.error(invalid_json(), StatusCode::BAD_REQUEST, in_flight),
        },
        (&Method::GET, "/v1/models") => {
            reply.json(StatusCode::OK, answer::models_json(&cfg.models), in_flight)
        }
        (&Method::GET, p) if p.starts_with("/v1/models/") => {
            let id = &p["/v1/models/".len()..];
            if cfg.models.iter().any(|m| m == id) {
                reply.json(StatusCode::OK, answer::model_json(id), in_flight)
            } else {
                let err = ErrorBody::new(
                    format!("The model '{id}' does not exist"),
                    "invalid_request_error",
                )
                .with_param("model")
                .with_code("model_not_found");
                reply.error(err, StatusCode::NOT_FOUND, in_flight)
            }
        }
        (method, path) => {
            let err = ErrorBody::new(
                format!("Invalid URL ({method} {path})"),
                "invalid_request_error",
            );
            reply.error(err, StatusCode::NOT_FOUND, in_flight)
        }
    };
    Ok(res)
}

/// What every response needs to be built and counted.
struct Reply<'a> {
    shared: &'a Shared,
    conn: &'a Arc<ConnCtl>,
    cfg: &'a MockConfig,
}

impl Reply<'_> {
    fn chat(&self, body: &Bytes, in_flight: InFlightGuard) -> Response<MockBody> {
        let req = match parse_chat(body) {
            Ok(req) => req,
            Err(err) => return self.error(err, StatusCode::BAD_REQUEST, in_flight),
        };
        let stream = req.is_stream();
        self.shared.stats.record_chat(stream);
        let seq = self.shared.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let answer = ChatAnswer::for_request(&req)
            .id(format!("chatcmpl-mock{seq:012x}"))
            .created(unix_now());
        if !stream {
            return self.json_with_seq(StatusCode::OK, answer.to_json(), in_flight, seq);
        }

        let mut events = answer.to_events(self.cfg.stream_chunks, req.include_usage());
        let content_chunks = events.len() - usize::from(req.include_usage());
        events.push(Bytes::from_static(sse::DONE_EVENT));
        let mut stream = EventStream::new(events, self.cfg.stream_gap);
        if self.shared.faults().truncate(self.cfg) {
            // Half-way, and always before the chunk that carries `finish_reason`.
            let after = content_chunks / 2;
            stream = stream.cut_after(after, Arc::clone(self.conn), Arc::clone(&self.shared.stats));
        }
        let mut res = Response::new(MockBody::stream(stream, in_flight));
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        self.finish(res, seq)
    }

    fn json(
        &self,
        status: StatusCode,
        bytes: Bytes,
        in_flight: InFlightGuard,
    ) -> Response<MockBody> {
        let seq = self.shared.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        self.json_with_seq(status, bytes, in_flight, seq)
    }

    fn json_with_seq(
        &self,
        status: StatusCode,
        bytes: Bytes,
        in_flight: InFlightGuard,
        seq: u64,
    ) -> Response<MockBody> {
        let mut res = Response::new(MockBody::full(bytes, in_flight));
        *res.status_mut() = status;
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        self.finish(res, seq)
    }

    fn error(
        &self,
        err: ErrorBody,
        status: StatusCode,
        in_flight: InFlightGuard,
    ) -> Response<MockBody> {
        let mut res = self.json(status, err.to_bytes(), in_flight);
        if status == StatusCode::TOO_MANY_REQUESTS {
            res.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(self.cfg.retry_after_secs),
            );
        }
        res
    }

    fn finish(&self, mut res: Response<MockBody>, seq: u64) -> Response<MockBody> {
        self.shared.stats.record_status(res.status());
        let headers = res.headers_mut();
        if let Ok(id) = HeaderValue::try_from(format!("req_mock{seq:012x}")) {
            headers.insert("x-request-id", id);
        }
        headers.insert(CONNECTION_HEADER, HeaderValue::from(self.conn.id()));
        res
    }
}

/// Parses a chat request, with OpenAI's messages for what is missing or malformed.
fn parse_chat(body: &[u8]) -> Result<ChatCompletionRequest, ErrorBody> {
    let json: Value = serde_json::from_slice(body).map_err(|_| invalid_json())?;
    let Some(obj) = json.as_object() else {
        return Err(bad_request("The request body must be a JSON object."));
    };
    if !obj.get("model").is_some_and(Value::is_string) {
        return Err(bad_request("you must provide a model parameter").with_param("model"));
    }
    match obj.get("messages") {
        Some(Value::Array(m)) if m.is_empty() => {
            return Err(bad_request("[] is too short - 'messages'").with_param("messages"));
        }
        Some(Value::Array(_)) => {}
        _ => {
            return Err(
                bad_request("Missing required parameter: 'messages'.").with_param("messages")
            );
        }
    }
    serde_json::from_value(json).map_err(|e| bad_request(format!("Invalid request: {e}")))
}

/// `None` when the configured key (if any) was sent as a bearer token.
fn check_key(cfg: &MockConfig, headers: &HeaderMap) -> Option<ErrorBody> {
    let expected = cfg.api_key.as_deref()?;
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Some(ErrorBody::new(
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            "invalid_request_error",
        ));
    };
    let token = value.to_str().ok().and_then(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    });
    // The message never repeats the key: the upstream key must not end up in a log.
    (token != Some(expected)).then(|| {
        ErrorBody::new(
            "Incorrect API key provided. You can find your API key in your account settings.",
            "invalid_request_error",
        )
        .with_code("invalid_api_key")
    })
}

fn fault_error(status: StatusCode, cfg: &MockConfig) -> ErrorBody {
    match status {
        StatusCode::TOO_MANY_REQUESTS => ErrorBody::new(
            format!(
                "Rate limit reached for requests. Please try again in {}s.",
                cfg.retry_after_secs
            ),
            "requests",
        )
        .with_code("rate_limit_exceeded"),
        StatusCode::INTERNAL_SERVER_ERROR => ErrorBody::new(
            "The server had an error while processing your request. Sorry about that!",
            "server_error",
        ),
        StatusCode::BAD_GATEWAY => ErrorBody::new("Bad gateway.", "server_error"),
        StatusCode::SERVICE_UNAVAILABLE => ErrorBody::new(
            "The engine is currently overloaded, please try again later.",
            "server_error",
        ),
        other => ErrorBody::new(
            format!("Injected failure: {other}."),
            if other.is_server_error() {
                "server_error"
            } else {
                "invalid_request_error"
            },
        ),
    }
}

fn bad_request(message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(message, "invalid_request_error")
}

fn invalid_json() -> ErrorBody {
    bad_request(
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    #[test]
    fn key_check() {
        let open = MockConfig::default();
        assert!(check_key(&open, &headers(None)).is_none());
        let cfg = MockConfig::default().api_key("k1");
        assert!(check_key(&cfg, &headers(Some("Bearer k1"))).is_none());
        assert!(check_key(&cfg, &headers(Some("bearer  k1"))).is_none());
        assert!(check_key(&cfg, &headers(None)).is_some());
        assert!(check_key(&cfg, &headers(Some("Bearer k2"))).is_some());
        assert!(check_key(&cfg, &headers(Some("Basic k1"))).is_some());
        assert!(check_key(&cfg, &headers(Some("k1"))).is_some());
        let err = check_key(&cfg, &headers(Some("Bearer sk-secret"))).unwrap();
        assert!(!err.error.message.contains("sk-secret"));
        assert_eq!(err.error.code.as_deref(), Some("invalid_api_key"));
    }

    #[test]
    fn chat_parse_errors_name_the_param() {
        let param = |body: &str| parse_chat(body.as_bytes()).unwrap_err().error.param;
        assert_eq!(param("{"), None);
        assert_eq!(param(r#"{"messages": []}"#), Some("model".into()));
        assert_eq!(param(r#"{"model": "m"}"#), Some("messages".into()));
        assert_eq!(
            param(r#"{"model": "m", "messages": []}"#),
            Some("messages".into())
        );
        assert!(parse_chat(br#"{"model": "m", "messages": [{"content": "no role"}]}"#).is_err());
        assert!(
            parse_chat(br#"{"model": "m", "messages": [{"role": "user", "content": "hi"}]}"#)
                .is_ok()
        );
    }
}
