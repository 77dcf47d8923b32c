//! Cache keys: which requests share an answer.
//!
//! A wrong key is the worst bug a response cache can have: too coarse and a user gets someone
//! else's answer (another tenant's, or one for a request with different tools); too fine and the
//! cache never hits. [`DefaultKeyPolicy`] derives keys two ways ([`KeyScheme`]):
//!
//! - [`KeyScheme::Canonical`] (default): SHA-256 over a canonical form of every top-level field of the
//!   JSON body except a short deny-list of fields that cannot change the answer, plus the upstream
//!   base URL, the request path and the tenant namespace. Object key order and number spelling
//!   (`1`, `1.0`, `1e0`) do not matter; array order (messages) does. Fields unknown today are part
//!   of the key, so a new answer-changing parameter can never be ignored by accident.
//! - [`KeyScheme::PythonCompat`]: byte-identical to the reference Python client's
//!   `_generate_cache_key`, so a gateway can share a Redis that client populates. Used only where
//!   it is correct (see [`KeyScheme::PythonCompat`]).
//!
//! Every key reads `holysheep:cache:{model}:{first 32 hex chars of the SHA-256}`.
//!
//! The request body is parsed once into a [`ParsedBody`] (`parsed`); the key is written from it
//! in the canonical dialect (`canonical`) or the Python-compatible one (`python`) by one JSON
//! writer, straight into the hasher (`write`).

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer};
use serde::{Serialize, Serializer};

mod canonical;
mod parsed;
mod python;
mod write;

#[cfg(test)]
mod tests;

pub use self::parsed::ParsedBody;
use self::parsed::{Json, Repr, View};
use self::write::HashSink;

/// The fixed prefix of every key.
const PREFIX: &str = "holysheep:cache:";

/// Bytes of the digest kept in the key (32 hex chars, 128 bits).
const DIGEST_BYTES: usize = 16;

/// Longest model segment kept in a canonical key, in bytes.
const MAX_MODEL_SEGMENT: usize = 128;

/// Top-level fields that cannot change the answer's content, left out of canonical keys by default.
///
/// - `stream`, `stream_options`: only the framing of the answer (SSE or one JSON, a usage chunk);
///   the cache stores one answer and renders it in the framing each request asks for.
/// - `user`, `safety_identifier`: end-user identifiers for the provider's abuse monitoring.
///   Tenant isolation comes from the namespace, which is always part of the key.
/// - `metadata`, `store`: whether and how the provider keeps the completion for its dashboards.
/// - `prompt_cache_key`: a routing hint for the provider's own prompt cache.
///
/// Kept in on purpose: `n`, `seed`, `logprobs`, `top_logprobs`, `logit_bias`, `tools`,
/// `tool_choice`, `parallel_tool_calls`, `response_format`, `stop`, `temperature`, `top_p`,
/// `reasoning_effort`, `modalities`, `audio`, `prediction`, `max_tokens`, ... — and `service_tier`,
/// which the answer echoes in its body and which may route to a different deployment.
const DEFAULT_DENIED: &[&str] = &[
    "stream",
    "stream_options",
    "user",
    "safety_identifier",
    "metadata",
    "store",
    "prompt_cache_key",
];

/// Which key derivation a [`DefaultKeyPolicy`] uses.
///
/// Parsed from and displayed as `canonical` and `python-compat` (parsing ignores ASCII case), in
/// `FromStr`, `Display` and serde, so a configuration file, an environment variable and a
/// command-line flag all read the same words.
///
/// ```
/// use holysheep_cache::KeyScheme;
///
/// assert_eq!("python-compat".parse::<KeyScheme>()?, KeyScheme::PythonCompat);
/// assert_eq!("Canonical".parse::<KeyScheme>()?, KeyScheme::Canonical);
/// assert_eq!(KeyScheme::PythonCompat.to_string(), "python-compat");
/// assert!("md5".parse::<KeyScheme>().is_err());
/// # Ok::<(), holysheep_cache::ParseKeySchemeError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyScheme {
    /// SHA-256 over a canonical form of the whole request (minus a deny-list), the upstream, the
    /// path and the namespace. The default.
    #[default]
    Canonical,
    /// Byte-identical to `_generate_cache_key` of the reference Python client (from the
    /// HolySheep article): SHA-256 of
    /// `json.dumps({"model", "messages", "temperature", "max_tokens"}, sort_keys=True)` with that
    /// client's defaults (temperature 0.7, max_tokens 1000), model verbatim in the key.
    ///
    /// The reference client hashes only those four fields, which is only correct for requests
    /// that have no others. So a policy set to `PythonCompat` uses it only for requests to a
    /// `.../chat/completions` path, without a namespace, whose top-level fields are all among
    /// `model`, `messages`, `temperature`, `max_tokens` and the deny-list; every other request
    /// falls back to [`KeyScheme::Canonical`] (tenants stay isolated, tools and formats stay in
    /// the key). [`CacheKey::scheme`] says which one was used.
    ///
    /// Known limits, both ending in a miss, never a wrong hit: integer literals beyond 64 bits are
    /// read as floats by `serde_json`; and without `serde_json`'s `float_roundtrip` feature a rare
    /// float literal is parsed one ulp away from Python's value.
    PythonCompat,
}

