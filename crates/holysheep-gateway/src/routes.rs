//! The gateway's HTTP routes: OpenAI-compatible endpoints forwarded through the layer stack, and
//! health, readiness and metrics for operators.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, get_service, post};
use bytes::Bytes;
use holysheep_core::chat::{ChatCompletionRequest, ChatMessage, ChatRequestCheck};
use holysheep_core::hop_by_hop::{HopByHop, remove_hop_by_hop};
use holysheep_core::signal::{Namespace, RequestModel};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use http_body_util::Full;
use serde_json::{Map, Value};
use tower::ServiceExt;

use crate::auth::{Auth, RequireCallerLayer};
use crate::conn::BodyReadTimeout;
use crate::errors::{self, ApiError, error_response, invalid_request};
use crate::logging::RequestLogLayer;
use crate::stack::{Readiness, UpstreamRequest};
use crate::tenants::AllowedModels;
use holysheep::Stack;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The layer stack around the upstream client.
    pub(crate) stack: Stack,
    /// Largest accepted request body.
    pub(crate) body_limit: usize,
    /// Probes for `/readyz`.
    pub(crate) readiness: Readiness,
    /// Renders `/metrics`.
    pub(crate) render_metrics: Arc<dyn Fn() -> String + Send + Sync>,
}

/// The whole application: API routes behind the caller check, operator routes, JSON 404/405,
/// one log line per request.
pub(crate) fn router(state: AppState, auth: Auth) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route(
            "/v1/holysheep/usage",
            get_service(crate::tenants::usage_service(&state.stack)),
        )
        .route_layer(RequireCallerLayer::new(auth));
    // Operator routes are outside the key check: probes and scrapers carry no client key, and
    // these answers hold no tenant's data. Without keys the listener is loopback-only anyway.
    Router::new()
        .merge(api)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        // The gateway reads bodies itself, with its own limit and a JSON 413.
        .layer(DefaultBodyLimit::disable())
        .layer(RequestLogLayer)
        .with_state(state)
}

async fn unknown_route(method: Method, uri: Uri) -> Response {
    errors::not_found(&method, uri.path())
}

async fn wrong_method(method: Method, uri: Uri) -> Response {
    errors::method_not_allowed(&method, uri.path())
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, r#"{"status":"ok"}"#)
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.readiness.check().await {
        json_response(StatusCode::OK, r#"{"status":"ready"}"#)
    } else {
        // Why not is in the log: this route answers anyone who can reach it.
        error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "The gateway is not ready.",
            "server_error",
            None,
            Some("not_ready"),
        )
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let mut response = Response::new(Body::from((state.render_metrics)()));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

async fn chat_completions(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match read_body(&parts.headers, body, state.body_limit).await {
        Ok(bytes) => bytes,
        Err(error) => return error.into_response(),
    };
    if let Err(error) = reject_reserved_keys(&bytes) {
        return error.into_response();
    }
    let model = match validate_chat(&bytes) {
        Ok(model) => model,
        Err(error) => return error.into_response(),
    };
    forward(state.stack, parts, bytes, Some(model)).await
}

async fn embeddings(State(state): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = match read_body(&parts.headers, body, state.body_limit).await {
        Ok(bytes) => bytes,
        Err(error) => return error.into_response(),
    };
    if let Err(error) = reject_reserved_keys(&bytes) {
        return error.into_response();
    }
    let model = match validate_embeddings(&bytes) {
        Ok(model) => model,
        Err(error) => return error.into_response(),
    };
    forward(state.stack, parts, bytes, Some(model)).await
}

async fn models(State(state): State<AppState>, request: Request) -> Response {
    let (parts, _body) = request.into_parts();
    forward(state.stack, parts, Bytes::new(), None).await
}

/// Buffers the request body up to `limit`; over it, a JSON 413 (early from `Content-Length`
/// when the caller sent one, so a huge upload is not read at all). A body that does not arrive
/// within the server's body read timeout gets a JSON 408.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(errors::payload_too_large(limit));
    }
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(e) = source {
            if e.is::<http_body_util::LengthLimitError>() {
                return errors::payload_too_large(limit);
            }
            if let Some(timeout) = e.downcast_ref::<BodyReadTimeout>() {
                return errors::request_timeout(timeout);
            }
            source = e.source();
        }
        invalid_request("The request body could not be read.", None)
    })
}

/// The object keys serde_json's `Value` reads specially start with this (`…RawValue` turns an
/// object into the JSON text of its value, with the `raw_value` feature). The upstream reads them
/// as plain keys, so a body holding one would be validated (and cached) as another body than the
/// one the upstream answers: it is refused instead.
const RESERVED_KEY_PREFIX: &str = "$serde_json::private::";

