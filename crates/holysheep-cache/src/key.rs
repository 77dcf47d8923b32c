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
//! - [`KeyScheme::Seed`]: byte-identical to the Python seed's `_generate_cache_key`, so a gateway can
//!   share a Redis populated by the seed. Used only where it is correct (see [`KeyScheme::Seed`]).
//!
//! Every key reads `holysheep:cache:{model}:{first 32 hex chars of the SHA-256}`.

use std::fmt::{self, Write as _};

use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

pub use crate::parsed::ParsedBody;
use crate::parsed::Repr;

/// The fixed prefix of every key.
const PREFIX: &str = "holysheep:cache:";

/// Bytes of the digest kept in the key (32 hex chars, 128 bits).
const DIGEST_BYTES: usize = 16;

/// Longest model segment kept in a canonical key, in bytes.
const MAX_MODEL_SEGMENT: usize = 128;

/// Deepest JSON nesting that is keyed; deeper bodies are not cached rather than risking the stack.
/// serde_json's parser stops at 128 levels, so parsed bodies never reach it.
const MAX_DEPTH: usize = 256;

/// Domain-separation tag of the canonical scheme; bump it when the canonical form changes.
const CANONICAL_TAG: &[u8] = b"holysheep-cache/canonical/v1\0";

/// The seed's defaults when a request omits them.
const SEED_DEFAULT_TEMPERATURE: &str = "0.7";
const SEED_DEFAULT_MAX_TOKENS: &str = "1000";

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyScheme {
    /// SHA-256 over a canonical form of the whole request (minus a deny-list), the upstream, the
    /// path and the namespace. The default.
    #[default]
    Canonical,
    /// Byte-identical to the Python seed's `_generate_cache_key`: SHA-256 of
    /// `json.dumps({"model", "messages", "temperature", "max_tokens"}, sort_keys=True)` with the
    /// seed's defaults (temperature 0.7, max_tokens 1000), model verbatim in the key.
    ///
    /// The seed hashes only those four fields, which is only correct for requests that have no
    /// others. So a policy set to `Seed` uses it only for requests to a `.../chat/completions`
    /// path, without a namespace, whose top-level fields are all among `model`, `messages`,
    /// `temperature`, `max_tokens` and the deny-list; every other request falls back to
    /// [`KeyScheme::Canonical`] (tenants stay isolated, tools and formats stay in the key).
    /// [`CacheKey::scheme`] says which one was used.
    ///
    /// Known limits, both ending in a miss, never a wrong hit: integer literals beyond 64 bits are
    /// read as floats by `serde_json`; and without `serde_json`'s `float_roundtrip` feature a rare
    /// float literal is parsed one ulp away from Python's value.
    Seed,
}

/// What a key is derived from; built by the cache service from the parsed request.
#[derive(Debug, Clone, Copy)]
pub struct KeyRequest<'a> {
    /// The request URI path, e.g. `"/chat/completions"` or `"/v1/embeddings"`.
    pub path: &'a str,
    /// The upstream base URL configured on the layer, e.g. `"https://api.holysheep.ai/v1"`.
    pub upstream: &'a str,
    /// The tenant, from the `holysheep_core::signal::Namespace` request extension.
    pub namespace: Option<&'a str>,
    /// The parsed JSON request body; only objects with a string `model` are cacheable.
    pub body: &'a Value,
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
    /// [`KeyScheme::Seed`].
    pub fn model(&self) -> &str {
        &self.key[PREFIX.len()..self.model_end]
    }

    /// The 32 hex characters of the digest at the end of the key.
    pub fn hash(&self) -> &str {
        &self.key[self.model_end + 1..]
    }

    /// The scheme that produced this key (a `Seed` policy falls back to `Canonical` for some
    /// requests).
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
    fn key(&self, req: &KeyRequest<'_>) -> Option<CacheKey>;

    /// The key of a request whose body was parsed into a [`ParsedBody`]; what the cache service
    /// calls.
    ///
    /// Must give the same key as [`KeyPolicy::key`] for the same body. The default builds a
    /// `serde_json::Value` from the parsed body and calls [`KeyPolicy::key`], so a policy that
    /// only implements `key` keeps working; [`DefaultKeyPolicy`] reads the parsed body directly.
    fn key_parsed(&self, req: &ParsedKeyRequest<'_>) -> Option<CacheKey> {
        let body = req.body.to_value();
        self.key(&KeyRequest {
            path: req.path,
            upstream: req.upstream,
            namespace: req.namespace,
            body: &body,
        })
    }
}

/// [`KeyRequest`] with the body as a [`ParsedBody`], for [`KeyPolicy::key_parsed`].
#[derive(Debug, Clone, Copy)]
pub struct ParsedKeyRequest<'a> {
    /// The request URI path, e.g. `"/chat/completions"` or `"/v1/embeddings"`.
    pub path: &'a str,
    /// The upstream base URL configured on the layer, e.g. `"https://api.holysheep.ai/v1"`.
    pub upstream: &'a str,
    /// The tenant, from the `holysheep_core::signal::Namespace` request extension.
    pub namespace: Option<&'a str>,
    /// The parsed JSON request body; only objects with a string `model` are cacheable.
    pub body: &'a ParsedBody<'a>,
}