impl KeyScheme {
    const ALL: [KeyScheme; 2] = [KeyScheme::Canonical, KeyScheme::PythonCompat];

    fn as_str(self) -> &'static str {
        match self {
            KeyScheme::Canonical => "canonical",
            KeyScheme::PythonCompat => "python-compat",
        }
    }
}

impl fmt::Display for KeyScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyScheme {
    type Err = ParseKeySchemeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyScheme::ALL
            .into_iter()
            .find(|scheme| scheme.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| ParseKeySchemeError { input: s.into() })
    }
}

impl Serialize for KeyScheme {
    fn serialize<S: Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for KeyScheme {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        String::deserialize(de)?.parse().map_err(de::Error::custom)
    }
}

/// A name that is not a [`KeyScheme`]; its message names the schemes there are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseKeySchemeError {
    input: Box<str>,
}

impl fmt::Display for ParseKeySchemeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown cache key scheme {:?}: expected one of {:?}, {:?}",
            self.input,
            KeyScheme::Canonical.as_str(),
            KeyScheme::PythonCompat.as_str(),
        )
    }
}

impl std::error::Error for ParseKeySchemeError {}

/// What a key is derived from; built by the cache service once per request, around the body it
/// parsed once.
#[derive(Debug, Clone, Copy)]
pub struct KeyRequest<'a> {
    /// The request target: the URI path, and its query string when it has a non-empty one, e.g.
    /// `"/chat/completions"`, `"/v1/embeddings"` or `"/chat/completions?api-version=2024-10-21"`.
    ///
    /// The query travels upstream with the request and may change the answer (an
    /// `api-version`), so it is keyed as part of the path: two requests that differ only in their
    /// query never share an entry. [`KeyScheme::PythonCompat`] keys only query-less requests (the
    /// reference Python client sends none); the rest fall back to [`KeyScheme::Canonical`].
    pub path: &'a str,
    /// The upstream base URL configured on the layer, e.g. `"https://api.holysheep.ai/v1"`.
    pub upstream: &'a str,
    /// The tenant, from the `holysheep_core::signal::Namespace` request extension.
    pub namespace: Option<&'a str>,
    /// The parsed JSON request body; only objects with a string `model` are cacheable.
    pub body: &'a ParsedBody<'a>,
}

/// A derived cache key: `holysheep:cache:{model}:{first 32 hex chars of a SHA-256}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    key: Box<str>,
    model_end: usize,
    scheme: KeyScheme,
}

impl CacheKey {
    fn new(model: &str, sanitize: bool, digest: &[u8], scheme: KeyScheme) -> CacheKey {
        let mut hex = [0u8; DIGEST_BYTES * 2];
        // Both lengths are fixed by the constants above, so this cannot fail.
        let _ = hex::encode_to_slice(&digest[..DIGEST_BYTES], &mut hex);
        let mut key = String::with_capacity(PREFIX.len() + model.len() + 1 + hex.len());
        key.push_str(PREFIX);
        if sanitize {
            push_model_segment(&mut key, model);
        } else {
            key.push_str(model);
        }
        let model_end = key.len();
        key.push(':');
        key.extend(hex.iter().map(|&b| char::from(b)));
        CacheKey {
            key: key.into_boxed_str(),
            model_end,
            scheme,
        }
    }

    /// The key as stored: `holysheep:cache:{model}:{hash}`.
    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// The model segment of the key: sanitised for [`KeyScheme::Canonical`], verbatim for
    /// [`KeyScheme::PythonCompat`].
    pub fn model(&self) -> &str {
        &self.key[PREFIX.len()..self.model_end]
    }

    /// The 32 hex characters of the digest at the end of the key.
    pub fn hash(&self) -> &str {
        &self.key[self.model_end + 1..]
    }