/// 400 when an object key anywhere in the body starts with [`RESERVED_KEY_PREFIX`].
///
/// Such a key is written either as it is or with `\u` escapes, so a body with neither is let
/// through without a second parse.
fn reject_reserved_keys(bytes: &[u8]) -> Result<(), ApiError> {
    let literal = RESERVED_KEY_PREFIX.as_bytes();
    let may_hold = bytes.windows(2).any(|w| w == b"\\u")
        || bytes
            .iter()
            .enumerate()
            .any(|(i, &b)| b == b'$' && bytes[i..].starts_with(literal));
    if !may_hold {
        return Ok(());
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // Invalid JSON is answered by the validation that follows.
    if serde::Deserializer::deserialize_any(&mut de, ReservedKeys).unwrap_or(false) {
        return Err(invalid_request(
            format!("The request body uses a reserved object key (\"{RESERVED_KEY_PREFIX}…\")."),
            None,
        ));
    }
    Ok(())
}

/// Walks a JSON text reading every key literally; `true` if one is reserved.
struct ReservedKeys;

impl<'de> serde::de::DeserializeSeed<'de> for ReservedKeys {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<bool, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ReservedKeys {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_str<E>(self, _: &str) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(false)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut found = false;
        while let Some(reserved) = seq.next_element_seed(ReservedKeys)? {
            found |= reserved;
        }
        Ok(found)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut found = false;
        while let Some(key) = map.next_key::<String>()? {
            found |= key.starts_with(RESERVED_KEY_PREFIX);
            found |= map.next_value_seed(ReservedKeys)?;
        }
        Ok(found)
    }
}

/// Parses the body as JSON object, or answers 400.
fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(invalid_request(
            "The request body must be a JSON object.",
            None,
        )),
        Err(error) => Err(invalid_request(
            format!(
                "We could not parse the JSON body of your request. ({error}) The OpenAI API \
                 expects a JSON payload."
            ),
            None,
        )),
    }
}

fn required_model(object: &Map<String, Value>) -> Result<Arc<str>, ApiError> {
    match object.get("model") {
        Some(Value::String(model)) if !model.trim().is_empty() => Ok(Arc::from(model.as_str())),
        Some(_) => Err(invalid_request(
            "'model' must be a non-empty string.",
            Some("model"),
        )),
        None => Err(invalid_request(
            "you must provide a model parameter",
            Some("model"),
        )),
    }
}

/// Checks that the body is a chat completion request; returns its model.
fn validate_chat(bytes: &[u8]) -> Result<Arc<str>, ApiError> {
    // One pass that builds nothing settles almost every request. It accepts nothing the checks
    // below refuse (see `ChatRequestCheck`), with the same non-empty model and messages; a body
    // it refuses goes through them for the error that names the offending field (or, for the
    // rare body only the untyped parse takes, such as a repeated key, for its acceptance).
    if let Ok(check) = ChatRequestCheck::parse(bytes)
        && !check.model.trim().is_empty()
        && check.messages > 0
    {
        return Ok(Arc::from(check.model.as_ref()));
    }
    explain_chat(bytes)
}

/// The field-by-field checks behind [`validate_chat`]: the first rule the body breaks, as a 400
/// that names its field.
fn explain_chat(bytes: &[u8]) -> Result<Arc<str>, ApiError> {
    let object = parse_object(bytes)?;
    let model = required_model(&object)?;
    match object.get("messages") {
        Some(Value::Array(messages)) if !messages.is_empty() => {
            if serde_json::from_value::<Vec<ChatMessage>>(Value::Array(messages.clone())).is_err() {
                return Err(invalid_request(
                    "Each message must be an object with a string 'role'.",
                    Some("messages"),
                ));
            }
        }
        Some(Value::Array(_)) => {
            return Err(invalid_request(
                "'messages' must contain at least one message.",
                Some("messages"),
            ));
        }
        Some(_) => {
            return Err(invalid_request(
                "'messages' must be an array of messages.",
                Some("messages"),
            ));
        }
        None => {
            return Err(invalid_request(
                "Missing required parameter: 'messages'.",
                Some("messages"),
            ));
        }
    }
    type Check = fn(&Value) -> bool;
    let typed_fields: [(&str, Check); 3] = [
        ("stream", |v| v.is_boolean() || v.is_null()),
        ("temperature", |v| v.is_number() || v.is_null()),
        ("max_tokens", |v| v.is_u64() || v.is_null()),
    ];
    for (name, valid) in typed_fields {
        if object.get(name).is_some_and(|v| !valid(v)) {
            return Err(invalid_request(
                format!("Invalid type for '{name}'."),
                Some(name),
            ));
        }
    }
    // The shared type is the final word on what a chat request is.
    if let Err(error) = serde_json::from_value::<ChatCompletionRequest>(Value::Object(object)) {
        return Err(invalid_request(
            format!("The body is not a valid chat completion request: {error}"),
            None,
        ));
    }
    Ok(model)
}