/// The default [`KeyPolicy`]: a [`KeyScheme`] and a deny-list of top-level fields left out of
/// canonical keys.
///
/// ```
/// use holysheep_cache::key::{DefaultKeyPolicy, KeyPolicy, KeyRequest};
///
/// let body = serde_json::json!({
///     "model": "gpt-4o-mini",
///     "messages": [{"role": "user", "content": "hi"}],
///     "stream": true,
/// });
/// let req = KeyRequest {
///     path: "/v1/chat/completions",
///     upstream: "https://api.holysheep.ai/v1",
///     namespace: Some("tenant-a"),
///     body: &body,
/// };
/// let key = DefaultKeyPolicy::new().key(&req).unwrap();
/// assert!(key.as_str().starts_with("holysheep:cache:gpt-4o-mini:"));
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

    /// The seed-compatible scheme (see [`KeyScheme::Seed`]) with the default deny-list.
    pub fn seed() -> Self {
        DefaultKeyPolicy::new().scheme(KeyScheme::Seed)
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

    /// Writes the canonical hash input: scheme tag, framed upstream, path and namespace, then the
    /// canonical body without the denied fields.
    fn write_canonical<S: Sink, J: Json>(
        &self,
        h: &mut S,
        cx: &J::Cx,
        req: &Target<'_>,
        body: &J::Obj,
    ) -> Result<(), TooDeep> {
        h.bytes(CANONICAL_TAG);
        // "https://host/v1" and "https://host/v1/" are one upstream.
        h.framed(req.upstream.trim_end_matches('/').as_bytes());
        h.framed(req.path.as_bytes());
        match req.namespace {
            None => h.bytes(&[0]),
            Some(ns) => {
                h.bytes(&[1]);
                h.framed(ns.as_bytes());
            }
        }
        canonical_object::<S, J>(h, cx, body, 0, Some(self))
    }

    /// Whether the seed scheme is correct for this request (see [`KeyScheme::Seed`]).
    fn seed_applies<J: Json>(&self, cx: &J::Cx, req: &Target<'_>, body: &J::Obj) -> bool {
        req.namespace.is_none()
            && is_chat_completions(req.path)
            && J::get(body, "messages").is_some_and(|m| matches!(m.view(cx), View::Array(_)))
            && J::all_keys(body, |k| {
                matches!(k, "model" | "messages" | "temperature" | "max_tokens")
                    || self.is_denied(k)
            })
    }

    /// Writes what the seed hashes: `json.dumps({...}, sort_keys=True)` of its four fields.
    fn write_seed_of<S: Sink, J: Json>(
        h: &mut S,
        cx: &J::Cx,
        body: &J::Obj,
        model: &str,
    ) -> Result<(), TooDeep> {
        h.str("{\"max_tokens\": ");
        match J::get(body, "max_tokens") {
            Some(v) => python_value_in(h, cx, v, 0)?,
            None => h.str(SEED_DEFAULT_MAX_TOKENS),
        }
        h.str(", \"messages\": ");
        match J::get(body, "messages") {
            Some(v) => python_value_in(h, cx, v, 0)?,
            None => h.str("null"),
        }
        h.str(", \"model\": ");
        python_str(h, model);
        h.str(", \"temperature\": ");
        match J::get(body, "temperature") {
            Some(v) => python_value_in(h, cx, v, 0)?,
            None => h.str(SEED_DEFAULT_TEMPERATURE),
        }
        h.str("}");
        Ok(())
    }
}

impl DefaultKeyPolicy {
    /// [`DefaultKeyPolicy::write_seed_of`] for a `Value` body.
    #[cfg(test)]
    fn write_seed<S: Sink>(
        h: &mut S,
        body: &Map<String, Value>,
        model: &str,
    ) -> Result<(), TooDeep> {
        DefaultKeyPolicy::write_seed_of::<S, Value>(h, &(), body, model)
    }

    /// The key of an object body, whichever tree holds it.
    fn key_of<J: Json>(&self, cx: &J::Cx, req: &Target<'_>, body: &J) -> Option<CacheKey> {
        let View::Object(body) = body.view(cx) else {
            return None;
        };
        let View::Str(model, _) = J::get(body, "model")?.view(cx) else {
            return None;
        };
        let mut h = HashSink::new();
        if self.scheme == KeyScheme::Seed && self.seed_applies::<J>(cx, req, body) {
            DefaultKeyPolicy::write_seed_of::<_, J>(&mut h, cx, body, model).ok()?;
            return Some(CacheKey::new(model, false, &h.finish(), KeyScheme::Seed));
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
        self.key_of(&(), &Target::of(req), req.body)
    }

    fn key_parsed(&self, req: &ParsedKeyRequest<'_>) -> Option<CacheKey> {
        let target = Target {
            path: req.path,
            upstream: req.upstream,
            namespace: req.namespace,
        };
        match req.body.repr() {
            Repr::Tree(tree) => self.key_of(tree, &target, tree.root()),
            Repr::Value(value) => self.key_of(&(), &target, value),
        }
    }
}

/// What a key is derived from besides the body.
struct Target<'a> {
    path: &'a str,
    upstream: &'a str,
    namespace: Option<&'a str>,
}

impl<'a> Target<'a> {
    fn of(req: &KeyRequest<'a>) -> Self {
        Target {
            path: req.path,
            upstream: req.upstream,
            namespace: req.namespace,
        }
    }
}

fn is_chat_completions(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    path == "chat/completions" || path.ends_with("/chat/completions")
}

/// The nesting limit was exceeded.
struct TooDeep;

/// Where the canonical form goes: the SHA-256 hasher in production (no string is ever built), a
/// `Vec<u8>` in tests that check the exact text.
trait Sink: fmt::Write {
    fn bytes(&mut self, b: &[u8]);

    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    /// Length-prefixed, so adjacent fields cannot run into each other ("a" + "b/c" vs "a/b" + "c").
    fn framed(&mut self, b: &[u8]) {
        self.bytes(&(b.len() as u64).to_le_bytes());
        self.bytes(b);
    }
}

/// Streams bytes into the hasher, through a small stack buffer: the canonical form arrives in many
/// tiny pieces (`,`, `"`, `:`), and one `update` per piece would cost more than the hashing.
struct HashSink {
    hasher: Sha256,
    buf: [u8; HASH_BUF],
    len: usize,
}

/// A multiple of SHA-256's 64-byte block, so flushes hash whole blocks without copying.
const HASH_BUF: usize = 512;

impl HashSink {
    fn new() -> Self {
        HashSink {
            hasher: Sha256::new(),
            buf: [0; HASH_BUF],
            len: 0,
        }
    }

    fn finish(mut self) -> [u8; 32] {
        self.hasher.update(&self.buf[..self.len]);
        self.hasher.finalize().into()
    }
}

impl HashSink {
    /// `b` does not fit the buffer: fill it, hash it whole, hash `b`'s whole blocks directly and
    /// keep the tail. Every `update` is a multiple of 64 bytes, so the hasher never copies.
    #[inline(never)]
    fn spill(&mut self, b: &[u8]) {
        let (head, rest) = b.split_at((HASH_BUF - self.len).min(b.len()));
        self.buf[self.len..self.len + head.len()].copy_from_slice(head);
        self.hasher.update(self.buf.as_slice());
        let whole = rest.len() - rest.len() % HASH_BUF;
        self.hasher.update(&rest[..whole]);
        let tail = &rest[whole..];
        self.buf[..tail.len()].copy_from_slice(tail);
        self.len = tail.len();
    }
}

impl Sink for HashSink {
    #[inline]
    fn bytes(&mut self, b: &[u8]) {
        // Most pieces are a few bytes and fit: one bounds check and a copy.
        match self.buf.get_mut(self.len..self.len + b.len()) {
            Some(dst) => {
                dst.copy_from_slice(b);
                self.len += b.len();
            }
            None => self.spill(b),
        }
    }
}

