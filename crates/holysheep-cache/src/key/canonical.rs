//! The canonical writer: every field that can change the answer, in one spelling.
//!
//! Canonical JSON: sorted keys at every depth, no whitespace, one number form, one escaping rule;
//! after a scheme tag and the framed upstream, path and namespace.

use super::parsed::Json;
use super::write::{Dialect, Sink, TooDeep, write_object};
use super::{DefaultKeyPolicy, KeyRequest};

/// Domain-separation tag of the canonical scheme; bump it when the canonical form changes.
const CANONICAL_TAG: &[u8] = b"holysheep-cache/canonical/v1\0";

impl DefaultKeyPolicy {
    /// Writes the canonical hash input: scheme tag, framed upstream, path and namespace, then the
    /// canonical body without the denied fields.
    pub(super) fn write_canonical<S: Sink, J: Json>(
        &self,
        h: &mut S,
        cx: &J::Cx,
        req: &KeyRequest<'_>,
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
        write_object::<Canonical, S, J>(h, cx, body, 0, |k| self.is_denied(k))
    }
}

/// Canonical JSON: no whitespace, one number form, one escaping rule.
pub(super) struct Canonical;

impl Dialect for Canonical {
    const COMMA: &'static [u8] = b",";
    const COLON: &'static [u8] = b":";

    /// Floats with an integral value that fits `i64`/`u64` are written as integers (`1`, `1.0`
    /// and `1e0` are one number); other floats in Rust's shortest round-trip exponent form.
    fn float<S: Sink>(h: &mut S, f: f64) {
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
    fn string<S: Sink>(h: &mut S, s: &str, plain: bool) {
        if plain {
            h.bytes(b"\"");
            h.str(s);
            h.bytes(b"\"");
        } else {
            canonical_str(h, s);
        }
    }
}

/// One escaping rule: `"` and `\` backslashed, control characters as `\u00xx`, the rest verbatim.
pub(super) fn canonical_str<S: Sink>(h: &mut S, s: &str) {
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
pub(super) fn next_special(bytes: &[u8]) -> Option<usize> {
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