    /// The scheme that produced this key (a `PythonCompat` policy falls back to `Canonical` for
    /// some requests).
    pub fn scheme(&self) -> KeyScheme {
        self.scheme
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

impl AsRef<str> for CacheKey {
    fn as_ref(&self) -> &str {
        &self.key
    }
}

/// Writes the model segment of a canonical key.
///
/// Keeps ASCII letters, digits and `-._/@+`; every other character (`:` that would add a key
/// segment, spaces, control characters, non-ASCII) becomes `_`; at most 128 bytes; an empty model
/// becomes `_`. Two models that sanitise alike still get different keys: the digest covers the
/// real model name.
fn push_model_segment(out: &mut String, model: &str) {
    let start = out.len();
    for c in model.chars().take(MAX_MODEL_SEGMENT) {
        let keep = c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '/' | '@' | '+');
        out.push(if keep { c } else { '_' });
    }
    if out.len() == start {
        out.push('_');
    }
}

/// How a request maps to a cache key. Implement it to key on something else (a header, a subset
/// of fields); [`DefaultKeyPolicy`] is right for OpenAI-compatible APIs.
pub trait KeyPolicy: Send + Sync + 'static {
    /// The key of `req`, or `None` when the request cannot be cached (no string `model`, body not
    /// an object, ...).
    ///
    /// The cache parses each request body once into the [`ParsedBody`] in `req`; read fields with
    /// [`ParsedBody::str_at`] and [`ParsedBody::bool_at`], or the whole body with
    /// [`ParsedBody::to_value`].
    fn key(&self, req: &KeyRequest<'_>) -> Option<CacheKey>;
}

/// The default [`KeyPolicy`]: a [`KeyScheme`] and a deny-list of top-level fields left out of
/// canonical keys.
///
/// ```
/// use holysheep_cache::{DefaultKeyPolicy, KeyPolicy, KeyRequest, ParsedBody};
///
/// let body = ParsedBody::parse(br#"{
///     "model": "gpt-4o-mini",
///     "messages": [{"role": "user", "content": "hi"}],
///     "stream": true
/// }"#)?;
/// let req = KeyRequest {
///     path: "/v1/chat/completions",
///     upstream: "https://api.holysheep.ai/v1",
///     namespace: Some("tenant-a"),
///     body: &body,
/// };
/// let key = DefaultKeyPolicy::new().key(&req).unwrap();
/// assert!(key.as_str().starts_with("holysheep:cache:gpt-4o-mini:"));
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct DefaultKeyPolicy {
    scheme: KeyScheme,
    denied: Vec<String>,
}

impl Default for DefaultKeyPolicy {
    fn default() -> Self {
        DefaultKeyPolicy::new()
    }
}

impl DefaultKeyPolicy {
    /// The canonical scheme with the default deny-list (`stream`, `stream_options`, `user`,
    /// `safety_identifier`, `metadata`, `store`, `prompt_cache_key`).
    pub fn new() -> Self {
        DefaultKeyPolicy {
            scheme: KeyScheme::Canonical,
            denied: DEFAULT_DENIED.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// The scheme of the reference Python client (see [`KeyScheme::PythonCompat`]) with the
    /// default deny-list.
    pub fn python_compat() -> Self {
        DefaultKeyPolicy::new().scheme(KeyScheme::PythonCompat)
    }

    /// Uses `scheme`.
    pub fn scheme(mut self, scheme: KeyScheme) -> Self {
        self.scheme = scheme;
        self
    }

    /// Leaves the top-level field `name` out of the key.
    pub fn deny_field(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        if !self.is_denied(&name) {
            self.denied.push(name);
        }
        self
    }

    /// Puts the top-level field `name` back into the key.
    pub fn allow_field(mut self, name: &str) -> Self {
        self.denied.retain(|d| d != name);
        self
    }

    /// The top-level fields left out of the key.
    pub fn denied_fields(&self) -> impl Iterator<Item = &str> {
        self.denied.iter().map(String::as_str)
    }

    fn is_denied(&self, name: &str) -> bool {
        self.denied.iter().any(|d| d == name)
    }

    /// Whether the Python-compatible scheme is correct for this request (see
    /// [`KeyScheme::PythonCompat`]).
    fn python_compat_applies<J: Json>(
        &self,
        cx: &J::Cx,
        req: &KeyRequest<'_>,
        body: &J::Obj,
    ) -> bool {
        req.namespace.is_none()
            && is_chat_completions(req.path)
            && J::get(body, "messages").is_some_and(|m| matches!(m.view(cx), View::Array(_)))
            && J::all_keys(body, |k| {
                matches!(k, "model" | "messages" | "temperature" | "max_tokens")
                    || self.is_denied(k)
            })
    }

    /// The key of an object body, whichever tree holds it; `req` gives the rest.
    fn key_of<J: Json>(&self, cx: &J::Cx, req: &KeyRequest<'_>, body: &J) -> Option<CacheKey> {
        let View::Object(body) = body.view(cx) else {
            return None;
        };
        let View::Str(model, _) = J::get(body, "model")?.view(cx) else {
            return None;
        };
        let mut h = HashSink::new();
        if self.scheme == KeyScheme::PythonCompat && self.python_compat_applies::<J>(cx, req, body)
        {
            python::write_python_compat::<_, J>(&mut h, cx, body, model).ok()?;
            return Some(CacheKey::new(
                model,
                false,
                &h.finish(),
                KeyScheme::PythonCompat,
            ));
        }
        self.write_canonical::<_, J>(&mut h, cx, req, body).ok()?;
        Some(CacheKey::new(
            model,
            true,
            &h.finish(),
            KeyScheme::Canonical,
        ))
    }
}

impl KeyPolicy for DefaultKeyPolicy {
    fn key(&self, req: &KeyRequest<'_>) -> Option<CacheKey> {
        match req.body.repr() {
            Repr::Tree(tree) => self.key_of(tree, req, tree.root()),
            Repr::Value(value) => self.key_of(&(), req, value),
        }
    }
}

/// Whether `path` is a chat completions path without a query.
fn is_chat_completions(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    path == "chat/completions" || path.ends_with("/chat/completions")
}
