//! The checks behind the cargo-fuzz targets in `fuzz/`: what each target asserts of every input.
//!
//! Each module has one `check(&[u8])` that panics when the code under test breaks a property:
//! a panic of its own, a round trip that does not come back, or a disagreement with an oracle
//! (a `serde_json::Value` path, an RFC 8785 canonicaliser, a reference parser). The cargo-fuzz
//! targets (`fuzz/fuzz_targets/*.rs`, nightly) call them, and so does this crate's stable test
//! `replay`, which runs every committed corpus file (`fuzz/corpus/<target>/`) under
//! `cargo test --workspace`.
//!
//! | target | code under test | checks |
//! |---|---|---|
//! | [`sse`] | `holysheep_core::sse::SseParser`, `encode_event` | same events however the bytes are split; agrees with a line-by-line reference parser; every event's data survives `encode_event` |
//! | [`request_key`] | `holysheep_cache::ParsedBody`, `DefaultKeyPolicy` | accepts what `serde_json::Value` accepts and holds the same; keys from the parsed tree equal keys from the `Value`; canonical keys do not change when the body is rewritten in RFC 8785 form |
//! | [`convert`] | the cache's JSON↔SSE converters and answer checks | a good answer turns into a complete stream and back into a good answer, and the second round trip changes nothing; what the checks accept is what a `Value` reading accepts |
//! | [`entry`] | the cache's entry envelope | decoding never panics; what decodes re-encodes to the same entry; an entry built from any parts survives encode/decode |
//! | [`cache_control`] | `holysheep_cache::RequestControl` | header lines read one by one equal the same lines joined with `", "`; order does not matter; TTL never above the layer's |
//! | [`config`] | `holysheep_gateway::Settings::from_toml`, `Config::validate` | never panics; errors name the file; loaded settings survive `to_toml` |
//!
//! # Example
//!
//! ```
//! // Any bytes: a check returns when every property holds and panics otherwise.
//! holysheep_fuzz::sse::check(b"data: {\"a\":1}\r\n\r\ndata: [DONE]\n\n");
//! for (name, check) in holysheep_fuzz::TARGETS {
//!     check(name.as_bytes());
//! }
//! ```

pub mod cache_control;
#[cfg(feature = "config")]
pub mod config;
pub mod convert;
pub mod entry;
pub mod request_key;
pub mod sse;

/// A target's check: returns when every property holds for the input, panics otherwise.
pub type Check = fn(&[u8]);

/// Every target by its cargo-fuzz name (`fuzz/fuzz_targets/<name>.rs`, `fuzz/corpus/<name>/`).
pub const TARGETS: &[(&str, Check)] = &[
    ("sse", sse::check),
    ("request_key", request_key::check),
    ("convert", convert::check),
    ("entry", entry::check),
    ("cache_control", cache_control::check),
    #[cfg(feature = "config")]
    ("config", config::check),
];

/// Splits `data` into pieces at cut points read from its first byte and the bytes after it: the
/// first byte says how many cuts (0 to 7), each next byte where one falls (a fraction of the
/// rest). Returns the rest and its pieces (at least one, any of them possibly empty), in order.
pub(crate) fn split(data: &[u8]) -> (&[u8], Vec<&[u8]>) {
    let Some((&first, rest)) = data.split_first() else {
        return (data, vec![data]);
    };
    let cuts = usize::from(first % 8).min(rest.len());
    let (positions, body) = rest.split_at(cuts);
    let mut at: Vec<usize> = positions
        .iter()
        .map(|&b| usize::from(b) * body.len() / 256)
        .collect();
    at.sort_unstable();
    let mut pieces = Vec::with_capacity(at.len() + 1);
    let mut start = 0;
    for cut in at {
        pieces.push(&body[start..cut]);
        start = cut;
    }
    pieces.push(&body[start..]);
    (body, pieces)
}