/// Checks that the body is an embeddings request (a model and an input); returns its model.
fn validate_embeddings(bytes: &[u8]) -> Result<Arc<str>, ApiError> {
    let object = parse_object(bytes)?;
    let model = required_model(&object)?;
    let input_ok = match object.get("input") {
        Some(Value::String(_)) => true,
        Some(Value::Array(items)) => !items.is_empty(),
        _ => false,
    };
    if !input_ok {
        return Err(invalid_request(
            "'input' must be a string or a non-empty array of strings or token arrays.",
            Some("input"),
        ));
    }
    Ok(model)
}

/// Request headers that must not travel upstream besides the hop-by-hop ones
/// ([`holysheep_core::hop_by_hop`]): the caller's framing and target (the gateway sets its own),
/// credentials (the client sets the upstream key itself), and `accept-encoding`, so answers come
/// back uncompressed: the cache and the metrics read them, and one caller's gzip must not be
/// replayed from the cache to another who cannot read it. Header names are lower case.
fn dropped_request_header(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "authorization"
            | "host"
            | "content-length"
            | "cookie"
            | "x-api-key"
            | "api-key"
            | "accept-encoding"
    )
}

/// The request the stack gets for a caller's request: the gateway's `/v1` stripped (the client
/// joins the rest onto its base URL, which carries the upstream's own `/v1`), the hop-by-hop and
/// credential headers dropped, the buffered body with its length, and the tenant and model as
/// extensions for the layers.
fn upstream_request(
    parts: &Parts,
    body: Bytes,
    model: Option<&Arc<str>>,
) -> Result<UpstreamRequest, ApiError> {
    let path = parts.uri.path();
    let upstream_path = path.strip_prefix("/v1").unwrap_or(path);
    let target = match parts.uri.query() {
        Some(query) => format!("{upstream_path}?{query}"),
        None => upstream_path.to_owned(),
    };
    let body_len = body.len();
    let mut request = http::Request::new(Full::new(body));
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = target
        .parse()
        .map_err(|_| invalid_request("The request URL is not valid.", None))?;
    let hop_by_hop = HopByHop::of(&parts.headers);
    let headers = request.headers_mut();
    for (name, value) in &parts.headers {
        if !hop_by_hop.contains(name) && !dropped_request_header(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    // The body is buffered, so its length is known: say so, instead of letting the client
    // send it chunked (which it does for a body it cannot size, and costs both ends parsing).
    if body_len > 0 {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    }
    if let Some(namespace) = parts.extensions.get::<Namespace>() {
        request.extensions_mut().insert(namespace.clone());
    }
    if let Some(model) = model {
        request
            .extensions_mut()
            .insert(RequestModel(Arc::clone(model)));
    }
    Ok(request)
}

/// Sends the request through the stack and turns the outcome into the caller's answer.
///
/// Takes the handler's own copy of the stack: calling it needs an owned service.
async fn forward(stack: Stack, parts: Parts, body: Bytes, model: Option<Arc<str>>) -> Response {
    if let (Some(allowed), Some(model)) = (parts.extensions.get::<AllowedModels>(), &model)
        && let Err(error) = allowed.check(model)
    {
        return error.into_response();
    }
    let request = match upstream_request(&parts, body, model.as_ref()) {
        Ok(request) => request,
        Err(error) => return error.into_response(),
    };
    let mut response = match stack.oneshot(request).await {
        Ok(response) => response.map(Body::new),
        Err(error) => {
            tracing::warn!(error = %error, "upstream call failed");
            errors::stack_error(&*error)
        }
    };
    // The upstream's connection headers are not the caller's business.
    remove_hop_by_hop(response.headers_mut());
    if let Some(model) = model
        && response.extensions().get::<RequestModel>().is_none()
    {
        response.extensions_mut().insert(RequestModel(model));
    }
    response
}

fn json_response(status: StatusCode, body: &'static str) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_and_param(result: Result<Arc<str>, ApiError>) -> (StatusCode, Option<String>) {
        let error = result.expect_err("rejected");
        (error.status, error.body.error.param)
    }

    #[test]
    fn chat_requests_are_checked() {
        let ok =
            br#"{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
        assert_eq!(&*validate_chat(ok).unwrap(), "gpt-4.1");
        let cases: [(&[u8], Option<&str>); 8] = [
            (b"{not json", None),
            (b"[1,2]", None),
            (br#"{"messages":[{"role":"user"}]}"#, Some("model")),
            (
                br#"{"model":"","messages":[{"role":"user"}]}"#,
                Some("model"),
            ),
            (br#"{"model":"m"}"#, Some("messages")),
            (br#"{"model":"m","messages":[]}"#, Some("messages")),
            (
                br#"{"model":"m","messages":[{"content":"no role"}]}"#,
                Some("messages"),
            ),
            (
                br#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#,
                Some("stream"),
            ),
        ];
        for (body, param) in cases {
            let (status, got) = status_and_param(validate_chat(body));
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(got.as_deref(), param, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn the_typed_parse_accepts_what_the_field_checks_accept() {
        // Only an object is a request: the typed parse must not take a positional array.
        let (status, _) = status_and_param(validate_chat(br#"["m",[{"role":"user"}]]"#));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // A blank model passes the typed parse but not the rules.
        let (_, param) = status_and_param(validate_chat(
            br#"{"model":"  ","messages":[{"role":"user"}]}"#,
        ));
        assert_eq!(param.as_deref(), Some("model"));
        // A repeated key fails the typed parse; the untyped checks keep the last value, as
        // before the fast path existed.
        let repeated = br#"{"model":"a","model":"b","messages":[{"role":"user"}]}"#;
        assert_eq!(&*validate_chat(repeated).unwrap(), "b");
        // Unknown fields and nulls are fine.
        let extra = br#"{"model":"m","messages":[{"role":"user","content":null}],"stream":null,"tools":[]}"#;
        assert_eq!(&*validate_chat(extra).unwrap(), "m");
    }

    /// Issue 11, item 8: a body serde_json's `Value` reads as another body is refused, so
    /// validation (and the cache key) see the body the upstream sees.
    #[test]
    fn reserved_serde_json_keys_are_refused() {
        let inner = r#"{"model":"gpt-4.1","messages":[{"role":"user","content":"hi"}]}"#;
        let wrapped = serde_json::json!({ "$serde_json::private::RawValue": inner }).to_string();
        let nested = r#"{"model":"m","messages":[{"role":"user","content":{"$serde_json::private::RawValue":"\"hi\""}}]}"#;
        let escaped = r#"{"model":"m","messages":[{"role":"user"}],"x":{"\u0024serde_json::private::RawValue":"1"}}"#;
        for body in [wrapped.as_bytes(), nested.as_bytes(), escaped.as_bytes()] {
            let error = reject_reserved_keys(body)
                .and_then(|()| validate_chat(body).map(|_| ()))
                .expect_err("refused");
            assert_eq!(
                error.status,
                StatusCode::BAD_REQUEST,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        for fine in [
            inner.as_bytes(),
            br#"{"model":"m","messages":[{"role":"user","content":"costs \u0024 5 $serde_json"}]}"#,
            b"{not json",
        ] {
            assert!(
                reject_reserved_keys(fine).is_ok(),
                "{}",
                String::from_utf8_lossy(fine)
            );
        }
    }

    #[test]
    fn upstream_requests_are_sized_and_lose_v1_and_credentials() {
        let request = http::Request::post("/v1/chat/completions?x=1")
            .header(header::AUTHORIZATION, "Bearer caller")
            .header(header::CONTENT_LENGTH, "999")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let model: Arc<str> = Arc::from("gpt-4.1");
        let request =
            upstream_request(&parts, Bytes::from_static(b"{\"a\":1}"), Some(&model)).unwrap();
        assert_eq!(request.method(), http::Method::POST);
        assert_eq!(request.uri(), "/chat/completions?x=1");
        assert_eq!(request.headers()[header::CONTENT_LENGTH], "7");
        assert!(request.headers().get(header::AUTHORIZATION).is_none());
        assert_eq!(
            request
                .extensions()
                .get::<RequestModel>()
                .map(RequestModel::as_str),
            Some("gpt-4.1")
        );
    }

    #[test]
    fn embeddings_need_model_and_input() {
        assert_eq!(
            &*validate_embeddings(br#"{"model":"e","input":"hello"}"#).unwrap(),
            "e"
        );
        assert!(validate_embeddings(br#"{"model":"e","input":[[1,2]]}"#).is_ok());
        let (_, param) = status_and_param(validate_embeddings(br#"{"model":"e"}"#));
        assert_eq!(param.as_deref(), Some("input"));
        let (_, param) = status_and_param(validate_embeddings(br#"{"input":"x"}"#));
        assert_eq!(param.as_deref(), Some("model"));
    }
}
