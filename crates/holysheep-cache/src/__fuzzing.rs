//! The crate's private parsers, for the fuzz targets (`crates/holysheep-fuzz`, `fuzz/`). **Not
//! public API**: compiled only with the `fuzzing` cargo feature, no stability promise.
//!
//! Each item here is a thin wrapper that hands a private type or function on as it is, so the fuzz
//! checks exercise exactly the code the cache runs.

use bytes::Bytes;
use http::HeaderValue;

use crate::convert;

/// An OpenAI endpoint the cache understands (the crate's private `Endpoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint(convert::Endpoint);

impl Endpoint {
    /// `/chat/completions`.
    pub const CHAT: Endpoint = Endpoint(convert::Endpoint::Chat);
    /// `/completions`.
    pub const COMPLETIONS: Endpoint = Endpoint(convert::Endpoint::Completions);
    /// `/embeddings`.
    pub const EMBEDDINGS: Endpoint = Endpoint(convert::Endpoint::Embeddings);
    /// Every endpoint.
    pub const ALL: [Endpoint; 3] = [Self::CHAT, Self::COMPLETIONS, Self::EMBEDDINGS];

    /// The endpoint a request path names.
    pub fn from_path(path: &str) -> Option<Self> {
        convert::Endpoint::from_path(path).map(Endpoint)
    }

    /// Whether a whole JSON answer is a good answer worth storing.
    pub fn valid_json(self, body: &[u8]) -> bool {
        convert::valid_json(self.0, body)
    }

    /// A JSON answer as the stream a `stream: true` request gets on a hit.
    pub fn json_to_sse(self, body: &[u8], include_usage: bool) -> Option<Vec<Bytes>> {
        convert::json_to_sse(self.0, body, include_usage)
    }

    /// A recorded stream assembled into the JSON a plain request gets on a hit.
    pub fn sse_to_json(self, chunks: &[Bytes]) -> Option<Bytes> {
        convert::sse_to_json(self.0, chunks)
    }
}

/// The check a recorded stream passes before it is stored: `(complete, has_usage)`.
pub fn check_stream(chunks: &[Bytes]) -> (bool, bool) {
    let mut check = convert::SseCheck::default();
    for chunk in chunks {
        check.push(chunk);
    }
    (check.complete(), check.has_usage())
}

/// A stored stream without its usage-only chunk.
pub fn strip_usage(chunks: &[Bytes]) -> Vec<Bytes> {
    convert::strip_usage(chunks)
}

/// A cache entry (the crate's private `Entry`) and its stored form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry(crate::entry::Entry);

impl Entry {
    /// A whole JSON answer.
    pub fn json(body: Bytes, content_type: HeaderValue) -> Self {
        Entry(crate::entry::Entry::json(body, content_type))
    }

    /// A streamed answer.
    pub fn stream(chunks: Vec<Bytes>, has_usage: bool, content_type: HeaderValue) -> Self {
        Entry(crate::entry::Entry::stream(chunks, has_usage, content_type))
    }

    /// Sets when the entry was stored, in unix seconds.
    pub fn stored_at(self, unix_secs: u64) -> Self {
        Entry(self.0.stored_at(unix_secs))
    }

    /// Reads a stored value.
    pub fn decode(value: Bytes) -> Option<Self> {
        crate::entry::Entry::decode(value).map(Entry)
    }

    /// The stored form.
    pub fn encode(&self) -> Bytes {
        self.0.encode()
    }

    /// The JSON body, or `None` for a stream.
    pub fn json_body(&self) -> Option<&Bytes> {
        match self.0.body() {
            crate::entry::EntryBody::Json(body) => Some(body),
            crate::entry::EntryBody::Stream { .. } => None,
        }
    }

    /// The stream's chunks and usage flag, or `None` for a JSON answer.
    pub fn stream_body(&self) -> Option<(&[Bytes], bool)> {
        match self.0.body() {
            crate::entry::EntryBody::Json(_) => None,
            crate::entry::EntryBody::Stream { chunks, has_usage } => Some((chunks, *has_usage)),
        }
    }

    /// Whether the entry passes the check a value read from a shared store must pass.
    pub fn is_good(&self, endpoint: Endpoint) -> bool {
        convert::good_entry(endpoint.0, &self.0)
    }
}