impl fmt::Write for HashSink {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.bytes(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
#[derive(Default)]
struct TextSink(Vec<u8>);

#[cfg(test)]
impl Sink for TextSink {
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
}

#[cfg(test)]
impl fmt::Write for TextSink {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// A JSON tree the key is written from: a `serde_json::Value`, or the lighter tree of a
/// [`ParsedBody`]. One writer for both is what keeps their keys identical.
pub(crate) trait Json: Sized {
    /// An object's entries.
    type Obj: ?Sized;
    /// What nodes are resolved in (the arena of a [`ParsedBody`]; nothing for a `Value`).
    type Cx: ?Sized;

    fn view<'v>(&'v self, cx: &'v Self::Cx) -> View<'v, Self>;

    /// The value of `key` (the last one when the text repeated it, as `serde_json::Map` keeps).
    fn get<'v>(obj: &'v Self::Obj, key: &str) -> Option<&'v Self>;

    /// Whether `f` holds for every key.
    fn all_keys(obj: &Self::Obj, f: impl FnMut(&str) -> bool) -> bool;

    /// Calls `f` for each entry in key order (byte order of the UTF-8 keys, which is code point
    /// order), with the key, whether the key is plain (as in [`View::Str`]) and the value.
    fn for_each_sorted<E>(
        obj: &Self::Obj,
        f: impl FnMut(&str, bool, &Self) -> Result<(), E>,
    ) -> Result<(), E>;
}

/// One node of a [`Json`] tree.
pub(crate) enum View<'v, J: Json> {
    Null,
    Bool(bool),
    Number(&'v Number),
    /// A string, and whether it is known to hold no `"`, `\` or control character (so the
    /// canonical form needs no escaping and no scan for it).
    Str(&'v str, bool),
    Array(&'v [J]),
    Object(&'v J::Obj),
}

impl Json for Value {
    type Obj = Map<String, Value>;
    type Cx = ();

    fn view<'v>(&'v self, _: &'v ()) -> View<'v, Self> {
        match self {
            Value::Null => View::Null,
            Value::Bool(b) => View::Bool(*b),
            Value::Number(n) => View::Number(n),
            Value::String(s) => View::Str(s, false),
            Value::Array(items) => View::Array(items),
            Value::Object(map) => View::Object(map),
        }
    }

    fn get<'v>(obj: &'v Self::Obj, key: &str) -> Option<&'v Self> {
        obj.get(key)
    }

    fn all_keys(obj: &Self::Obj, mut f: impl FnMut(&str) -> bool) -> bool {
        obj.keys().all(|k| f(k))
    }

    fn for_each_sorted<E>(
        obj: &Self::Obj,
        mut f: impl FnMut(&str, bool, &Self) -> Result<(), E>,
    ) -> Result<(), E> {
        for_each_sorted(obj, |k, v| f(k, false, v))
    }
}

/// Canonical JSON: sorted keys at every depth, no whitespace, one number form, one escaping rule.
#[cfg(test)]
fn canonical_value<S: Sink>(h: &mut S, v: &Value, depth: usize) -> Result<(), TooDeep> {
    canonical_value_in(h, &(), v, depth)
}

fn canonical_value_in<S: Sink, J: Json>(
    h: &mut S,
    cx: &J::Cx,
    v: &J,
    depth: usize,
) -> Result<(), TooDeep> {
    match v.view(cx) {
        View::Null => h.str("null"),
        View::Bool(true) => h.str("true"),
        View::Bool(false) => h.str("false"),
        View::Number(n) => canonical_number(h, n),
        View::Str(s, plain) => canonical_str_or_plain(h, s, plain),
        View::Array(items) => {
            let depth = deeper(depth)?;
            h.bytes(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    h.bytes(b",");
                }
                canonical_value_in(h, cx, item, depth)?;
            }
            h.bytes(b"]");
        }
        View::Object(map) => canonical_object::<S, J>(h, cx, map, depth, None)?,
    }
    Ok(())
}

/// Writes an object with sorted keys; at the top level (`deny` set) the denied fields are skipped.
fn canonical_object<S: Sink, J: Json>(
    h: &mut S,
    cx: &J::Cx,
    map: &J::Obj,
    depth: usize,
    deny: Option<&DefaultKeyPolicy>,
) -> Result<(), TooDeep> {
    let depth = deeper(depth)?;
    h.bytes(b"{");
    let mut first = true;
    J::for_each_sorted(map, |k, plain, v| {
        if deny.is_some_and(|p| p.is_denied(k)) {
            return Ok(());
        }
        if !first {
            h.bytes(b",");
        }
        first = false;
        canonical_str_or_plain(h, k, plain);
        h.bytes(b":");
        canonical_value_in(h, cx, v, depth)
    })?;
    h.bytes(b"}");
    Ok(())
}

/// Calls `f` for each entry in key order (byte order of the UTF-8 keys, which is code point order).
///
/// serde_json's default map is already sorted; only `preserve_order` maps need sorting, so this
/// checks first and skips the allocation in the common case rather than relying on either.
fn for_each_sorted<E>(
    map: &Map<String, Value>,
    mut f: impl FnMut(&str, &Value) -> Result<(), E>,
) -> Result<(), E> {
    if is_sorted(map) {
        for (k, v) in map {
            f(k, v)?;
        }
    } else {
        let mut entries: Vec<(&String, &Value)> = map.iter().collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (k, v) in entries {
            f(k, v)?;
        }
    }
    Ok(())
}

fn is_sorted(map: &Map<String, Value>) -> bool {
    let mut keys = map.keys();
    let Some(mut prev) = keys.next() else {
        return true;
    };
    for k in keys {
        if k < prev {
            return false;
        }
        prev = k;
    }
    true
}

fn deeper(depth: usize) -> Result<usize, TooDeep> {
    if depth >= MAX_DEPTH {
        Err(TooDeep)
    } else {
        Ok(depth + 1)
    }
}

/// Integers, and floats with an integral value that fits `i64`/`u64`, are written as integers
/// (`1`, `1.0` and `1e0` are one number); other floats in Rust's shortest round-trip exponent form.
fn canonical_number<S: Sink>(h: &mut S, n: &Number) {
    write_number(h, n, canonical_f64);
}

/// Integers as they are; floats through `float`, the one place the two schemes differ.
fn write_number<S: Sink>(h: &mut S, n: &Number, float: fn(&mut S, f64)) {
    if let Some(u) = n.as_u64() {
        let _ = write!(h, "{u}");
    } else if let Some(i) = n.as_i64() {
        let _ = write!(h, "{i}");
    } else if let Some(f) = n.as_f64() {
        float(h, f);
    } else {
        // Unreachable with serde_json's number types; hash the text rather than guess.
        let _ = write!(h, "{n}");
    }
}

fn canonical_f64<S: Sink>(h: &mut S, f: f64) {
    // 2^63 and 2^64 are exact in f64.
    const I64_MIN: f64 = -9_223_372_036_854_775_808.0;
    const U64_END: f64 = 18_446_744_073_709_551_616.0;
    if !f.is_finite() {
        // serde_json never holds NaN or infinities; JSON has no spelling for them.
        h.str("null");
    } else if f.fract() == 0.0 && (I64_MIN..U64_END).contains(&f) {
        if f < 0.0 {
            let _ = write!(h, "{}", f as i64);
        } else {
            // Also maps -0.0 to 0.
            let _ = write!(h, "{}", f as u64);
        }
    } else {
        let _ = write!(h, "{f:e}");
    }
}

/// [`canonical_str`], or just the quotes around a string known to need no escaping.
fn canonical_str_or_plain<S: Sink>(h: &mut S, s: &str, plain: bool) {
    if plain {
        h.bytes(b"\"");
        h.str(s);
        h.bytes(b"\"");
    } else {
        canonical_str(h, s);
    }
}

/// One escaping rule: `"` and `\` backslashed, control characters as `\u00xx`, the rest verbatim.
fn canonical_str<S: Sink>(h: &mut S, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    h.bytes(b"\"");
    let mut rest = s.as_bytes();
    while let Some(i) = next_special(rest) {
        h.bytes(&rest[..i]);
        let b = rest[i];
        if b == b'"' || b == b'\\' {
            h.bytes(&[b'\\', b]);
        } else {
            h.bytes(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        }
        rest = &rest[i + 1..];
    }
    h.bytes(rest);
    h.bytes(b"\"");
}

/// The index of the first byte that needs escaping (`"`, `\`, below 0x20).
///
/// Looks at eight bytes at a time (exact SWAR tests for a zero byte and a byte below 0x20), as
/// message text is long and rarely needs escaping.
fn next_special(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let is_special = |b: u8| b == b'"' || b == b'\\' || b < 0x20;
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let below_space = x.wrapping_sub(ONES * 0x20) & !x;
        let quote =
            (x ^ (ONES * u64::from(b'"'))).wrapping_sub(ONES) & !(x ^ (ONES * u64::from(b'"')));
        let backslash =
            (x ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES) & !(x ^ (ONES * u64::from(b'\\')));
        if (below_space | quote | backslash) & HIGH != 0
            && let Some(i) = chunk.iter().position(|&b| is_special(b))
        {
            return Some(offset + i);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| is_special(b))
        .map(|i| offset + i)
}

/// Python's `json.dumps(v, sort_keys=True)` with default separators and `ensure_ascii=True`.
fn python_value_in<S: Sink, J: Json>(
    h: &mut S,
    cx: &J::Cx,
    v: &J,
    depth: usize,
) -> Result<(), TooDeep> {
    match v.view(cx) {
        View::Null => h.str("null"),
        View::Bool(true) => h.str("true"),
        View::Bool(false) => h.str("false"),
        View::Number(n) => python_number(h, n),
        View::Str(s, _) => python_str(h, s),
        View::Array(items) => {
            let depth = deeper(depth)?;
            h.bytes(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    h.bytes(b", ");
                }
                python_value_in(h, cx, item, depth)?;
            }
            h.bytes(b"]");
        }
        View::Object(map) => {
            let depth = deeper(depth)?;
            h.bytes(b"{");
            let mut first = true;
            // Python sorts str keys by code point, which is UTF-8 byte order.
            J::for_each_sorted(map, |k, _, v| {
                if !first {
                    h.bytes(b", ");
                }
                first = false;
                python_str(h, k);
                h.bytes(b": ");
                python_value_in(h, cx, v, depth)
            })?;
            h.bytes(b"}");
        }
    }
    Ok(())
}

/// `json.loads` makes an `int` of a literal without `.`/`e`, a `float` otherwise; serde_json keeps
/// that distinction in `Number`.
fn python_number<S: Sink>(h: &mut S, n: &Number) {
    write_number(h, n, python_float_repr);
}

/// Python's `repr(float)`: shortest round-trip digits, fixed notation when the decimal exponent is
/// in `-4 < decpt <= 16` (with `.0` for integral values), else `d.ddde±XX`.
fn python_float_repr<S: Sink>(h: &mut S, f: f64) {
    if f.is_nan() {
        h.str("NaN");
        return;
    }
    if f.is_infinite() {
        h.str(if f > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    // Rust's `{:e}` gives the same shortest round-trip digits as Python's repr: `-1.2345e-7`.
    let mut buf = StackBuf::<40>::new();
    if write!(buf, "{f:e}").is_err() {
        // A finite f64 has at most 17 significant digits and a 3-digit exponent; never reached.
        let _ = write!(h, "{f:e}");
        return;
    }
    let text = buf.as_str();
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exp) = text.split_once('e').unwrap_or((text, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digits = StackBuf::<24>::new();
    for c in mantissa.chars().filter(char::is_ascii_digit) {
        let _ = digits.write_char(c);
    }
    let digits = digits.as_str();
    let n = digits.len() as i32;
    let decpt = exp + 1;

    if negative {
        h.str("-");
    }
    if decpt <= -4 || decpt > 16 {
        h.str(&digits[..1]);
        if n > 1 {
            h.str(".");
            h.str(&digits[1..]);
        }
        let e = decpt - 1;
        let _ = write!(
            h,
            "e{}{:02}",
            if e < 0 { '-' } else { '+' },
            e.unsigned_abs()
        );
    } else if decpt <= 0 {
        h.str("0.");
        for _ in 0..-decpt {
            h.str("0");
        }
        h.str(digits);
    } else if decpt >= n {
        h.str(digits);
        for _ in 0..decpt - n {
            h.str("0");
        }
        h.str(".0");
    } else {
        let split = decpt as usize;
        h.str(&digits[..split]);
        h.str(".");
        h.str(&digits[split..]);
    }
}

/// Python's `ensure_ascii` string encoding: short escapes for `"\\\b\f\n\r\t`, `\uxxxx` (lowercase)
/// for everything outside printable ASCII, surrogate pairs above the BMP.
fn python_str<S: Sink>(h: &mut S, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    fn unicode_escape<S: Sink>(h: &mut S, unit: u16) {
        let esc = [
            b'\\',
            b'u',
            HEX[usize::from(unit >> 12)],
            HEX[usize::from((unit >> 8) & 0xf)],
            HEX[usize::from((unit >> 4) & 0xf)],
            HEX[usize::from(unit & 0xf)],
        ];
        h.bytes(&esc);
    }
    h.bytes(b"\"");
    let mut run = 0;
    for (i, c) in s.char_indices() {
        let short: Option<&[u8]> = match c {
            '"' => Some(b"\\\""),
            '\\' => Some(b"\\\\"),
            '\n' => Some(b"\\n"),
            '\r' => Some(b"\\r"),
            '\t' => Some(b"\\t"),
            '\u{8}' => Some(b"\\b"),
            '\u{c}' => Some(b"\\f"),
            ' '..='~' => continue,
            _ => None,
        };
        h.str(&s[run..i]);
        run = i + c.len_utf8();
        match short {
            Some(esc) => h.bytes(esc),
            None => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    unicode_escape(h, *unit);
                }
            }
        }
    }
    h.str(&s[run..]);
    h.bytes(b"\"");
}

/// A fixed-size `fmt::Write` target, to format floats without allocating.
struct StackBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> StackBuf<N> {
    fn new() -> Self {
        StackBuf {
            buf: [0; N],
            len: 0,
        }
    }

    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in, so the prefix is valid UTF-8.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> fmt::Write for StackBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > N {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::process::{Command, Stdio};

    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    const UPSTREAM: &str = "https://api.holysheep.ai/v1";
    const PATH: &str = "/v1/chat/completions";

    fn key_of(policy: &DefaultKeyPolicy, body: &Value) -> Option<CacheKey> {
        policy.key(&KeyRequest {
            path: PATH,
            upstream: UPSTREAM,
            namespace: None,
            body,
        })
    }

    fn key(body: &Value) -> CacheKey {
        key_of(&DefaultKeyPolicy::new(), body).expect("cacheable")
    }

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).expect("test JSON")
    }

    fn chat() -> Value {
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello"}
            ],
            "temperature": 0.7,
            "max_tokens": 100
        })
    }

    fn with(mut body: Value, field: &str, value: Value) -> Value {
        body[field] = value;
        body
    }

    fn canonical_text(body: &Value) -> String {
        let mut sink = TextSink::default();
        let _ = canonical_value(&mut sink, body, 0);
        String::from_utf8(sink.0).expect("utf-8")
    }

    #[test]
    fn next_special_finds_every_escapable_byte() {
        for len in 0..40 {
            for at in 0..len {
                for special in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    assert_eq!(
                        next_special(&bytes),
                        Some(at),
                        "{special:#x} at {at} of {len}"
                    );
                }
                let mut bytes = vec![0xe0u8; len];
                bytes[at] = b' ';
                assert_eq!(next_special(&bytes), None);
            }
        }
        assert_eq!(next_special("สวัสดี 😀 ~\u{7f}".as_bytes()), None);
    }

    #[test]
    fn key_has_the_documented_shape() {
        let k = key(&chat());
        assert_eq!(k.scheme(), KeyScheme::Canonical);
        assert_eq!(k.model(), "gpt-4o-mini");
        assert_eq!(k.hash().len(), 32);
        assert!(
            k.hash()
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_eq!(
            k.as_str(),
            format!("holysheep:cache:gpt-4o-mini:{}", k.hash())
        );
        assert_eq!(k.to_string(), k.as_str());
    }

    #[test]
    fn canonical_form_is_exact() {
        let body = parse(
            r#"{"b": 1.0, "a": [1e0, -0.0, 0.5, 1e300, "x\n\u0001\"\\é😀"], "c": {"z": null, "y": true}}"#,
        );
        assert_eq!(
            canonical_text(&body),
            "{\"a\":[1,0,5e-1,1e300,\"x\\u000a\\u0001\\\"\\\\é😀\"],\"b\":1,\"c\":{\"y\":true,\"z\":null}}"
        );
    }

    #[test]
    fn object_key_order_does_not_matter_at_any_depth() {
        let a = parse(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
                "response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"b":1,"a":2}}}}"#,
        );
        let b = parse(
            r#"{"response_format":{"json_schema":{"schema":{"a":2,"b":1},"name":"x"},"type":"json_schema"},
                "messages":[{"content":[{"text":"hi","type":"text"}],"role":"user"}],"model":"m"}"#,
        );
        assert_eq!(key(&a), key(&b));
    }

    #[test]
    fn message_order_matters() {
        let a = chat();
        let mut b = chat();
        b["messages"].as_array_mut().expect("array").reverse();
        assert_ne!(key(&a), key(&b));
    }

    #[test]
    fn number_spelling_does_not_matter() {
        let one = key(&parse(r#"{"model":"m","temperature":1}"#));
        assert_eq!(one, key(&parse(r#"{"model":"m","temperature":1.0}"#)));
        assert_eq!(one, key(&parse(r#"{"model":"m","temperature":1e0}"#)));
        assert_eq!(one, key(&parse(r#"{"model":"m","temperature":10e-1}"#)));
        assert_ne!(one, key(&parse(r#"{"model":"m","temperature":2}"#)));
        assert_eq!(
            key(&parse(r#"{"model":"m","top_p":0.7}"#)),
            key(&parse(r#"{"model":"m","top_p":0.70}"#))
        );
        assert_eq!(
            key(&parse(r#"{"model":"m","seed":0}"#)),
            key(&parse(r#"{"model":"m","seed":-0.0}"#))
        );
        assert_eq!(
            key(&parse(r#"{"model":"m","max_tokens":1000000000000000000}"#)),
            key(&parse(r#"{"model":"m","max_tokens":1e18}"#))
        );
    }

    #[test]
    fn denied_fields_do_not_change_the_key() {
        let base = key(&chat());
        for (field, value) in [
            ("stream", json!(true)),
            ("stream_options", json!({"include_usage": true})),
            ("user", json!("user-42")),
            ("safety_identifier", json!("hash")),
            ("metadata", json!({"k": "v"})),
            ("store", json!(true)),
            ("prompt_cache_key", json!("pck")),
        ] {
            assert_eq!(
                key(&with(chat(), field, value)),
                base,
                "{field} must not change the key"
            );
        }
    }

    #[test]
    fn answer_changing_fields_change_the_key() {
        let base = key(&chat());
        for (field, value) in [
            ("temperature", json!(0.2)),
            ("max_tokens", json!(101)),
            (
                "tools",
                json!([{"type": "function", "function": {"name": "f"}}]),
            ),
            ("tool_choice", json!("required")),
            ("response_format", json!({"type": "json_object"})),
            ("seed", json!(7)),
            ("stop", json!(["\n"])),
            ("top_p", json!(0.9)),
            ("n", json!(2)),
            ("logprobs", json!(true)),
            ("reasoning_effort", json!("high")),
            ("service_tier", json!("flex")),
            ("a_field_unknown_today", json!(1)),
            ("model", json!("gpt-4o")),
        ] {
            assert_ne!(
                key(&with(chat(), field, value)),
                base,
                "{field} must change the key"
            );
        }
    }

    #[test]
    fn deny_and_allow_fields() {
        let policy = DefaultKeyPolicy::new()
            .deny_field("seed")
            .allow_field("user");
        assert!(policy.denied_fields().any(|f| f == "seed"));
        assert!(!policy.denied_fields().any(|f| f == "user"));
        let base = key_of(&policy, &chat());
        assert_eq!(key_of(&policy, &with(chat(), "seed", json!(1))), base);
        assert_ne!(key_of(&policy, &with(chat(), "user", json!("u"))), base);
        // Denying only applies at the top level.
        let nested =
            json!({"model": "m", "messages": [{"role": "user", "content": "x", "seed": 1}]});
        let nested2 = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        assert_ne!(key_of(&policy, &nested), key_of(&policy, &nested2));
        assert_eq!(
            DefaultKeyPolicy::new()
                .deny_field("x")
                .deny_field("x")
                .denied_fields()
                .filter(|f| *f == "x")
                .count(),
            1
        );
    }

    #[test]
    fn namespace_path_and_upstream_change_the_key() {
        let body = chat();
        let policy = DefaultKeyPolicy::new();
        let k = |path, upstream, namespace| {
            policy
                .key(&KeyRequest {
                    path,
                    upstream,
                    namespace,
                    body: &body,
                })
                .expect("cacheable")
        };
        let base = k(PATH, UPSTREAM, None);
        assert_ne!(k(PATH, UPSTREAM, Some("tenant-a")), base);
        assert_ne!(
            k(PATH, UPSTREAM, Some("tenant-a")),
            k(PATH, UPSTREAM, Some("tenant-b"))
        );
        assert_ne!(
            k(PATH, UPSTREAM, Some("")),
            base,
            "empty namespace is not no namespace"
        );
        assert_ne!(k("/v1/completions", UPSTREAM, None), base);
        assert_ne!(k(PATH, "https://api.openai.com/v1", None), base);
        assert_eq!(k(PATH, "https://api.holysheep.ai/v1/", None), base);
    }

    #[test]
    fn framing_cannot_collide() {
        let body = chat();
        let policy = DefaultKeyPolicy::new();
        let k = |path, upstream, namespace| {
            policy.key(&KeyRequest {
                path,
                upstream,
                namespace,
                body: &body,
            })
        };
        assert_ne!(k("b/c", "u", Some("a")), k("c", "u", Some("a/b")));
        assert_ne!(
            k("/chat", "https://x/v1", None),
            k("/v1/chat", "https://x", None)
        );
        assert_ne!(k("", "u", Some("p")), k("p", "u", Some("")));
        assert_ne!(k("p", "u", None), k("", "u", Some("p")));
    }

    #[test]
    fn model_segment_is_sanitised() {
        let k = key(&json!({"model": "ft:gpt-4o:org\n\u{1}é x"}));
        assert_eq!(k.model(), "ft_gpt-4o_org____x");
        assert_eq!(k.as_str().split(':').count(), 4);
        assert!(!k.as_str().chars().any(char::is_control));
        assert_ne!(
            k,
            key(&json!({"model": "ft_gpt-4o_org____x"})),
            "the digest covers the real model"
        );

        let long = "m".repeat(1000);
        assert_eq!(
            key(&json!({ "model": long })).model().len(),
            MAX_MODEL_SEGMENT
        );
        assert_eq!(key(&json!({"model": ""})).model(), "_");
        assert_eq!(
            key(&json!({"model": "accounts/fw/models/llama-v3p1@2+x.y_z"})).model(),
            "accounts/fw/models/llama-v3p1@2+x.y_z"
        );
    }

    #[test]
    fn uncacheable_bodies_have_no_key() {
        let policy = DefaultKeyPolicy::new();
        for body in [
            json!(null),
            json!([1]),
            json!("x"),
            json!({}),
            json!({"model": 1}),
            json!({"messages": []}),
        ] {
            assert!(key_of(&policy, &body).is_none(), "{body}");
        }
        let mut deep = json!(1);
        for _ in 0..(MAX_DEPTH + 10) {
            deep = json!([deep]);
        }
        assert!(key_of(&policy, &json!({"model": "m", "messages": deep.clone()})).is_none());
        assert!(
            key_of(
                &DefaultKeyPolicy::seed(),
                &json!({"model": "m", "messages": [deep]})
            )
            .is_none()
        );
    }

    #[test]
    fn seed_scheme_falls_back_where_it_would_be_wrong() {
        let seed = DefaultKeyPolicy::seed();
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let k = |path, namespace, body: &Value| {
            seed.key(&KeyRequest {
                path,
                upstream: UPSTREAM,
                namespace,
                body,
            })
            .expect("cacheable")
        };
        assert_eq!(k(PATH, None, &body).scheme(), KeyScheme::Seed);
        assert_eq!(k("chat/completions", None, &body).scheme(), KeyScheme::Seed);
        assert_eq!(
            k(PATH, None, &with(body.clone(), "stream", json!(true))),
            k(PATH, None, &body)
        );
        assert_eq!(
            k(PATH, Some("tenant"), &body).scheme(),
            KeyScheme::Canonical
        );
        assert_eq!(
            k("/v1/messages", None, &body).scheme(),
            KeyScheme::Canonical
        );
        assert_eq!(
            k(PATH, None, &with(body.clone(), "tools", json!([]))).scheme(),
            KeyScheme::Canonical
        );
        assert_eq!(
            k(PATH, None, &json!({"model": "m", "prompt": "x"})).scheme(),
            KeyScheme::Canonical
        );
        assert_eq!(
            k(PATH, None, &json!({"model": "m:x", "messages": []})).model(),
            "m:x"
        );
        assert_ne!(
            k(PATH, None, &body),
            DefaultKeyPolicy::new()
                .key(&KeyRequest {
                    path: PATH,
                    upstream: UPSTREAM,
                    namespace: None,
                    body: &body
                })
                .expect("cacheable")
        );
    }

    /// The seed's `_generate_cache_key`, verbatim, driven over JSON lines on stdin.
    const SEED_PY: &str = r#"
import hashlib, json, sys

def _generate_cache_key(model, messages, temperature, max_tokens):
    content = json.dumps({
        "model": model,
        "messages": messages,
        "temperature": temperature,
        "max_tokens": max_tokens
    }, sort_keys=True)
    hash_obj = hashlib.sha256(content.encode())
    return f"holysheep:cache:{model}:{hash_obj.hexdigest()[:32]}", content

for line in sys.stdin:
    req = json.loads(line)
    key, content = _generate_cache_key(
        req["model"], req["messages"], req.get("temperature", 0.7), req.get("max_tokens", 1000))
    print(json.dumps([key, content]))
"#;

    fn seed_requests() -> Vec<Value> {
        let mut requests = vec![
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}),
            json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}], "temperature": 0.7, "max_tokens": 1000}),
            json!({"model": "deepseek-chat", "messages": [{"role": "user", "content": "สวัสดีครับ ช่วยสรุปบทความนี้ให้หน่อย 🙏😀"}], "temperature": 1.0}),
            json!({"model": "claude-sonnet-4.5", "messages": [
                {"role": "system", "content": "quote \" backslash \\ tab \t nl \n cr \r bs \u{8} ff \u{c} nul \u{0} us \u{1f} del \u{7f} nbsp \u{a0} ls \u{2028} bmp-end \u{ffff} private \u{e000} astral 𝄞 \u{10ffff}"},
                {"role": "user", "content": [
                    {"type": "text", "text": "describe"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}
                ]}
            ], "temperature": 0, "max_tokens": 0}),
            json!({"model": "m", "messages": [{"role": "user", "content": "x", "z": 1, "a": {"é": 1, "z": 2, "a": 3, "😀": 4, "ｚ": 5, "": 6}}], "temperature": null}),
            json!({"model": "m", "messages": [], "temperature": 2, "max_tokens": 9223372036854775807_i64}),
            json!({"model": "m", "messages": [[], {}, [[]], true, false, null, -1, 18446744073709551615_u64, -9223372036854775808_i64]}),
            json!({"model": "gpt-4o:ft:org", "messages": [{"role": "user", "content": "model with colons"}], "stream": true}),
        ];
        let floats = [
            0.7,
            1.0,
            1e-05,
            1e16,
            1e15,
            1e+16,
            0.0,
            -0.0,
            1.5,
            0.1 + 0.2,
            123_456_789.123,
            9_999_999_999_999_998.0,
            0.0001,
            0.000_123,
            1e22,
            1e-7,
            2.5e-7,
            100.0,
            -273.15,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            1e308,
            1234567890123456.7,
            12345678901234567.0,
            0.001,
            std::f64::consts::PI,
        ];
        requests.push(json!({"model": "m", "messages": [{"role": "user", "content": "floats", "v": floats.to_vec()}], "temperature": 0.2, "max_tokens": 1e3}));
        // Pseudo-random bit patterns cover exponents and digit counts the list above misses.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut random = Vec::new();
        while random.len() < 300 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let f = f64::from_bits(state);
            if f.is_finite() {
                random.push(f);
            }
        }
        for chunk in random.chunks(50) {
            requests.push(json!({"model": "m", "messages": [{"role": "user", "content": chunk.to_vec()}], "temperature": chunk[0]}));
        }
        requests
    }

    #[test]
    fn seed_scheme_is_byte_identical_to_python() {
        let requests = seed_requests();
        let mut child = match Command::new("python3")
            .arg("-c")
            .arg(SEED_PY)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => panic!(
                "this test needs `python3` on PATH to reproduce the seed's _generate_cache_key: {e}"
            ),
        };
        let mut input = String::new();
        for req in &requests {
            input.push_str(&serde_json::to_string(req).expect("serialise"));
            input.push('\n');
        }
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write to python3");
        let out = child.wait_with_output().expect("python3 output");
        assert!(
            out.status.success(),
            "python3 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = std::str::from_utf8(&out.stdout)
            .expect("utf-8")
            .lines()
            .collect();
        assert_eq!(lines.len(), requests.len());

        let policy = DefaultKeyPolicy::seed();
        for (req, line) in requests.iter().zip(lines) {
            let (py_key, py_content): (String, String) =
                serde_json::from_str(line).expect("python line");
            let body = req.as_object().expect("object");
            let model = body["model"].as_str().expect("model");
            let mut text = TextSink::default();
            assert!(DefaultKeyPolicy::write_seed(&mut text, body, model).is_ok());
            assert_eq!(
                String::from_utf8(text.0).expect("utf-8"),
                py_content,
                "canonical text of {req}"
            );
            let k = key_of(&policy, req).expect("cacheable");
            assert_eq!(k.scheme(), KeyScheme::Seed);
            assert_eq!(k.as_str(), py_key, "key of {req}");
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|f| json!(f)),
            ".*".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::vec((".*", inner), 0..8)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    /// Writes `v` as JSON text with every object's keys in the order `order` picks.
    fn write_permuted(v: &Value, seed: &mut u64, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                for i in (1..entries.len()).rev() {
                    *seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    entries.swap(i, (*seed >> 33) as usize % (i + 1));
                }
                out.push('{');
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).expect("key"));
                    out.push(':');
                    write_permuted(v, seed, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_permuted(item, seed, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }

    /// The keys of `text` through the `Value` path and through [`ParsedBody`] must be equal, for
    /// both schemes, with and without a namespace; and the two must accept the same texts.
    fn assert_fast_path_matches(text: &[u8]) -> Result<(), TestCaseError> {
        let value = serde_json::from_slice::<Value>(text);
        let parsed = ParsedBody::parse(text);
        prop_assert_eq!(
            value.is_ok(),
            parsed.is_ok(),
            "acceptance of {:?}",
            String::from_utf8_lossy(text)
        );
        let (Ok(value), Ok(parsed)) = (value, parsed) else {
            return Ok(());
        };
        prop_assert_eq!(&parsed.to_value(), &value);
        for policy in [DefaultKeyPolicy::new(), DefaultKeyPolicy::seed()] {
            for namespace in [None, Some("tenant-a")] {
                let req = KeyRequest {
                    path: PATH,
                    upstream: UPSTREAM,
                    namespace,
                    body: &value,
                };
                let fast = ParsedKeyRequest {
                    path: PATH,
                    upstream: UPSTREAM,
                    namespace,
                    body: &parsed,
                };
                prop_assert_eq!(policy.key(&req), policy.key_parsed(&fast));
            }
        }
        Ok(())
    }

    /// JSON text of an object whose keys may repeat, be escaped or be the ones the seed reads.
    fn arb_object_text() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just(r#""model""#.to_owned()),
            Just(r#""\u006dodel""#.to_owned()),
            Just(r#""messages""#.to_owned()),
            Just(r#""temperature""#.to_owned()),
            Just(r#""max_tokens""#.to_owned()),
            Just(r#""stream""#.to_owned()),
            Just(r#""user""#.to_owned()),
            Just(r#""a\"b""#.to_owned()),
            ".*".prop_map(|k| serde_json::to_string(&k).expect("key")),
        ];
        let value = prop_oneof![
            ".*".prop_map(Value::String),
            arb_json().prop_map(|v| Value::Array(vec![v])),
            arb_json(),
        ];
        prop::collection::vec((key, value, any::<u64>()), 0..8).prop_map(|entries| {
            let mut text = String::from("{");
            for (i, (k, v, seed)) in entries.into_iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                text.push_str(&k);
                text.push(':');
                let mut seed = seed;
                write_permuted(&v, &mut seed, &mut text);
            }
            text.push('}');
            text
        })
    }

    #[test]
    fn key_parsed_defaults_to_key_for_custom_policies() {
        /// Keys on the model alone, through `key` only.
        struct ModelOnly;
        impl KeyPolicy for ModelOnly {
            fn key(&self, req: &KeyRequest<'_>) -> Option<CacheKey> {
                let model = req.body.get("model")?.as_str()?;
                Some(CacheKey::new(model, true, &[7; 32], KeyScheme::Canonical))
            }
        }
        let text = br#"{"model": "m\u00e9", "messages": []}"#;
        let parsed = ParsedBody::parse(text).expect("valid JSON");
        let req = ParsedKeyRequest {
            path: PATH,
            upstream: UPSTREAM,
            namespace: None,
            body: &parsed,
        };
        let key = ModelOnly.key_parsed(&req).expect("cacheable");
        assert_eq!(
            key.as_str(),
            format!("holysheep:cache:m_:{}", "07".repeat(16))
        );
        let array = ParsedBody::parse(b"[]").expect("valid JSON");
        assert!(
            ModelOnly
                .key_parsed(&ParsedKeyRequest {
                    body: &array,
                    ..req
                })
                .is_none()
        );
    }

    proptest! {
        #[test]
        fn hash_sink_hashes_the_concatenation(
            pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..1500), 0..12),
        ) {
            let mut sink = HashSink::new();
            let mut all = Vec::new();
            for piece in &pieces {
                sink.bytes(piece);
                all.extend_from_slice(piece);
            }
            let expected: [u8; 32] = Sha256::digest(&all).into();
            prop_assert_eq!(sink.finish(), expected);
        }

        #[test]
        fn fast_path_gives_the_value_path_key_for_any_json(text in arb_object_text()) {
            assert_fast_path_matches(text.as_bytes())?;
        }

        #[test]
        fn fast_path_gives_the_value_path_key_for_chat_bodies(
            body in arb_json(),
            model in ".*",
            seed in any::<u64>(),
        ) {
            let chat = json!({"model": model, "messages": [body.clone()], "temperature": body});
            let mut text = String::new();
            let mut s = seed;
            write_permuted(&chat, &mut s, &mut text);
            assert_fast_path_matches(text.as_bytes())?;
        }

        #[test]
        fn fast_path_accepts_what_the_value_path_accepts(
            text in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..64),
                "[\\[\\]{}:,\"a-z0-9.eE+\\- \\\\]{0,40}".prop_map(String::into_bytes),
            ],
        ) {
            assert_fast_path_matches(&text)?;
        }

        #[test]
        fn canonical_strings_match_a_naive_escaper(s in "(.|[\"\\\\\\x00-\\x1f]){0,40}") {
            let mut naive = String::from("\"");
            for c in s.chars() {
                match c {
                    '"' => naive.push_str("\\\""),
                    '\\' => naive.push_str("\\\\"),
                    c if u32::from(c) < 0x20 => naive.push_str(&format!("\\u{:04x}", u32::from(c))),
                    c => naive.push(c),
                }
            }
            naive.push('"');
            let mut sink = TextSink::default();
            canonical_str(&mut sink, &s);
            prop_assert_eq!(String::from_utf8(sink.0).expect("utf-8"), naive);
        }

        #[test]
        fn arbitrary_json_never_panics(body in arb_json(), model in ".*", ns in proptest::option::of(".*")) {
            for policy in [DefaultKeyPolicy::new(), DefaultKeyPolicy::seed()] {
                let req = KeyRequest { path: PATH, upstream: UPSTREAM, namespace: ns.as_deref(), body: &body };
                let _ = policy.key(&req);
                let wrapped = json!({"model": model.clone(), "messages": [body.clone()], "x": body.clone()});
                let req = KeyRequest { body: &wrapped, ..req };
                let k = policy.key(&req);
                prop_assert!(k.is_some());
                let wrapped = json!({"model": model.clone(), "messages": [body.clone()]});
                let k = policy.key(&KeyRequest { body: &wrapped, ..req });
                prop_assert!(k.is_some());
            }
        }

        #[test]
        fn permuted_object_keys_give_equal_keys(body in arb_json(), seed in any::<u64>()) {
            let original = json!({"model": "m", "messages": [body]});
            let mut text = String::new();
            let mut s = seed;
            write_permuted(&original, &mut s, &mut text);
            // Both sides are parsed from the same number literals: serde_json's default float
            // parsing is not exact, so printing and re-parsing an f64 may move it by one ulp.
            let body: Value = serde_json::from_str(&original.to_string()).expect("valid JSON");
            let permuted: Value = serde_json::from_str(&text).expect("valid JSON");
            for policy in [DefaultKeyPolicy::new(), DefaultKeyPolicy::seed()] {
                prop_assert_eq!(key_of(&policy, &body), key_of(&policy, &permuted));
            }
        }
    }
}
